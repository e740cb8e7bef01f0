"""Every shipped YAML under configs/ loads strictly, and the generated config reference is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmctl.config import load_config
from mlmctl.stages import REGISTRY
from mlmctl.stages import module as stage_module

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# configs/<set>/<file>.yaml -> stage module; files named after their stage, with variants allowed
# as `<stage>-<variant>.yaml` (e.g. eval-mlm.yaml).
def _module_for(path: Path):
    stem = path.stem
    for spec in sorted(REGISTRY, key=lambda s: len(s.command), reverse=True):
        if stem == spec.command or stem.startswith(spec.command + "-"):
            return stage_module(spec)
    return None


def test_there_are_configs():
    assert any(p.parent.name == "demo" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_loads_strictly(path):
    module = _module_for(path)
    if module is None:
        pytest.skip(f"{path.name} is not a stage config (e.g. a model preset)")
    load_config(module.CONFIG, path)


def test_config_reference_is_current():
    from mlmctl.docgen import render

    current = (ROOT / "docs" / "config-reference.md").read_text()
    assert current == render(), "docs/config-reference.md is stale: python -m mlmctl.docgen > docs/config-reference.md"
