"""Generate docs/config-reference.md from the stage config dataclasses (their field docstrings).

`python -m mlmctl.docgen > docs/config-reference.md`; a test checks the file is current, so the
reference can never drift from the code.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from mlmctl.config import field_docs, type_name, yaml_key
from mlmctl.stages import REGISTRY
from mlmctl.stages import module as stage_module


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _rows(cls: type, prefix: str = "") -> list[str]:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append(f"| `{prefix}{yaml_key(f)}` | group | | {docs.get(f.name, '')} |")
            rows.extend(_rows(tp, f"{prefix}{yaml_key(f)}."))
            continue
        value = _default(f)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        elif isinstance(value, list):
            value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        doc = docs.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{yaml_key(f)}` | {type_name(tp)} | `{shown}` | {doc} |")
    return rows


def render() -> str:
    out = [
        "# Config reference",
        "",
        "Every key of every stage config, its type, default and meaning. Generated from the code by",
        "`python -m mlmctl.docgen > docs/config-reference.md` (a test fails when it is out of date).",
        "Set keys in the stage's YAML file or with `--set a.b=value`; `mlmctl STAGE --print-config`",
        "shows the resolved values.",
        "",
    ]
    for spec in REGISTRY:
        module = stage_module(spec)
        out += [f"## `mlmctl {module.STAGE}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += _rows(module.CONFIG)
        extra = getattr(module, "SUB_CONFIGS", {})
        for title, cls in extra.items():
            out += ["", f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
            out += _rows(cls)
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
