"""Does pretraining help? Fine-tune the demo task from the pretrained model and from random init
(same architecture) over several seeds, next to the majority class, and print mean and spread.

Needs the demo chain's outputs (scripts/chain.sh or `make demo`): a demo-task directory and a
pretrain run. Every fine-tune runs through the real CLI (`mlmctl finetune`) with `--set seed=S
init=I test_file=...`; the test figures come from each run's manifest.

    python benchmarks/bench_finetune_seeds.py                       # 3 seeds, full demo config
    python benchmarks/bench_finetune_seeds.py --quick               # 3 seeds, 2 epochs each
    python benchmarks/bench_finetune_seeds.py --seeds 5 --task data/demo/task --model runs/demo/pretrain
    python benchmarks/bench_finetune_seeds.py --configs configs/zh  # the Chinese demo (`make demo-zh`)

"Pretraining beats random init by more than seed-to-seed spread" is reported as: the gap of the
means is larger than the sum of the two standard deviations, and the worst pretrained seed is
better than the best random seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="configs/demo",
                    help="config set whose chain ran (scripts/chain.sh): configs/NAME means data/NAME/task, "
                         "runs/NAME/pretrain and configs/NAME/finetune.yaml unless given below")
    ap.add_argument("--task", help="demo-task output directory (default data/NAME/task)")
    ap.add_argument("--model", help="pretrain run (or model) directory (default runs/NAME/pretrain)")
    ap.add_argument("--config", help="finetune config (default configs/NAME/finetune.yaml)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per init (>= 3 for a spread)")
    ap.add_argument("--quick", action="store_true", help="2 epochs per run instead of the config's")
    ap.add_argument("--size", type=int, default=0, help="use only the first N training examples (0 = all)")
    ap.add_argument("--out", help="where the runs go (default .bench/finetune-seeds-NAME)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0 = default)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra finetune config override for every run (repeatable), e.g. --set lr=0.0003")
    args = ap.parse_args()
    name = Path(args.configs).name
    task = Path(args.task or f"data/{name}/task")
    model = Path(args.model or f"runs/{name}/pretrain")
    out = Path(args.out or f".bench/finetune-seeds-{name}")
    config = args.config or str(ROOT / args.configs / "finetune.yaml")
    for path, how in ((task / "manifest.json", "mlmctl demo-task"), (model, "mlmctl pretrain")):
        if not path.exists():
            print(f"bench_finetune_seeds: {path} not found; run the demo chain first "
                  f"(scripts/chain.sh or `{how}`), or pass --task/--model", file=sys.stderr)
            return 1

    from mlmctl.cli import main as mlmctl
    from mlmctl.labelled import read_labelled

    train_file = task / "train.tsv"
    if args.size:
        lines = train_file.read_text(encoding="utf-8").splitlines()
        out.mkdir(parents=True, exist_ok=True)
        train_file = out / f"train-{args.size}.tsv"
        train_file.write_text("\n".join(lines[:args.size + 1]) + "\n", encoding="utf-8")

    # Majority class: the most frequent training label, scored on the test file.
    train_labels = read_labelled(train_file).labels
    test_labels = read_labelled(task / "test.tsv").labels
    top = max(sorted(set(train_labels)), key=train_labels.count)
    majority = sum(y == top for y in test_labels) / len(test_labels)

    results: dict[str, list[dict]] = {"pretrained": [], "random": []}
    started = time.monotonic()
    for seed in range(args.seeds):
        for init in ("pretrained", "random"):
            run_dir = out / f"{init}-seed{seed}"
            argv = ["finetune", "-c", config, "--input", str(model), "--output", str(run_dir), "--force",
                    "--set", f"seed={seed}", "--set", f"init={init}", "--set", f"train_file={train_file}",
                    "--set", f"dev_file={task / 'dev.tsv'}", "--set", f"test_file={task / 'test.tsv'}"]
            if args.quick:
                argv += ["--set", "epochs=2", "--set", "max_steps=0"]
            if args.threads:
                argv += ["--set", f"threads={args.threads}"]
            for item in args.sets:
                argv += ["--set", item]
            t0 = time.monotonic()
            code = mlmctl(argv)
            if code:
                print(f"bench_finetune_seeds: finetune failed (exit {code}) for init={init} seed={seed}",
                      file=sys.stderr)
                return code
            extra = json.loads((run_dir / "manifest.json").read_text())["extra"]
            results[init].append({"seed": seed, "accuracy": extra["test"]["accuracy"],
                                  "macro_f1": extra["test"]["macro_f1"], "best_step": extra["best_step"],
                                  "seconds": round(time.monotonic() - t0, 1)})

    def stats(init, key):
        xs = [r[key] for r in results[init]]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return statistics.mean(xs), sd, min(xs), max(xs)

    print(f"\nfine-tuning the demo task ({task}), {args.seeds} seeds, test set of {len(test_labels)}")
    print(f"{'':<12}{'accuracy mean ± sd [min, max]':<36}{'macro-F1 mean ± sd [min, max]':<36}")
    for init in ("pretrained", "random"):
        cells = []
        for key in ("accuracy", "macro_f1"):
            m, sd, lo, hi = stats(init, key)
            cells.append(f"{m:.3f} ± {sd:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"{init:<12}{cells[0]:<36}{cells[1]:<36}")
    print(f"{'majority':<12}{majority:.3f} (always '{top}')")
    pm, psd, plo, _ = stats("pretrained", "accuracy")
    rm, rsd, _, rhi = stats("random", "accuracy")
    beats = (pm - rm) > (psd + rsd) and plo > rhi
    print(f"\npretrained - random accuracy: {pm - rm:+.3f} (spread: sd {psd:.3f} + {rsd:.3f}); "
          f"worst pretrained {plo:.3f} vs best random {rhi:.3f}: "
          f"{'pretraining helps beyond seed noise' if beats else 'NOT separated from seed noise'}")
    print(f"total {time.monotonic() - started:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"majority": majority, "runs": results, "separated": beats},
                                                 indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
