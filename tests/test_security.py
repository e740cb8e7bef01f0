"""Issue 8 regressions: hostile inputs, configs and model directories end in one clear line
(or cleaned and counted), never a traceback, a crash of a whole run or a silently wrong result."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
GOOD = "The committee met on Tuesday to discuss the new library budget and the opening hours."


def one_error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("mlmctl: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- clean


def test_clean_directory_with_hostile_files_finishes_and_counts_them(run_cli, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.txt").write_text(GOOD + "\n")
    (raw / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps({"text": GOOD + " Two."}) + "\n")
    (raw / "huge.jsonl").write_text('{"text": ' + "7" * 5000 + "}\n")
    (raw / "image.txt").write_bytes(PNG)
    (raw / "plain.txt.gz").write_text(GOOD + " Three.\n")
    (raw / "dangling.txt").symlink_to(tmp_path / "nowhere")
    (raw / "loop.txt").symlink_to(raw / "loop.txt")
    out = tmp_path / "out"
    code, _, err = run_cli("clean", "--input", raw, "--output", out, "--set", "validation_fraction=0")
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_out"]["total"] == 3
    read = stats["dropped"]["read"]
    assert read["too_deep"]["documents"] == 1 and read["number_too_large"]["documents"] == 1
    assert read["binary_file"]["documents"] == 1
    assert stats["read"]["files_named_gz_not_gzip"] == 1
    assert stats["read"]["skipped_files"] == {"broken_link": 1, "link_loop": 1}
    listed = {(Path(s["file"]).name, s["line"], s["reason"]) for s in stats["skipped"]}
    assert {("deep.jsonl", 1, "too_deep"), ("huge.jsonl", 1, "number_too_large"), ("image.txt", 1, "binary_file"),
            ("dangling.txt", 0, "broken_link"), ("loop.txt", 0, "link_loop")} <= listed
