"""Quality at equal compute: the classic recipe (configs/demo: BERT, full-sentence packing, 15%
masking, linear decay) against the modern one (configs/modern: ModernBERT, documents packing,
30% masking, WSD) on the demo corpus, with the same vocabulary and the same wall-clock budget.

    python benchmarks/bench_quality.py                     # 120 s of training per arch, 3 seeds
    python benchmarks/bench_quality.py --quick             # 20 s per arch, 2 fine-tuning epochs
    python benchmarks/bench_quality.py --budget-s 600 --threads 2

Steps, all through the real CLI (`mlmctl.cli.main`, in this process):
1. the demo data (clean -> tokenize -> build-vocab -> demo-task with configs/demo) under --data,
   built only when its manifests are missing (an existing one is reused as it stands);
2. seconds per step of each recipe, from a short calibration run each (the two alternate, so a
   change of load hits both), then steps = budget / (seconds per step): equal wall clock, not
   equal steps (a wall-clock stop inside the trainer would make runs irreproducible; this keeps
   every run an ordinary, exactly resumable `train.max_steps` run);
3. each recipe pretrained for its steps, the learning-rate schedule (warm-up, decay) laid over
   them by its own config;
4. `mlmctl eval` mode mlm on the validation split at the SAME 15% mask rate for both (the modern
   recipe trains at 30%): perplexity with every chosen token [MASK] and top-1 accuracy;
5. the demo task fine-tuned from each pretrained model with the same finetune config
   (configs/demo/finetune.yaml, --ft-epochs epochs) over --seeds seeds (fine-tuning seeds; one
   pretraining run per recipe), test macro-F1 of the best dev checkpoint, mean ± sd.

The train seconds each run really took are printed next to the plan: the cores are shared, so
the budget holds only as well as the load stays level between calibration and run.
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

RECIPES = {"classic": "configs/demo", "modern": "configs/modern"}


def cli(*argv) -> None:
    from mlmctl.cli import main as mlmctl

    code = mlmctl([str(a) for a in argv])
    if code:
        raise SystemExit(f"bench_quality: `mlmctl {' '.join(map(str, argv))}` failed (exit {code})")


def extra(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "manifest.json").read_text())["extra"]


def build_data(data: Path, workers: int) -> None:
    """The demo chain's data stages, each only if its output is not finished."""
    c = ROOT / "configs/demo"
    stages = [("clean", [], "clean"), ("tokenize", ["--input", data / "clean"], "tokens"),
              ("build-vocab", ["--input", data / "tokens"], "vocab"), ("demo-task", ["--input", data / "clean"], "task")]
    for stage, inp, out in stages:
        if (data / out / "manifest.json").is_file():
            continue
        par = ["--workers", workers] if stage != "demo-task" else []
        cli(stage, "-c", c / f"{stage}.yaml", *inp, "--output", data / out, *par)


def pretrain(recipe: str, data: Path, out: Path, steps: int, threads: int, *sets: str) -> dict:
    argv = ["pretrain", "-c", ROOT / RECIPES[recipe] / "pretrain.yaml", "--input", data / "vocab", "--output", out,
            "--force", "--set", f"train.max_steps={steps}", "--set", "tensorboard=false",
            "--set", f"train.warmup_steps={min(50, max(1, steps // 10))}"]
    if threads:
        argv += ["--set", f"train.threads={threads}"]
    for s in sets:
        argv += ["--set", s]
    cli(*argv)
    return extra(out)


def step_seconds(run: Path) -> float:
    """Median seconds of the steps after the first, from metrics.jsonl's cumulative `train_s`."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train_s = [r["train_s"] for r in rows if "train_s" in r]
    return statistics.median(b - a for a, b in zip(train_s, train_s[1:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/demo", help="demo data (clean, tokens, vocab, task); built if absent")
    ap.add_argument("--out", default=".bench/quality", help="where the runs go")
    ap.add_argument("--budget-s", type=float, default=120.0, help="training seconds per recipe")
    ap.add_argument("--calibrate-steps", type=int, default=12, help="steps of each calibration run")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per recipe")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ft-epochs", type=int, default=4,
                    help="fine-tuning epochs per run (the demo config's 20, patience 5, is ~6x longer)")
    ap.add_argument("--quick", action="store_true", help="20 s per recipe, 6 calibration steps, 2 fine-tuning epochs")
    args = ap.parse_args()
    if args.quick:
        args.budget_s, args.calibrate_steps, args.ft_epochs = 20.0, 6, 2
    data, out = Path(args.data), Path(args.out)
    started = time.monotonic()
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start", flush=True)
    build_data(data, args.workers)

    # 2. seconds per step, each recipe measured twice in alternation: the median of the per-step
    # times after the first step (its set-up is not what a longer run pays per step), so a load
    # spike on a shared machine moves the figure little.
    per_step: dict[str, list[float]] = {r: [] for r in RECIPES}
    for rnd in range(2):
        for recipe in (RECIPES if rnd == 0 else reversed(list(RECIPES))):
            run = out / f"calibrate-{recipe}"
            pretrain(recipe, data, run, args.calibrate_steps, args.threads, "validation.every=0",
                     "validation.max_sequences=1", "log_every=1")
            per_step[recipe].append(step_seconds(run))
    sec = {r: statistics.mean(v) for r, v in per_step.items()}
    steps = {r: max(10, int(args.budget_s / sec[r])) for r in RECIPES}
    for r in RECIPES:
        print(f"{r}: {sec[r]:.3f} s/step -> {steps[r]} steps for {args.budget_s:.0f} s", flush=True)

    results = {}
    for recipe in RECIPES:
        run = out / f"pretrain-{recipe}"
        ex = pretrain(recipe, data, run, steps[recipe], args.threads, "validation.every=0")
        ev_dir = out / f"eval-mlm-{recipe}"
        cli("eval", "-c", ROOT / "configs/demo/eval-mlm.yaml", "--input", run, "--output", ev_dir, "--force",
            "--set", f"data={data / 'vocab'}", "--set", "mask_prob=0.15", "--set", "pppl=false")
        ev = json.loads((ev_dir / "eval.json").read_text())
        f1s = []
        for seed in range(args.seeds):
            ft = out / f"finetune-{recipe}-seed{seed}"
            argv = ["finetune", "-c", ROOT / "configs/demo/finetune.yaml", "--input", run, "--output", ft, "--force",
                    "--set", f"seed={seed}", "--set", "init=pretrained", "--set", "tensorboard=false",
                    "--set", f"train_file={data / 'task/train.tsv'}", "--set", f"dev_file={data / 'task/dev.tsv'}",
                    "--set", f"test_file={data / 'task/test.tsv'}", "--set", f"epochs={args.ft_epochs}"]
            if args.threads:
                argv += ["--set", f"threads={args.threads}"]
            cli(*argv)
            f1s.append(extra(ft)["test"]["macro_f1"])
        results[recipe] = {"steps": ex["steps"], "tokens": ex["tokens"], "train_s": ex["train_s"],
                           "planned_s": args.budget_s, "s_per_step": sec[recipe], "mlm_ppl": ev["mlm_ppl"],
                           "mlm_acc": ev["mlm_acc"], "masked": ev.get("masked_tokens"), "macro_f1": f1s}

    print(f"\nequal wall clock: {args.budget_s:.0f} s of training per recipe, eval mask 15%, "
          f"{args.seeds} fine-tuning seeds x {args.ft_epochs} epochs; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'recipe':<9}{'steps':>7}{'tokens':>11}{'train s':>9}{'MLM ppl':>10}{'MLM acc':>9}  macro-F1 mean ± sd")
    for recipe, r in results.items():
        sd = statistics.stdev(r["macro_f1"]) if len(r["macro_f1"]) > 1 else 0.0
        print(f"{recipe:<9}{r['steps']:>7}{r['tokens']:>11,}{r['train_s']:>9.0f}{r['mlm_ppl']:>10.1f}"
              f"{r['mlm_acc']:>9.3f}  {statistics.mean(r['macro_f1']):.3f} ± {sd:.3f}  "
              f"({', '.join(f'{x:.3f}' for x in r['macro_f1'])})")
    print(f"total {time.monotonic() - started:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
