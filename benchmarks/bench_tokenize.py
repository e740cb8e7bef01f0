"""Benchmark: tokenize + build-vocab throughput against raw `tokenizers` speed, and peak memory.

Generates a clean-stage directory of `--size-mb` MB of synthetic text (Zipf-distributed made-up
words, sentences with abbreviations and numbers, 10% Chinese), then measures in this one run:

  tokenize          the stage (sentence split + normalizer + pre-tokenizer + gzip + word counts)
  raw pre-tok+gzip  the same normalizer + pre-tokenizer applied to every document, plus gzip of
                    the same output bytes at the same level: the floor tokenize is compared to
  train             build-vocab's trainer (WordPiece by default)
  index             build-vocab with `from` (no training): ids, offsets, word starts
  raw encode_batch  the trained tokenizer.json's `encode_batch` over the same sentences

Targets: tokenize <= 2x raw pre-tok+gzip; index <= 1.5x raw encode_batch (both single-process,
`--workers 1`, so they compare like with like). Each stage runs in a child process and its peak
RSS is reported; `--rss-sizes 50,500` repeats the stages at two sizes to show that memory stays
flat (apart from the trainer's word table).

    python benchmarks/bench_tokenize.py --quick            # 10 MB, about a minute
    python benchmarks/bench_tokenize.py --size-mb 200      # the reference run
    python benchmarks/bench_tokenize.py --size-mb 50 --rss-sizes 50,500
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_corpus(out: Path, size_mb: float, seed: int = 0, shard_mb: int = 16) -> int:
    """A finished clean directory of about size_mb MB of text; returns its text bytes."""
    import numpy as np

    from mlmctl.manifest import Manifest, write_manifest
    from mlmctl.layout import shard_name
    from mlmctl.shards import ShardInfo, atomic_gzip

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2,
                     2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.15, 0.1, 0.07])
    lexicon = ["".join(rng.choice(letters, size=int(n), p=freq / freq.sum()))
               for n in rng.integers(2, 11, size=50_000)]
    lexicon[:12] = ["the", "of", "and", "to", "in", "is", "was", "for", "e.g.", "Dr.", "3.14", "U.S."]
    zipf = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.05
    zipf /= zipf.sum()
    cjk = [chr(0x4E00 + i) for i in range(3000)]
    cjk_p = 1.0 / np.arange(1, 3001) ** 0.9
    cjk_p /= cjk_p.sum()
    target = int(size_mb * 1e6)
    total = 0
    infos = []
    pending: dict[str, list[bytes]] = {"train": [], "validation": []}

    def flush(split: str) -> None:  # one shard of the split's pending lines, as clean writes it
        if pending[split]:
            name = f"{split}/{shard_name(sum(i.split == split for i in infos), '.jsonl.gz')}"
            with atomic_gzip(out / name, 1) as gz:
                gz.write(b"".join(pending[split]))
            infos.append(ShardInfo.of_file(out, name, split, {"docs": len(pending[split])}))
            pending[split] = []

    doc_id = 0
    while total < target:
        words = rng.choice(len(lexicon), size=20_000, p=zipf)
        pos = 0
        while pos < len(words) - 400:
            sents = []
            for _ in range(int(rng.integers(2, 12))):
                if rng.random() < 0.1:
                    sents.append("".join(rng.choice(cjk, size=int(rng.integers(8, 30)), p=cjk_p)) + "。")
                    continue
                n = int(rng.integers(5, 25))
                s = " ".join(lexicon[i] for i in words[pos:pos + n])
                pos += n
                sents.append(s[0].upper() + s[1:] + ("." if rng.random() < 0.8 else "?"))
            text = " ".join(sents)
            split = "validation" if doc_id % 100 == 0 else "train"
            line = json.dumps({"id": f"d{doc_id}", "text": text, "source": "bench"}, ensure_ascii=False) + "\n"
            pending[split].append(line.encode("utf-8"))
            if sum(map(len, pending[split])) >= shard_mb << 20:
                flush(split)
            total += len(text.encode("utf-8"))
            doc_id += 1
    for split in pending:
        flush(split)
    write_manifest(out, Manifest(stage="clean", config={}, config_hash="bench", input_hash=None, shards=infos))
    return total


def _hwm_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MB; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run `python -m mlmctl ARGS` in a child; (seconds, peak RSS in MB of that child, its log).

    The peak is the child's own VmHWM, sampled every 20 ms. (`wait4`'s ru_maxrss would not do:
    Linux carries the parent's resident size at fork over into the child's figure, and this
    parent holds the generated corpus.)
    """
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlmctl", *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log, text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _hwm_mb(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        log.seek(0)
        err = log.read()
    if proc.returncode != 0:
        sys.exit(f"mlmctl {' '.join(args)} failed:\n{err}")
    return seconds, peak, err


def documents(clean: Path):
    from mlmctl.shards import open_shard_lines

    for path in sorted(clean.glob("*/shard-*.jsonl.gz")):
        for line in open_shard_lines(path):
            if line:
                yield json.loads(line)["text"]


def raw_pretokenize(clean: Path, tok_dir: Path, level: int) -> float:
    """Seconds for normalizer + pre-tokenizer over every document, plus gzip of the joined output."""
    from mlmctl.pretokenize import pipeline_tokenizer

    tok = pipeline_tokenizer(json.loads((tok_dir / "pretokenizer.json").read_text()))
    norm, pre = tok.normalizer, tok.pre_tokenizer
    texts = list(documents(clean))
    start = time.perf_counter()
    out = []
    for text in texts:
        out.append(" ".join(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))))
    gzip.compress("\n".join(out).encode("utf-8"), compresslevel=level, mtime=0)
    return time.perf_counter() - start


def raw_encode_batch(clean: Path, tokenizer_json: Path) -> tuple[float, int]:
    """Seconds and tokens for the full tokenizer's encode_batch over the corpus sentences."""
    from tokenizers import Tokenizer

    from mlmctl.sentences import split_sentences

    tok = Tokenizer.from_file(str(tokenizer_json))
    sentences = [s for text in documents(clean) for s in split_sentences(text)]
    start = time.perf_counter()
    n = 0
    for i in range(0, len(sentences), 4096):
        for enc in tok.encode_batch(sentences[i:i + 4096], add_special_tokens=False):
            n += len(enc.ids)
    return time.perf_counter() - start, n


def bench(size_mb: float, work: Path, workers: int, model: str, vocab_size: int, raw: bool) -> dict:
    clean, tok, vocab, index = (work / n for n in ("clean", "tokens", "vocab", "index"))
    t0 = time.perf_counter()
    nbytes = make_corpus(clean, size_mb)
    print(f"  corpus: {nbytes / 1e6:.1f} MB of text generated in {time.perf_counter() - t0:.0f} s", flush=True)
    w = ["--workers", str(workers)]
    r = {"mb": nbytes / 1e6}
    r["tokenize_s"], r["tokenize_rss"], _ = run_child(["tokenize", "--input", str(clean), "--output", str(tok), *w])
    sets = ["--set", f"model={model}", "--set", f"vocab_size={vocab_size}"]
    r["vocab_s"], r["vocab_rss"], log = run_child(["build-vocab", "--input", str(tok), "--output", str(vocab), *sets, *w])
    r["train_s"] = float(re.search(r"trained in ([0-9.]+) s", log).group(1))
    r["index_s"], r["index_rss"], _ = run_child(["build-vocab", "--input", str(tok), "--output", str(index), *sets,
                                                 "--set", f"from={vocab / 'tokenizer.json'}", *w])
    stats = json.loads((vocab / "stats.json").read_text())
    r["tokens"] = stats["train"]["tokens"] + stats["validation"]["tokens"]
    r["words"] = stats["train"]["words"] + stats["validation"]["words"]
    if raw:
        level = json.loads((tok / "manifest.json").read_text())["config"]["compresslevel"]
        r["raw_pretok_s"] = raw_pretokenize(clean, tok, level)
        r["raw_encode_s"], r["raw_tokens"] = raw_encode_batch(clean, vocab / "tokenizer.json")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=200, help="corpus size in MB of text (default 200)")
    ap.add_argument("--quick", action="store_true", help="10 MB, for a quick check")
    ap.add_argument("--workers", type=int, default=1, help="--workers for the stages (1 compares like with like)")
    ap.add_argument("--model", default="wordpiece", choices=["wordpiece", "bpe", "unigram"])
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--rss-sizes", default=None, help="e.g. 50,500: peak RSS of each stage at two sizes")
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    size = 10 if args.quick else args.size_mb
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        print(f"bench_tokenize: {size:g} MB, workers={args.workers}, {args.model} {args.vocab_size}", flush=True)
        r = bench(size, base / "main", args.workers, args.model, args.vocab_size, raw=True)
        mb = r["mb"]
        rows = [
            ("tokenize", r["tokenize_s"], f"{r['words'] / r['tokenize_s'] / 1e6:.2f} M words/s"),
            ("raw pre-tok+gzip", r["raw_pretok_s"], ""),
            ("train", r["train_s"], ""),
            ("index", r["index_s"], f"{r['tokens'] / r['index_s'] / 1e6:.2f} M tokens/s"),
            ("raw encode_batch", r["raw_encode_s"], f"{r['raw_tokens'] / r['raw_encode_s'] / 1e6:.2f} M tokens/s"),
        ]
        print(f"\n{'step':18} {'seconds':>8} {'MB/s':>8}  rate")
        for name, s, rate in rows:
            print(f"{name:18} {s:8.2f} {mb / max(s, 1e-9):8.2f}  {rate}")
        print(f"\ntokenize / raw pre-tok+gzip = {r['tokenize_s'] / r['raw_pretok_s']:.2f}x (target <= 2)")
        print(f"index / raw encode_batch    = {r['index_s'] / r['raw_encode_s']:.2f}x (target <= 1.5)"
              " (stage times include process start and imports)")
        print(f"peak RSS MB: tokenize {r['tokenize_rss']:.0f}, build-vocab {r['vocab_rss']:.0f}, "
              f"index only {r['index_rss']:.0f}")
        if args.rss_sizes:
            print("\npeak RSS (MB) by corpus size:")
            print(f"{'MB':>6} {'tokenize':>9} {'build-vocab':>12} {'index only':>11}")
            for s in (float(x) for x in args.rss_sizes.split(",")):
                q = bench(s, base / f"rss-{s:g}", args.workers, args.model, args.vocab_size, raw=False)
                print(f"{q['mb']:6.0f} {q['tokenize_rss']:9.0f} {q['vocab_rss']:12.0f} {q['index_rss']:11.0f}", flush=True)
                shutil.rmtree(base / f"rss-{s:g}", ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
