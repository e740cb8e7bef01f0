"""Parsing JSON that mlmctl did not write itself (or that may have been altered since): the one home.

Python's `json` fails on hostile input in ways its `JSONDecodeError` does not cover: a value
nested 100,000 deep raises `RecursionError`, an integer of 5,000 digits raises a plain
`ValueError` ("Exceeds the limit"), bytes that are not UTF-8 raise `UnicodeDecodeError`. Every
reader of untrusted JSON goes through `loads` (one record: the caller skips and counts it, or
names the file and line) or `read_json_file` (a whole file: one `InputError` line naming it).

    rec = loads(line)                       # JSONError(reason) on anything but valid JSON
    cfg = read_json_file(path, "finetune")  # InputError "finetune: PATH: invalid JSON (...); ..."
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlmctl.errors import InputError

# Deeper than any file mlmctl or HF writes (config.json, tokenizer.json: < 10 levels), and far
# below the interpreter's recursion limit, so code that walks the parsed value cannot overflow.
MAX_DEPTH = 64


class JSONError(ValueError):
    """Untrusted JSON that cannot be used; `reason` is a short, stable tag for stats."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that raises only `JSONError` (reason `malformed_json`, `too_deep` or
    `number_too_large`)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONError("too_deep", "nested too deeply") from None
    except json.JSONDecodeError as e:
        raise JSONError("malformed_json", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise JSONError("malformed_json", f"invalid UTF-8 at byte {e.start}") from None
    except ValueError as e:  # an integer over sys.get_int_max_str_digits() digits
        raise JSONError("number_too_large", f"a number too large to read ({str(e).split(':')[0]})") from None
    if _depth_exceeds(value, max_depth):
        raise JSONError("too_deep", f"nested more than {max_depth} levels deep")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative (a recursive walk is what we guard against), and cheap for flat records."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False


def read_json_file(path: str | Path, reader: str, *, expect: type | None = dict, fix: str = "") -> Any:
    """Parse a whole JSON file; any problem is one `InputError` naming the reader and the file.

    `expect`: the type the top level must have (None: any). `fix`: what to tell the user to do.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{reader}: cannot read {path} ({e.strerror or e}){hint}") from None
    try:
        value = loads(raw)
    except JSONError as e:
        raise InputError(f"{reader}: {path}: {e}{hint}") from None
    if expect is not None and not isinstance(value, expect):
        want = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
        raise InputError(f"{reader}: {path}: expected {want} at the top level, got {_kind(value)}{hint}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number")
