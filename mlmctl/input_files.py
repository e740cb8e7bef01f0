"""Files named in a config (a tokenizer, a user dictionary, a model to start from) are part of a
stage's input identity, not just their path strings.

A stage module declares them by dotted config attribute path (dataclass attribute names, not YAML
keys: build-vocab's `from` is the attribute `from_tokenizer`):

    INPUT_FILES = ("segment.user_dict",)

`read_input_files(module, cfg)` returns, for every such path that is set,
`{"segment.user_dict": {"path": "zh.dict", "sha256": "..."}}` (keyed as users write the key; a
directory is hashed as `manifest.fingerprint_parts` hashes a model directory), or raises one line
for a path that does not exist. `combine` folds them into the input hash, leaving it unchanged when
none is set, so outputs finished before a stage declared INPUT_FILES stay up to date.
`describe_change` says which one changed, for the "needs --rebuild" message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import Any

from mlmctl.config import yaml_key
from mlmctl.errors import InputError
from mlmctl.manifest import Manifest, digest, path_sha256


def read_input_files(module: ModuleType, cfg: Any) -> dict[str, dict]:
    """{key: {"path", "sha256"}} of the module's INPUT_FILES that the config sets."""
    found = {}
    for attr in getattr(module, "INPUT_FILES", ()):
        key, value = _lookup(cfg, attr)
        if value is None:
            continue
        path = Path(value)
        if not path.exists():
            raise InputError(f"{module.STAGE}: `{key}` {value} does not exist")
        try:
            found[key] = {"path": str(value), "sha256": path_sha256(path)}
        except OSError as e:
            raise InputError(f"{module.STAGE}: `{key}` {value} cannot be read ({e.strerror or e})") from None
    return found


def combine(input_hash: str | None, files: dict[str, dict]) -> str | None:
    """The input hash with the named files folded in; unchanged when there are none."""
    if not files:
        return input_hash
    return digest(input_hash or "", *(f"{key}:{files[key]['sha256']}" for key in sorted(files)))


def describe_change(old: Manifest, base_hash: str | None, files: dict[str, dict],
                    parts: dict[str, dict] | None = None) -> str:
    """What differs between the input `old` was built from and this run's: "a different input",
    naming the config-named files whose content changed at the same path, and the files read
    (`parts`, manifest.fingerprint_parts) that differ from the ones `old` records."""
    changed, unrecorded = [], []
    if combine(base_hash, _recorded(old)) != old.input_hash:
        if parts and old.input_parts:
            changed += _changed_parts(old.input_parts, parts)
        changed = changed or ["`input`"]  # the input stage's output (or the raw input) itself changed
    for key, now in sorted(files.items()):
        before = old.input_files.get(key)
        if before is None and _config_value(old.config, key) == now["path"]:
            unrecorded.append(f"`{key}` {now['path']}")  # an output of an mlmctl before INPUT_FILES
        elif before is not None and before.get("path") == now["path"] and before.get("sha256") != now["sha256"]:
            changed.append(f"`{key}` {now['path']}")
    notes = [f"{', '.join(changed)} changed since the last run"] if changed and changed != ["`input`"] else []
    if unrecorded:
        notes.append(f"the last run did not record the content of {', '.join(unrecorded)}")
    return "a different input" + (f" ({'; '.join(notes)})" if notes else "")


def input_paths(files: dict[str, dict]) -> list[Path]:
    """The files behind `files` (a directory's own files), for make's mtime bookkeeping."""
    paths = []
    for rec in files.values():
        p = Path(rec["path"])
        try:
            paths += sorted(c for c in p.iterdir() if c.is_file()) if p.is_dir() else [p]
        except OSError:
            pass  # removed since it was hashed: nothing for make to compare
    return paths


def _changed_parts(before: dict[str, dict], now: dict[str, dict]) -> list[str]:
    """`train_file` data/train.tsv, ... for each part that is new, gone, or of other content."""
    names = [n for n in now if n not in before or before[n].get("sha256") != now[n]["sha256"]]
    names += [n for n in before if n not in now]
    return [f"`{n}` {(now.get(n) or before[n]).get('path', '')}".rstrip() for n in names]


def _recorded(old: Manifest) -> dict[str, dict]:
    return {k: v for k, v in old.input_files.items() if isinstance(v.get("sha256"), str)}


def _lookup(cfg: Any, attr: str) -> tuple[str, Any]:
    """(the key as users write it, its value) of a dotted attribute path."""
    keys, value = [], cfg
    for name in attr.split("."):
        fields = {f.name: f for f in dataclasses.fields(value)}
        keys.append(yaml_key(fields[name]))  # a KeyError here is a typo in a stage's INPUT_FILES
        value = getattr(value, name)
    return ".".join(keys), value


def _config_value(config: dict, key: str) -> Any:
    """A dotted key's value in a manifest's recorded config (None when absent)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
