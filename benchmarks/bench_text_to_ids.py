"""Benchmark: clean text -> token ids, mlmctl (tokenize + build-vocab indexing) against the Hugging Face route.

Both routes start from the same finished `clean` directory (`{train,validation}/shard-*.jsonl.gz`)
and the same `tokenizer.json` (WordPiece 30522, trained beforehand and not timed: vocabulary
training is out of both sides), and both end with ids on disk:

  mlmctl  `mlmctl tokenize --set index_with=tokenizer.json --workers N`, then `mlmctl build-vocab
          --set from=tokenizer.json --workers N`: sentences, pre-tokens (+ word counts) and, in the
          same pass, ids, word starts, sentence and document ends; build-vocab checks and adopts
          them. Everything written and hashed into manifests.
  mlmctl-2pass (with --two-pass) the same without `index_with`: build-vocab reads the text
          shards back and indexes them.
  HF      what `transformers`' `run_mlm.py` does: `datasets.load_dataset("json", data_files=<the
          same shards>, num_proc=N)` (decompress, parse, write the Arrow cache), then `.map` of
          `PreTrainedTokenizerFast(tokenizer_file=<the same file>)(batch["text"],
          return_special_tokens_mask=True)`, `batched=True`, `num_proc=N`, writing its Arrow cache.

Each route is a child process tree timed end to end (imports, decompression and writing
included) with its peak resident memory (VmRSS summed over the process tree, sampled every
50 ms). The routes alternate (mlmctl, HF, mlmctl, HF, ...) so that the load of a shared machine
falls on both alike; the best run of each is compared. `--rss-sizes 500,1000` then runs the
mlmctl route on larger corpora for its peak memory.

The corpus is generated (Zipfian made-up words, abbreviations, numbers, 10% Chinese sentences):
a pool of distinct sentences, drawn at random into documents, so that hundreds of MB take
seconds to write.

    python benchmarks/bench_text_to_ids.py --quick                 # 20 MB, one round
    python benchmarks/bench_text_to_ids.py --size-mb 200 --rounds 2 --two-pass --rss-sizes 2000
Needs the `bench` extra (`pip install -e '.[bench]'`: datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_clean import _tree_rss_kb  # noqa: E402  (peak RSS of a process tree, the same /proc walk)

HF_ROUTE = r"""
import sys
from datasets import load_dataset
from transformers import PreTrainedTokenizerFast
files, tokenizer, cache, n = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4])
ds = load_dataset("json", data_files=files, split="train", cache_dir=cache, num_proc=n if n > 1 else None)
tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer)
out = ds.map(lambda b: tok(b["text"], return_special_tokens_mask=True), batched=True,
             num_proc=n if n > 1 else None, remove_columns=ds.column_names)
print(len(out), out.cache_files[0]["filename"] if out.cache_files else "no cache")
"""


def make_corpus(out: Path, size_mb: float, seed: int = 0, shard_mb: int = 16) -> int:
    """A finished clean directory of about size_mb MB of text; returns its text bytes."""
    import gzip

    import numpy as np

    from mlmctl.layout import shard_name
    from mlmctl.manifest import Manifest, write_manifest
    from mlmctl.shards import ShardInfo

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2,
                     2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.15, 0.1, 0.07])
    lexicon = ["".join(rng.choice(letters, size=int(n), p=freq / freq.sum())) for n in rng.integers(2, 11, 50_000)]
    lexicon[:12] = ["the", "of", "and", "to", "in", "is", "was", "for", "e.g.", "Dr.", "3.14", "U.S."]
    zipf = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.05
    words = rng.choice(len(lexicon), size=4_000_000, p=zipf / zipf.sum())
    cjk_p = 1.0 / np.arange(1, 3001) ** 0.9
    cjk = rng.choice(3000, size=600_000, p=cjk_p / cjk_p.sum()) + 0x4E00
    pool, w, c = [], 0, 0
    for n in rng.integers(5, 25, size=300_000):  # ~300k distinct sentences, ~40 MB
        if rng.random() < 0.1:
            k = int(rng.integers(8, 30))
            pool.append("".join(map(chr, cjk[c:c + k])) + "。")
            c += k
        else:
            s = " ".join(lexicon[i] for i in words[w:w + n])
            w += int(n)
            pool.append(s[0].upper() + s[1:] + ("." if rng.random() < 0.8 else "?"))
    target, total, doc_id, infos = int(size_mb * 1e6), 0, 0, []
    pending: dict[str, list[bytes]] = {"train": [], "validation": []}
    sizes = {"train": 0, "validation": 0}

    def flush(split: str) -> None:
        name = f"{split}/{shard_name(sum(i.split == split for i in infos), '.jsonl.gz')}"
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(gzip.compress(b"".join(pending[split]), compresslevel=1, mtime=0))
        infos.append(ShardInfo.of_file(out, name, split, {"docs": len(pending[split])}))
        pending[split], sizes[split] = [], 0

    while total < target:
        picks = rng.integers(0, len(pool), size=(4096, 12))
        for row, n in zip(picks, rng.integers(2, 12, size=4096)):
            text = " ".join(pool[i] for i in row[:n])
            split = "validation" if doc_id % 100 == 0 else "train"
            line = json.dumps({"id": f"d{doc_id}", "text": text, "source": "bench"}, ensure_ascii=False) + "\n"
            pending[split].append(line.encode("utf-8"))
            sizes[split] += len(line)
            if sizes[split] >= shard_mb << 20:
                flush(split)
            total += len(text.encode("utf-8"))
            doc_id += 1
    for split in pending:
        if pending[split]:
            flush(split)
    write_manifest(out, Manifest(stage="clean", config={}, config_hash="bench", input_hash=None, shards=infos))
    return total


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CPU: list[float] = []  # CPU seconds of each timed command (its whole process tree), in order


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak process-tree RSS in MB) of one command; exits on failure."""
    cpu = _children_cpu()
    start = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.05)
        if proc.returncode:
            log.seek(0)
            sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{log.read()[-3000:]}")
    CPU.append(_children_cpu() - cpu)
    return time.monotonic() - start, peak / 1024


def mlmctl_route(clean: Path, work: Path, tokenizer: Path, workers: int, fused: bool = True) -> tuple[float, float]:
    """tokenize + build-vocab with `from`: (seconds, peak RSS MB of either stage). `fused`: tokenize
    indexes in its own pass (`index_with`) and build-vocab adopts; else build-vocab reads the
    text shards back and indexes them."""
    shutil.rmtree(work, ignore_errors=True)
    w = ["--workers", str(workers)]
    mlmctl = [sys.executable, "-m", "mlmctl"]
    index = ["--set", f"index_with={tokenizer}"] if fused else []
    t1, m1 = timed([*mlmctl, "tokenize", "--input", str(clean), "--output", str(work / "tokens"), *w, *index])
    t2, m2 = timed([*mlmctl, "build-vocab", "--input", str(work / "tokens"), "--output", str(work / "ids"),
                    "--set", f"from={tokenizer}", *w])
    return t1 + t2, max(m1, m2)


def hf_route(clean: Path, work: Path, tokenizer: Path, workers: int) -> tuple[float, float]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = ",".join(str(p) for p in sorted(clean.glob("*/shard-*.jsonl.gz")))
    # The HF cache would otherwise be the user's ~/.cache: keep every write inside the work dir.
    env = {"HF_HOME": str(work / "hf-home"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return timed([sys.executable, "-c", HF_ROUTE, files, str(tokenizer), str(work / "cache"), str(workers)], env)


def train_tokenizer(work: Path) -> Path:
    """A WordPiece 30522 tokenizer.json trained by mlmctl on a 10 MB corpus of the same kind (not timed)."""
    make_corpus(work / "clean", 10, seed=1)
    mlmctl = [sys.executable, "-m", "mlmctl"]
    timed([*mlmctl, "tokenize", "--input", str(work / "clean"), "--output", str(work / "tokens"), "--workers", "2"])
    timed([*mlmctl, "build-vocab", "--input", str(work / "tokens"), "--output", str(work / "vocab"), "--workers", "2"])
    return work / "vocab" / "tokenizer.json"


def _summary(mb: float, rounds: int, runs: dict, cpu: dict) -> None:
    hf = min(runs["hf"])[0]
    print(f"\nbest of {rounds}: HF {hf:.1f} s ({mb / hf:.2f} MB/s)")
    for name in (n for n in runs if n != "hf"):
        best = min(runs[name])[0]
        print(f"  {name}: {best:.1f} s ({mb / best:.2f} MB/s): {hf / best:.2f}x the HF route by best wall (target >= 2); "
              f"CPU, all rounds: {cpu[name]:.1f} s vs HF {cpu['hf']:.1f} s: {cpu['hf'] / cpu[name]:.2f}x; "
              f"peak RSS {max(r for _, r in runs[name]):.0f} MB")
    print(f"  HF peak RSS {max(r for _, r in runs['hf']):.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=200, help="corpus size in MB of text (default 200)")
    ap.add_argument("--quick", action="store_true", help="20 MB, one round, no larger sizes")
    ap.add_argument("--workers", type=int, default=2, help="--workers of mlmctl = num_proc of datasets (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each route (default 2)")
    ap.add_argument("--rss-sizes", default="", help="e.g. 500,1000: the mlmctl route's peak RSS at these sizes too")
    ap.add_argument("--two-pass", action="store_true",
                    help="also time mlmctl without tokenize's `index_with` (build-vocab reads the text back) each round")
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    try:
        import datasets  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        sys.exit("bench_text_to_ids: needs datasets and transformers: pip install -e '.[bench,dev]'")
    size, rounds = (20, 1) if args.quick else (args.size_mb, args.rounds)
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-text-to-ids-"))
    try:
        tokenizer = train_tokenizer(base / "vocab")
        t0 = time.monotonic()
        mb = make_corpus(base / "clean", size) / 1e6
        print(f"bench_text_to_ids: {mb:.0f} MB of text ({time.monotonic() - t0:.0f} s to generate), "
              f"workers = num_proc = {args.workers}, load {os.getloadavg()[0]:.1f}", flush=True)
        routes = {"mlmctl": mlmctl_route, "hf": hf_route}
        if args.two_pass:
            routes = {"mlmctl": mlmctl_route, "mlmctl-2pass": partial(mlmctl_route, fused=False), "hf": hf_route}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in routes}
        cpu: dict[str, float] = dict.fromkeys(routes, 0.0)
        for r in range(rounds):
            for name, route in routes.items():
                n = len(CPU)
                s, rss = route(base / "clean", base / name, tokenizer, args.workers)
                runs[name].append((s, rss))
                cpu[name] += sum(CPU[n:])
                steps = " + ".join(f"{c:.1f}" for c in CPU[n:])
                print(f"  round {r + 1}: {name:12} {s:7.1f} s  {mb / s:6.2f} MB/s  CPU {sum(CPU[n:]):6.1f} s ({steps})  "
                      f"peak RSS {rss:6.0f} MB  (load {os.getloadavg()[0]:.1f})", flush=True)
        _summary(mb, rounds, runs, cpu)
        shutil.rmtree(base / "hf", ignore_errors=True)
        for extra in [float(x) for x in args.rss_sizes.split(",") if x and not args.quick]:
            shutil.rmtree(base / "clean", ignore_errors=True)
            shutil.rmtree(base / "mlmctl", ignore_errors=True)
            big = make_corpus(base / "clean", extra) / 1e6
            s, rss = mlmctl_route(base / "clean", base / "mlmctl", tokenizer, args.workers)
            print(f"  mlmctl at {big:.0f} MB: {s:.1f} s ({big / s:.2f} MB/s), peak RSS {rss:.0f} MB", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
