"""Benchmark `mlmctl clean`: throughput against a gzip floor, and peak memory at two corpus sizes.

    python benchmarks/bench_clean.py                 # 200 MB corpus; RSS at 50 and 500 MB
    python benchmarks/bench_clean.py --size-mb 20 --rss-mb 10,40
    python benchmarks/bench_clean.py --quick         # = --size-mb 20 --rss-mb 10,40

The corpus is generated (deterministically, cached under .bench/clean/): English-like prose
in several gzipped files, half `.txt.gz` (paragraphs separated by blank lines) and half
`.jsonl.gz`, with the noise the default steps exist for - URLs, e-mail addresses, CRLF line
ends, no-break and zero-width spaces, runs of spaces, short fragments - and ~5% duplicated
paragraphs across files.

Figures printed:
- clean: `mlmctl clean --workers W` wall time and MB/s of uncompressed input;
- floor: the same input files read (gunzip) and written back gzip-compressed at the level the
  shards use, over W processes - the least any cleaner must do with this data; target: clean
  runs at >= 25% of the floor's speed;
- peak RSS (whole process tree, sampled every 20 ms) of `mlmctl clean` on two corpus sizes:
  it should stay flat (only the 8-byte-per-document dedup table grows).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench" / "clean"
FILES = 8
INPUT_LEVEL = 6  # gzip level of the generated inputs


# --------------------------------------------------------------------------- corpus


def _vocabulary(rng: random.Random, n: int = 6000) -> tuple[list[str], list[float]]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    freq = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
    words = set("the of and to in a is that for it as was with be by on not he this are or his from at which".split())
    while len(words) < n:
        words.add("".join(rng.choices(letters, freq, k=max(1, int(rng.gauss(6, 2.5))))))
    vocab = sorted(words)
    rng.shuffle(vocab)
    weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]  # Zipf
    return vocab, weights


def _sentences(rng: random.Random, count: int) -> list[str]:
    vocab, weights = _vocabulary(rng)
    out = []
    for _ in range(count):
        words = rng.choices(vocab, weights, k=rng.randint(6, 28))
        s = " ".join(words)
        r = rng.random()
        if r < 0.03:
            s += f" see https://www.example{rng.randint(0, 999)}.org/page/{rng.randint(0, 99999)}"
        elif r < 0.05:
            s += f" or write to {words[0]}.{words[1]}@mail{rng.randint(0, 99)}.com"
        elif r < 0.07:
            s = s.replace(" ", "\u00a0", 2)
        elif r < 0.08:
            s = s.replace(" ", " \u200b", 1)
        elif r < 0.10:
            s = s.replace(" ", "   ", 3)
        out.append(s[0].upper() + s[1:] + rng.choice(".....?!"))
    return out


def make_corpus(size_mb: float, seed: int = 0) -> Path:
    """Generate (or reuse) a corpus of about size_mb MB of uncompressed text."""
    root = CACHE / f"corpus-{size_mb:g}mb-{seed}"
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(seed)
    pool = _sentences(rng, 60_000)
    shared = [" ".join(rng.choices(pool, k=4)) for _ in range(2000)]
    target = int(size_mb * 1e6 / FILES)
    for f in range(FILES):
        jsonl = f % 2 == 1
        crlf = f % 4 == 2
        name = f"part-{f:02d}.{'jsonl' if jsonl else 'txt'}.gz"
        written = 0
        with gzip.open(root / name, "wb", compresslevel=INPUT_LEVEL) as out:
            buf = []
            while written < target:
                r = rng.random()
                if r < 0.05:
                    para = rng.choice(shared)  # duplicated across files
                elif r < 0.07:
                    para = rng.choice(pool)[:15]  # a fragment the filters drop
                else:
                    para = " ".join(rng.choices(pool, k=rng.randint(2, 12)))
                    if rng.random() < 0.3:
                        para = para.replace(". ", ".\n", 2)
                if jsonl:
                    line = json.dumps({"text": para, "url": f"https://example.org/{f}/{written}"}, ensure_ascii=False) + "\n"
                else:
                    line = para + "\n\n"
                    if crlf:
                        line = line.replace("\n", "\r\n")
                data = line.encode("utf-8")
                buf.append(data)
                written += len(data)
                if len(buf) >= 2000:
                    out.write(b"".join(buf))
                    buf.clear()
            out.write(b"".join(buf))
    (root / "done").write_text("")
    return root


def raw_size(root: Path) -> int:
    """Uncompressed bytes of the corpus (the ISIZE trailer of each single-member gzip file)."""
    total = 0
    for p in sorted(root.glob("part-*.gz")):
        with open(p, "rb") as f:
            f.seek(-4, os.SEEK_END)
            total += int.from_bytes(f.read(4), "little")
    return total


# --------------------------------------------------------------------------- measurements


def _floor_one(args: tuple[str, str, int]) -> int:
    src, dst, level = args
    n = 0
    with gzip.open(src, "rb") as inp, gzip.GzipFile(dst, "wb", compresslevel=level, mtime=0) as out:
        while chunk := inp.read(1 << 20):
            out.write(chunk)
            n += len(chunk)
    return n


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def floor(root: Path, workdir: Path, level: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to gunzip every input and gzip it again at `level`."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(workdir / (p.name + ".out")), level) for p in sorted(root.glob("part-*.gz"))]
    cpu = _child_cpu()
    start = time.monotonic()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_floor_one, jobs))
    elapsed = time.monotonic() - start
    shutil.rmtree(workdir, ignore_errors=True)
    return elapsed, _child_cpu() - cpu


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_clean(root: Path, out: Path, workers: int, level: int) -> tuple[float, int, float]:
    """(wall seconds, peak tree RSS in KiB, CPU seconds of the process tree) of one `mlmctl clean` run."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "mlmctl", "clean", "--input", str(root), "--output", str(out),
           "--workers", str(workers), "--set", f"compresslevel={level}", "--set", "include=['*.gz']"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLMCTL_LOG_EVERY="3600")
    cpu = _child_cpu()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    stdout, stderr = proc.communicate()
    if proc.returncode:
        sys.exit(f"mlmctl clean failed:\n{stderr}")
    return elapsed, peak, _child_cpu() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=200, help="corpus size for the throughput figures")
    ap.add_argument("--rss-mb", default="50,500", help="two corpus sizes for the peak-memory figures")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--level", type=int, default=6, help="shard gzip level (the clean default is 6)")
    ap.add_argument("--quick", action="store_true", help="small sizes: --size-mb 20 --rss-mb 10,40")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora in .bench/clean")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.rss_mb = 20, "10,40"
    rss_sizes = [float(x) for x in args.rss_mb.split(",") if x]

    root = make_corpus(args.size_mb)
    mb = raw_size(root) / 1e6
    out = CACHE / "out"
    t_clean, peak, cpu_clean = run_clean(root, out, args.workers, args.level)
    stats = json.loads((out / "stats.json").read_text())
    t_floor, cpu_floor = floor(root, CACHE / "floor", args.level, args.workers)
    ratio = t_floor / t_clean
    print(f"corpus: {mb:.0f} MB uncompressed in {FILES} gzipped files, {stats['documents_in']:,} documents in, "
          f"{stats['documents_out']['total']:,} out")
    print(f"clean (--workers {args.workers}, level {args.level}): {t_clean:6.1f} s  {mb / t_clean:6.1f} MB/s"
          f"   CPU {cpu_clean:6.1f} s")
    print(f"floor (gunzip + gzip -{args.level}, {args.workers} procs): {t_floor:6.1f} s  {mb / t_floor:6.1f} MB/s"
          f"   CPU {cpu_floor:6.1f} s")
    print(f"clean / floor speed: {ratio:.0%} (target >= 25%) {'OK' if ratio >= 0.25 else 'BELOW TARGET'}; "
          f"by CPU time (load-independent): {cpu_floor / cpu_clean:.0%}")
    print(f"peak RSS, {mb:.0f} MB: {peak / 1024:.0f} MiB (process tree)")
    results = {"size_mb": round(mb, 1), "clean_mb_s": round(mb / t_clean, 2), "floor_mb_s": round(mb / t_floor, 2),
               "ratio": round(ratio, 3), "cpu_ratio": round(cpu_floor / cpu_clean, 3), "rss_mib": {}}
    for size in rss_sizes:
        r = make_corpus(size)
        _, peak, _ = run_clean(r, out, args.workers, args.level)
        results["rss_mib"][f"{raw_size(r) / 1e6:.0f}"] = round(peak / 1024)
        print(f"peak RSS, {raw_size(r) / 1e6:.0f} MB: {peak / 1024:.0f} MiB (process tree)")
        if not args.keep and size != args.size_mb:
            shutil.rmtree(r, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
