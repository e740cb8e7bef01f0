"""A tiny stage used to test the runner: upper-cases every line of the .txt files in `input`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlmctl.manifest import digest
from mlmctl.layout import shard_name
from mlmctl.shards import ShardInfo, atomic_gzip


@dataclass
class ToyConfig:
    input: str = "raw"
    """Directory of .txt files."""
    output: str = "out"
    """Stage directory to write."""
    max_shard_bytes: int = 64
    """Shard size bound (uncompressed bytes)."""
    suffix: str = "!"
    """Appended to every line."""


CONFIG = ToyConfig
STAGE = "toy"
INPUT_STAGE = None


def input_fingerprint(cfg: ToyConfig) -> str:
    files = sorted(Path(cfg.input).glob("*.txt"))
    return digest(*(f"{f.name}:{f.read_text()}" for f in files))


def _upper(unit, part: Path) -> dict:
    path, suffix, max_bytes = unit
    crash_at = os.environ.get("TOY_CRASH_AT")
    if crash_at and Path(path).name == crash_at:
        raise RuntimeError("simulated crash")
    if os.environ.get("TOY_SLEEP"):  # a slow unit, for tests that kill a run in flight
        _wait_here(os.environ.get("TOY_SLEEP_MARK"), float(os.environ["TOY_SLEEP"]))
    lines = Path(path).read_text().splitlines()
    # A shard closes at the first line past the bound, so a line never straddles two shards.
    groups, size = [[]], 0
    for line in lines:
        if size >= max_bytes:
            groups.append([])
            size = 0
        groups[-1].append((line.upper() + suffix + "\n").encode("utf-8"))
        size += len(groups[-1][-1])
    shards = []
    for i, group in enumerate(g for g in groups if g):
        name = f"train/{shard_name(i, '.txt.gz')}"
        with atomic_gzip(part / name, 1) as gz:
            for line in group:
                gz.write(line)
        shards.append(ShardInfo.of_file(part, name, "train", {"lines": len(group)}).to_dict())
    return {"lines": len(lines), "shards": shards}


def _wait_here(marks: str | None, seconds: float) -> None:
    """Hold a run in flight for a test: a file named by this PID in the folder `marks` says it is
    here; it goes on after `seconds`, or as soon as the file TOY_RELEASE names exists."""
    import time

    if marks:
        (Path(marks) / str(os.getpid())).touch()
    release = Path(os.environ.get("TOY_RELEASE") or "/nonexistent/toy-release")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not release.exists():
        time.sleep(0.01)


def run(ctx):
    if os.environ.get("TOY_HOLD_MARK"):  # a run that got past the output checks waits here
        _wait_here(os.environ["TOY_HOLD_MARK"], 600)
    cfg = ctx.cfg
    files = sorted(str(p) for p in Path(cfg.input).glob("*.txt"))
    results = ctx.run_units(_upper, [(f, cfg.suffix, cfg.max_shard_bytes) for f in files])
    if results is None:
        return None
    shards, index = [], 0
    for r in results:
        for s in r.result["shards"]:
            name = f"train/shard-{index:05d}.txt.gz"
            shards.append(ctx.place(r.dir / s["name"], name, "train", s["records"], s["sha256"]))
            index += 1
    ctx.finish(shards, extra={"lines": sum(r.result["lines"] for r in results)})
    return {"lines": sum(r.result["lines"] for r in results), "shards": len(shards),
            "first shard": str(ctx.output_dir / "train" / "shard-00000.txt.gz")}
