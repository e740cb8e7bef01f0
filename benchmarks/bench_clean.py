"""Benchmark `mlmctl clean`: throughput against a gzip floor, peak memory at two corpus sizes, the
input formats, and near-duplicate removal against datatrove.

    python benchmarks/bench_clean.py                 # every part, full sizes
    python benchmarks/bench_clean.py --part throughput --size-mb 200 --rss-mb 50,500
    python benchmarks/bench_clean.py --part formats --formats-mb 50
    python benchmarks/bench_clean.py --part near-dedup --near-docs 20000
    python benchmarks/bench_clean.py --quick         # every part, small sizes

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
- formats (`--part formats`): the same generated documents as `.jsonl`, `.jsonl.gz`,
  `.jsonl.zst`, Parquet, CSV and Arrow IPC; for each, the reader alone (MB/s of text, peak RSS of
  its process) and `mlmctl clean` end to end (MB/s, peak RSS, and whether the output shards are
  byte-identical to the `.jsonl` run's);
- near-dedup (`--part near-dedup`): `clean` with and without the `near_dedup` step on two corpora
  with the same number of documents, one 4x longer per document (memory follows the document
  count, not the bytes), its share of clean's time; and datatrove's four-stage MinHash
  pipeline (same 5-grams, 14 x 8 hashes) on the short corpus when `datatrove` is installed
  (a benchmark-only peer: `pip install datatrove 'xxhash<4' orjson spacy`; xxhash 4 rejects the
  str datatrove 0.10 hashes).
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


def _tree_rss_kb(pid: int, key: str = "VmRSS:") -> int:
    """Resident memory of a process and all its descendants, from /proc. `key="RssAnon:"`: only
    anonymous memory (heap), leaving out memory-mapped file pages, which the kernel can drop."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_clean(root: Path, out: Path, workers: int, level: int, extra: list[str] = ()) -> tuple[float, int, float]:
    """(wall seconds, peak tree RSS in KiB, CPU seconds of the process tree) of one `mlmctl clean` run."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "mlmctl", "clean", "--input", str(root), "--output", str(out),
           "--workers", str(workers), "--set", f"compresslevel={level}", "--set", "include=['*.gz']", *extra]
    return _timed(cmd, dict(os.environ, PYTHONPATH=str(ROOT), MLMCTL_LOG_EVERY="3600"))


_last_stdout = ""  # what the last `_timed` command printed
_last_anon_kb = 0  # and its peak anonymous memory (process tree), KiB


def _timed(cmd: list[str], env: dict) -> tuple[float, int, float]:
    """(wall seconds, peak tree RSS in KiB, CPU seconds of the process tree) of one command.

    Its output goes to files, not pipes: a chatty child (datatrove logs every task) would
    block on a full pipe while this loop samples memory."""
    global _last_stdout, _last_anon_kb
    CACHE.mkdir(parents=True, exist_ok=True)
    cpu = _child_cpu()
    start = time.monotonic()
    with open(CACHE / "stdout.txt", "w+") as out, open(CACHE / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        peak = _last_anon_kb = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            _last_anon_kb = max(_last_anon_kb, _tree_rss_kb(proc.pid, "RssAnon:"))
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        out.seek(0), err.seek(0)
        _last_stdout = out.read()
        if proc.returncode:
            sys.exit(f"{' '.join(cmd[:4])} failed:\n{err.read()[-3000:]}")
    return elapsed, peak, _child_cpu() - cpu


# --------------------------------------------------------------------------- formats


def make_documents(size_mb: float, seed: int = 1) -> list[str]:
    """About size_mb MB (UTF-8) of generated documents of 2-12 paragraphs-worth of sentences."""
    rng = random.Random(seed)
    pool = _sentences(rng, 60_000)
    docs, total = [], 0
    while total < size_mb * 1e6:
        doc = " ".join(rng.choices(pool, k=rng.randint(2, 12)))
        docs.append(doc)
        total += len(doc.encode("utf-8"))
    return docs


def write_formats(docs: list[str], root: Path) -> dict[str, Path]:
    """The documents in every input format clean reads; Parquet in row groups of 8192 rows."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    root.mkdir(parents=True, exist_ok=True)
    paths = {f: root / f"corpus.{f}" for f in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "csv", "arrow")}
    # A `source` column in every format, so that clean's output (which records it) can be compared.
    data = "".join(json.dumps({"text": d, "source": "bench"}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    paths["jsonl"].write_bytes(data)
    with gzip.GzipFile(paths["jsonl.gz"], "wb", compresslevel=INPUT_LEVEL, mtime=0) as f:
        f.write(data)
    paths["jsonl.zst"].write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "source"])
        w.writerows([d, "bench"] for d in docs)
    table = pa.table({"text": docs, "source": ["bench"] * len(docs)})
    pq.write_table(table, paths["parquet"], row_group_size=8192)
    # As datasets.save_to_disk writes it: the IPC stream format, record batches of 1000 rows.
    with pa.OSFile(str(paths["arrow"]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as wr:
        for batch in table.to_batches(max_chunksize=1000):
            wr.write_batch(batch)
    return paths


def _read_one(path: str) -> None:
    """(Child process) read one input file with clean's reader; print documents, seconds and peak RSS."""
    import pyarrow.parquet  # noqa: F401  (imported before the clock starts: reading, not importing)
    import zstandard  # noqa: F401

    from mlmctl.sources import ReadOptions, discover, read_unit

    opts = ReadOptions(source_field="source")
    start, cpu = time.monotonic(), time.process_time()
    docs = chars = 0
    for unit in discover([path], [], "auto", 1, opts):
        for doc in read_unit(unit, opts, lambda *a: None, {}):
            docs += 1
            chars += len(doc.text)
    print(json.dumps({"documents": docs, "chars": chars, "seconds": time.monotonic() - start,
                      "cpu": time.process_time() - cpu}))


def _shard_digest(out: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(out.glob("*/shard-*")):
        h.update(p.relative_to(out).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def bench_formats(size_mb: float, workers: int, level: int) -> dict:
    """Reader and clean figures per input format (see the module docstring)."""
    docs = make_documents(size_mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    root = CACHE / f"formats-{size_mb:g}mb"
    paths = write_formats(docs, root)
    print(f"formats: {len(docs):,} documents, {mb:.0f} MB of text; reader = clean's reader alone in one "
          f"process; clean = `mlmctl clean --workers {workers}` (one input file, so one read unit)")
    print("MB/s of text; RSS = peak resident MiB (anon = without memory-mapped file pages); CPU in seconds")
    print(f"{'format':10} {'file MB':>8} {'read MB/s':>10} {'read CPU':>8} {'read RSS':>8} {'anon':>5} "
          f"{'clean MB/s':>10} {'clean CPU':>9} {'clean RSS':>9} {'anon':>5}  same output")
    results, ref = {}, None
    base = root / "one.jsonl"  # one document: the reader process's memory before any reading
    base.write_text(json.dumps({"text": docs[0], "source": "bench"}) + "\n", encoding="utf-8")
    _, base_peak, _ = _timed([sys.executable, __file__, "--read-one", str(base)], dict(os.environ, PYTHONPATH=str(ROOT)))
    print(f"{'(imports)':10} {'':8} {'':10} {'':8} {base_peak / 1024:8.0f} {_last_anon_kb / 1024:5.0f}")
    results["imports_rss_mib"] = [round(base_peak / 1024), round(_last_anon_kb / 1024)]
    for fmt, path in paths.items():
        _, read_peak, _ = _timed([sys.executable, __file__, "--read-one", str(path)],
                                 dict(os.environ, PYTHONPATH=str(ROOT)))
        r = json.loads(_last_stdout.splitlines()[-1])
        read_anon = _last_anon_kb
        assert r["documents"] == len(docs), (fmt, r)
        t_clean, peak, cpu_clean = run_clean(path, CACHE / "out", workers, level, ["--set", "source_field=source"])
        digest = _shard_digest(CACHE / "out")
        ref = ref or digest
        results[fmt] = {"file_mb": round(path.stat().st_size / 1e6, 1), "read_mb_s": round(mb / r["seconds"], 1),
                        "read_cpu_s": round(r["cpu"], 2), "read_rss_mib": round(read_peak / 1024),
                        "read_anon_mib": round(read_anon / 1024), "clean_mb_s": round(mb / t_clean, 1),
                        "clean_cpu_s": round(cpu_clean, 1), "clean_rss_mib": round(peak / 1024),
                        "clean_anon_mib": round(_last_anon_kb / 1024),
                        "same_output": digest == ref}
        x = results[fmt]
        print(f"{fmt:10} {x['file_mb']:8.1f} {x['read_mb_s']:10.1f} {x['read_cpu_s']:8.2f} {x['read_rss_mib']:8d} "
              f"{x['read_anon_mib']:5d} {x['clean_mb_s']:10.1f} {x['clean_cpu_s']:9.1f} {x['clean_rss_mib']:9d} "
              f"{x['clean_anon_mib']:5d}  {'yes' if x['same_output'] else 'NO'}")
    shutil.rmtree(root, ignore_errors=True)
    return {"documents": len(docs), "text_mb": round(mb, 1), "formats": results}


# --------------------------------------------------------------------------- near-dedup


def make_near_corpus(n_docs: int, sentences: int, seed: int = 2, files: int = 4) -> Path:
    """n_docs documents of `sentences` sentences in `files` .jsonl.gz files; 10% of them are edited
    copies of an earlier document (3 words changed, one sentence dropped), spread over other files."""
    root = CACHE / f"near-{n_docs}x{sentences}-{seed}"
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(seed)
    pool = _sentences(rng, 60_000)
    outs = [gzip.GzipFile(root / f"part-{i:02d}.jsonl.gz", "wb", compresslevel=INPUT_LEVEL, mtime=0)
            for i in range(files)]
    originals: list[list[str]] = []
    copies = 0
    for i in range(n_docs):
        if originals and rng.random() < 0.1:
            copies += 1
            doc = list(rng.choice(originals))
            del doc[rng.randrange(len(doc))]
            for _ in range(3):
                j = rng.randrange(len(doc))
                words = doc[j].split()
                words[rng.randrange(len(words))] = rng.choice(pool).split()[0]
                doc[j] = " ".join(words)
        else:
            doc = rng.choices(pool, k=sentences)
            if len(originals) < 20_000:
                originals.append(doc)
        outs[i % files].write((json.dumps({"text": "\n".join(doc)}) + "\n").encode("utf-8"))
    for f in outs:
        f.close()
    (root / "copies").write_text(str(copies))
    (root / "done").write_text("")
    return root


def _gz_size(root: Path) -> int:
    return sum(int.from_bytes(p.read_bytes()[-4:], "little") for p in root.glob("*.gz"))


NEAR_STEPS = "steps=[decode, remove_bom, normalize, remove_chars, urls, whitespace, length_filter, quality_filter, near_dedup]"


def bench_near_dedup(n_docs: int, workers: int, level: int) -> dict:
    """clean with and without near_dedup on two corpora of n_docs documents (short, 4x longer); datatrove."""
    results = {}
    print(f"near-dedup: {n_docs:,} documents per corpus (10% edited copies), `mlmctl clean --workers {workers}`")
    for sentences in (8, 32):
        root = make_near_corpus(n_docs, sentences)
        mb = _gz_size(root) / 1e6
        t_base, rss_base, cpu_base = run_clean(root, CACHE / "out", workers, level)
        t_near, rss_near, cpu_near = run_clean(root, CACHE / "out", workers, level, ["--set", NEAR_STEPS])
        removed = json.loads((CACHE / "out" / "stats.json").read_text())["dropped"]
        removed = removed.get("near_dedup", {}).get("near_duplicate", {}).get("documents", 0)
        r = {"mb": round(mb, 1), "clean_mb_s": round(mb / t_base, 1), "with_near_dedup_mb_s": round(mb / t_near, 1),
             "near_dedup_share": round(max(cpu_near - cpu_base, 0) / cpu_near, 3), "removed": removed,
             "injected_copies": int((root / "copies").read_text()),
             "rss_mib": round(rss_base / 1024), "rss_near_mib": round(rss_near / 1024)}
        only, rss_only, _ = run_clean(root, CACHE / "out", workers, level,
                                      ["--set", "steps=[decode, near_dedup]", "--set", "dedup=false"])
        r["near_dedup_only_mb_s"], r["near_dedup_only_rss_mib"] = round(mb / only, 1), round(rss_only / 1024)
        # datatrove only on the short corpus: its spaCy word tokenizer runs at ~0.1-0.3 MB/s per
        # core, so the long one alone would take most of the 5 minutes this benchmark may use.
        peer = run_datatrove(root, workers) if sentences == 8 else None
        if peer:
            r["datatrove"] = {"mb_s": round(mb / peer[0], 2), "seconds": round(peer[0], 1),
                              "rss_mib": round(peer[1] / 1024), "kept": peer[2]}
        results[f"{sentences}_sentences"] = r
        print(f"  {mb:5.0f} MB ({sentences} sentences/doc): clean {r['clean_mb_s']} MB/s, with near_dedup "
              f"{r['with_near_dedup_mb_s']} MB/s (near_dedup {r['near_dedup_share']:.0%} of clean's CPU), "
              f"removed {removed:,} (injected {r['injected_copies']:,}); peak RSS {r['rss_mib']} -> {r['rss_near_mib']} MiB")
        print(f"        decode + near_dedup only: {r['near_dedup_only_mb_s']} MB/s, {r['near_dedup_only_rss_mib']} MiB"
              + (f"; datatrove MinhashDedup (4 stages, {workers} workers): {r['datatrove']['mb_s']} MB/s, "
                 f"{r['datatrove']['rss_mib']} MiB, kept {peer[2]:,}" if peer else ""))
    return results


_DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                      MinhashDedupSignature)
from datatrove.pipeline.dedup.minhash import MinhashConfig
inp, work, workers, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes: what mlmctl's near_dedup defaults copy
kw = dict(workers=workers, start_method="fork")
LocalPipelineExecutor([JsonlReader(inp, glob_pattern="*.jsonl.gz"), MinhashDedupSignature(f"{work}/sigs", config=cfg)],
                      tasks=files, logging_dir=f"{work}/l1", **kw).run()
LocalPipelineExecutor([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)],
                      tasks=cfg.num_buckets, logging_dir=f"{work}/l2", **kw).run()
LocalPipelineExecutor([MinhashDedupCluster(f"{work}/buckets", f"{work}/ids", config=cfg)],
                      tasks=1, logging_dir=f"{work}/l3", **kw).run()
LocalPipelineExecutor([JsonlReader(inp, glob_pattern="*.jsonl.gz"), MinhashDedupFilter(f"{work}/ids"), JsonlWriter(f"{work}/out")],
                      tasks=files, logging_dir=f"{work}/l4", **kw).run()
"""


def run_datatrove(root: Path, workers: int) -> tuple[float, int, int] | None:
    """(wall seconds, peak tree RSS KiB, documents kept) of datatrove's MinHash pipeline, or None."""
    try:
        import datatrove  # noqa: F401
    except ImportError:
        return None
    work = CACHE / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    files = len(list(root.glob("*.jsonl.gz")))
    cmd = [sys.executable, "-c", _DATATROVE, str(root), str(work), str(workers), str(files)]
    elapsed, peak, _ = _timed(cmd, dict(os.environ, DATATROVE_COLORIZE_LOGS="0"))
    kept = sum(1 for p in (work / "out").glob("*.jsonl.gz") for _ in gzip.open(p))
    shutil.rmtree(work, ignore_errors=True)
    return elapsed, peak, kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "throughput", "formats", "near-dedup"], default="all")
    ap.add_argument("--size-mb", type=float, default=200, help="corpus size for the throughput figures")
    ap.add_argument("--rss-mb", default="50,500", help="two corpus sizes for the peak-memory figures")
    ap.add_argument("--formats-mb", type=float, default=50, help="text size of the formats corpus")
    ap.add_argument("--near-docs", type=int, default=20_000, help="documents in each near-dedup corpus")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--level", type=int, default=6, help="shard gzip level (the clean default is 6)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes: --size-mb 20 --rss-mb 10,40 --formats-mb 10 --near-docs 5000")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora in .bench/clean")
    ap.add_argument("--read-one", help=argparse.SUPPRESS)  # child process of the formats part
    args = ap.parse_args()
    if args.read_one:
        _read_one(args.read_one)
        return 0
    if args.quick:
        args.size_mb, args.rss_mb, args.formats_mb, args.near_docs = 20, "10,40", 10, 5_000
    results = {}
    if args.part in ("all", "throughput"):
        results["throughput"] = bench_throughput(args)
    if args.part in ("all", "formats"):
        results["formats"] = bench_formats(args.formats_mb, args.workers, args.level)
    if args.part in ("all", "near-dedup"):
        results["near_dedup"] = bench_near_dedup(args.near_docs, args.workers, args.level)
        if not args.keep:
            for p in CACHE.glob("near-*"):
                shutil.rmtree(p, ignore_errors=True)
    shutil.rmtree(CACHE / "out", ignore_errors=True)
    print(json.dumps(results))
    return 0


def bench_throughput(args) -> dict:
    """clean against the gzip floor on the generated corpus, and peak RSS at two sizes."""
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
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
