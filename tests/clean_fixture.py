"""Clean-stage shards for tests of the stages that read them, written with clean's own writer."""

from __future__ import annotations

from pathlib import Path

from mlmctl.layout import shard_name
from mlmctl.shards import GZIP_OS_UNIX, ShardInfo, atomic_gzip


def write_clean_shard(root: Path, split: str, index: int, lines: list[str]) -> ShardInfo:
    """`root/<split>/shard-<index>.jsonl.gz` holding `lines` (one JSON record each), as clean writes it."""
    name = f"{split}/{shard_name(index, '.jsonl.gz')}"
    with atomic_gzip(root / name, 6, GZIP_OS_UNIX) as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))
    return ShardInfo.of_file(root, name, split, {"docs": len(lines)})
