"""`manifest.json`: written last by a stage, it is what makes a directory a finished stage.

It records the stage name, the mlmctl version, the resolved config and its hash, the hash of the
input's manifest, and every file with its size and sha256. A directory without one is unfinished;
a file whose bytes no longer match is tampered with: `read_manifest` refuses both with one line
that says which stage to rerun.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlmctl import __version__, safe_json
from mlmctl.errors import InputError
from mlmctl.layout import MANIFEST
from mlmctl.shards import ShardInfo, atomic_write_json, file_sha256, inside

FORMAT = 1


@dataclass
class Manifest:
    stage: str
    config: dict
    config_hash: str
    input_hash: str | None
    shards: list[ShardInfo] = field(default_factory=list)
    files: list[ShardInfo] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    input_files: dict[str, dict] = field(default_factory=dict)
    """{config key: {"path", "sha256"}} of the files the config names that were read (stage INPUT_FILES);
    folded into `input_hash`, kept here so a rerun can say which one changed."""
    input_parts: dict[str, dict] = field(default_factory=dict)
    """{name: {"path", "sha256"}} of what a stage without an input stage read (a model directory's
    files, the labelled files: `fingerprint_parts`); `input_hash` is their digest."""
    version: str = __version__
    format: int = FORMAT

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def records(self, key: str, split: str | None = None) -> int:
        """Total of a record count over the shards (of one split, if given)."""
        return sum(s.records.get(key, 0) for s in self.shards if split is None or s.split == split)

    def to_dict(self) -> dict:
        d = {
            "format": self.format,
            "stage": self.stage,
            "version": self.version,
            "config": self.config,
            "config_hash": self.config_hash,
            "input_hash": self.input_hash,
            "shards": [s.to_dict() for s in self.shards],
            "files": [s.to_dict() for s in self.files],
            "extra": self.extra,
        }
        if self.input_files:  # only then: every other manifest stays as it was
            d["input_files"] = self.input_files
        if self.input_parts:
            d["input_parts"] = self.input_parts
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        return cls(
            stage=d["stage"],
            config=d["config"],
            config_hash=d["config_hash"],
            input_hash=d.get("input_hash"),
            shards=[ShardInfo.from_dict(s) for s in d.get("shards", [])],
            files=[ShardInfo.from_dict(s) for s in d.get("files", [])],
            extra=d.get("extra", {}),
            input_files=_input_files(d.get("input_files", {})),
            input_parts=_input_files(d.get("input_parts", {})),
            version=d.get("version", "?"),
            format=d.get("format", FORMAT),
        )


def _input_files(value: Any) -> dict[str, dict]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise TypeError("input_files")  # read_manifest: a damaged manifest
    return value


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    atomic_write_json(Path(directory) / MANIFEST, manifest.to_dict())


def manifest_hash(directory: str | Path) -> str:
    """sha256 of the manifest's bytes: the identity of a finished stage directory."""
    return file_sha256(Path(directory) / MANIFEST)


def read_manifest(
    directory: str | Path,
    expect_stage: str | tuple[str, ...] | None = None,
    *,
    reader: str = "mlmctl",
    verify: bool = True,
) -> Manifest:
    """Load and check a stage directory's manifest; `reader` names who asks, for messages.

    With `verify`, every listed file must exist with the recorded size and sha256.
    """
    directory = Path(directory)
    expected = (expect_stage,) if isinstance(expect_stage, str) else expect_stage
    upstream = expected[0] if expected else "the upstream stage"
    if not directory.exists():
        raise InputError(f"{reader}: input {directory} does not exist; run `mlmctl {upstream}` first or pass --input")
    if not directory.is_dir():
        raise InputError(f"{reader}: input {directory} is not a directory")
    path = directory / MANIFEST
    if not path.exists():
        raise InputError(
            f"{reader}: {directory} has no {MANIFEST} (stage '{upstream}' did not finish); "
            f"rerun `mlmctl {upstream}`"
        )
    try:
        manifest = Manifest.from_dict(safe_json.loads(path.read_bytes()))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):  # safe_json.JSONError is a ValueError
        raise InputError(f"{reader}: {path} is damaged (not a valid manifest); rerun `mlmctl {upstream} --force`") from None
    check_names(directory, manifest, where=f"{reader}: {path}")
    if expected and manifest.stage not in expected:
        raise InputError(
            f"{reader}: {directory} holds the output of stage '{manifest.stage}', "
            f"expected {' or '.join(repr(s) for s in expected)}"
        )
    if verify:
        verify_files(directory, manifest, reader=reader)
    return manifest


def check_names(directory: Path, manifest: Manifest, *, where: str) -> None:
    """Every name the manifest lists is a path inside `directory` (no `..`, absolute path, link out)."""
    for info in manifest.shards + manifest.files:
        inside(directory, info.name, where=where)


def load_manifest_names(directory: str | Path, stage: str) -> set[str] | None:
    """The file names a parseable mlmctl manifest of `stage` in `directory` lists, or None when
    there is no such manifest (missing, not JSON, not ours, another stage, a name leading out)."""
    directory = Path(directory)
    try:
        data = safe_json.loads((directory / MANIFEST).read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("format"), int) or "config_hash" not in data:
            return None
        manifest = Manifest.from_dict(data)
        check_names(directory, manifest, where=str(directory / MANIFEST))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, InputError):
        return None
    if manifest.stage != stage:
        return None
    return {info.name for info in manifest.shards + manifest.files}


def verify_files(directory: Path, manifest: Manifest, *, reader: str = "mlmctl", full: bool = True) -> None:
    """Every listed file exists with its recorded size (and, when `full`, its sha256)."""
    for info in manifest.shards + manifest.files:
        path = inside(directory, info.name, where=f"{reader}: {directory / MANIFEST}")
        rerun = f"rerun `mlmctl {manifest.stage} --force`"
        if not path.is_file():
            raise InputError(f"{reader}: {path} is listed in {directory / MANIFEST} but missing; {rerun}")
        if path.stat().st_size != info.bytes:
            raise InputError(f"{reader}: {path} has changed since '{manifest.stage}' wrote it (size differs); {rerun}")
        if full and file_sha256(path) != info.sha256:
            raise InputError(f"{reader}: {path} has changed since '{manifest.stage}' wrote it (sha256 differs); {rerun}")


def digest(*parts: str) -> str:
    """sha256 over strings: for stages whose input is not a stage directory (raw files, a model)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _model_file_parts(model_dir: Path) -> dict[str, dict]:
    """`model/NAME` -> {path, sha256} of a model directory's files (config, weights, tokenizer, vocabulary)."""
    parts = {}
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.name.endswith((".json", ".safetensors", ".txt", ".bin")):
            parts[f"model/{p.name}"] = {"path": str(p), "sha256": file_sha256(p)}
    return parts


def parts_digest(parts: dict[str, dict]) -> str:
    """The input hash of `fingerprint_parts`' answer (in its order)."""
    return digest(*(f"{name}:{part['sha256']}" for name, part in parts.items()))


def path_sha256(path: Path) -> str:
    """A file's sha256; for a directory, the digest of its files as `fingerprint_parts` reads a
    model directory (a run directory's manifest.json stands for the files it lists)."""
    return parts_digest(_model_file_parts(path)) if path.is_dir() else file_sha256(path)


def fingerprint_parts(reader: str, model_dir: Path, named_files: list[tuple[str, str | None]]) -> dict[str, dict]:
    """What a stage whose input is no stage directory reads (finetune, eval, glue): a model
    directory's files and the named files, each with its sha256; `parts_digest` is its input hash,
    and the manifest keeps the parts so that a rerun can name the file that changed."""
    parts = _model_file_parts(model_dir)
    for key, path in named_files:
        if path is None:
            continue
        if not Path(path).is_file():
            raise InputError(f"{reader}: `{key}` {path} does not exist")
        parts[key] = {"path": str(path), "sha256": file_sha256(path)}
    return parts
