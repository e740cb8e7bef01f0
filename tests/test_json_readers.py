"""Every JSON mlmctl reads back from disk goes through mlmctl.safe_json: a crafted file (nested
100,000 deep, a 5,000-digit number, not an object) is skipped, recomputed or one line, never a
RecursionError traceback. A shard's bytes are checked against its manifest, but a manifest can
be rewritten to match, so the checks hold for crafted stage directories too."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent / "stages"))
from test_tokenize import make_clean_dir, sample_docs  # noqa: E402

HOSTILE_LINES = {
    "deep": b'{"text": "a b c", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "huge number": b'{"text": "a b c", "id": ' + b"9" * 5000 + b"}",
    "not an object": b'["a", "b"]',
    "not JSON": b'{"text": "a b c"',
}


def test_no_json_parsing_outside_safe_json():
    """The one home: `json.loads`/`json.load` appear in mlmctl/safe_json.py only."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "mlmctl").rglob("*.py")) if p.name != "safe_json.py"
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"(?<![\w.])json\.loads?\(", line)]
    assert not offenders, f"parse untrusted JSON with mlmctl.safe_json: {offenders}"


def _crafted_clean(tmp_path: Path, line: bytes) -> Path:
    """A finished clean directory whose first train shard holds `line`, its manifest rewritten to match."""
    clean = make_clean_dir(tmp_path / "clean", sample_docs(30, seed=3), shards=1)
    manifest = json.loads((clean / "manifest.json").read_text())
    shard = next(s for s in manifest["shards"] if s["split"] == "train")
    path = clean / shard["name"]
    good = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(line + b"\n" + good))
    shard.update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    (clean / "manifest.json").write_text(json.dumps(manifest))
    return clean


@pytest.mark.parametrize("kind", list(HOSTILE_LINES))
@pytest.mark.parametrize("stage", ["tokenize", "demo-task"])
def test_a_crafted_clean_shard_line_is_one_line_naming_it(tmp_path, run_cli, stage, kind):
    clean = _crafted_clean(tmp_path, HOSTILE_LINES[kind])
    code, _, err = run_cli(stage, "--input", clean, "--output", tmp_path / "out")
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith(f"mlmctl: error: {stage}: ") and "shard-00000" in err and ":1" in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "manifest.json").exists()
