"""Strict config loading: unknown keys with suggestions, exact types, --set, cross-field checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mlmctl.config import (
    check,
    config_hash,
    diff_keys,
    field_docs,
    format_config,
    from_dict,
    load_config,
)
from mlmctl.errors import ConfigError


@dataclass
class Train:
    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 10
    """Steps of linear warm-up."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Decay after warm-up."""

    def __post_init__(self):
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")


@dataclass
class Cfg:
    input: str = "in"
    """Input directory."""
    output: str = "out"
    """Output directory."""
    seed: int = 0
    """Random seed."""
    lowercase: bool = True
    """Lower-case text."""
    tags: list[str] = field(default_factory=list)
    """Free-form tags."""
    limit: int | None = None
    """Optional cap."""
    train: Train = field(default_factory=Train)
    """Optimisation."""


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file():
    cfg = load_config(Cfg, None)
    assert cfg.train.lr == 1e-3 and cfg.limit is None


def test_file_and_sets(tmp_path):
    p = _yaml(tmp_path, "seed: 3\ntrain:\n  lr: 2\n")
    cfg = load_config(Cfg, p, ["train.warmup_steps=5", "tags=[a, b]", "limit=7", "train.schedule=cosine"])
    assert cfg.seed == 3 and cfg.train.lr == 2.0 and isinstance(cfg.train.lr, float)
    assert load_config(Cfg, None, ["train.lr=3e-4"]).train.lr == 3e-4  # YAML 1.1 would read a string
    assert load_config(Cfg, _yaml(tmp_path, "train:\n  lr: 1E-3\n")).train.lr == 1e-3
    assert cfg.train.warmup_steps == 5 and cfg.tags == ["a", "b"] and cfg.limit == 7
    assert cfg.train.schedule == "cosine"


def test_unknown_key_suggests_closest(tmp_path):
    p = _yaml(tmp_path, "train:\n  warmup_step: 5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: `train\.warmup_step`: unknown key \(did you mean `train\.warmup_steps`\?\)"):
        load_config(Cfg, p)


def test_typo_sharing_a_word_suggests_that_key():
    with pytest.raises(ConfigError, match=r"`train\.lr_warmup`: unknown key \(did you mean `train\.warmup_steps`\?\)"):
        load_config(Cfg, None, ["train.lr_warmup=3"])


def test_key_at_wrong_level_suggests_full_path(tmp_path):
    p = _yaml(tmp_path, "lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"did you mean `train\.lr`"):
        load_config(Cfg, p)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("seed=abc", r"`seed`: expected an integer, got 'abc'"),
        ("seed=1.5", r"`seed`: expected an integer"),
        ("seed=true", r"`seed`: expected an integer"),
        ("lowercase=1", r"`lowercase`: expected true/false"),
        ("train.lr=fast", r"`train\.lr`: expected a number"),
        ("train.schedule=cosin", r"must be one of 'linear', 'cosine', got 'cosin' \(did you mean 'cosine'\?\)"),
        ("tags=a", r"`tags`: expected a list"),
        ("train=3", r"`train`: expected a mapping"),
        ("train.lr=-1", r"--set train\.lr: `train\.lr`: must be positive"),
        ("seed.x=1", r"`seed` is not a group of keys|`seed`: expected an integer"),
    ],
)
def test_bad_values_name_the_key(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, None, [setting])


def test_set_without_equals():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Cfg, None, ["seed"])


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    p = _yaml(tmp_path, "seed: 1\ntrain:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+: invalid YAML"):
        load_config(Cfg, p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Cfg, _yaml(tmp_path, "- a\n- b\n"))


@dataclass
class NeedsLimit:
    max_steps: int | None = None
    """A limit that must be set."""

    def __post_init__(self):
        check(self.max_steps is not None, "max_steps", "set it")


@dataclass
class Outer:
    train: NeedsLimit = field(default_factory=NeedsLimit)
    """A group left out of the file."""


def test_absent_group_reports_its_full_path():
    with pytest.raises(ConfigError, match=r"built-in defaults: `train\.max_steps`: set it"):
        load_config(Outer, None)
    assert load_config(Outer, None, ["train.max_steps=3"]).train.max_steps == 3


def test_from_dict_with_path_prefix():
    with pytest.raises(ConfigError, match=r"`steps\[2\]\.lr`: must be positive"):
        from_dict(Train, {"lr": -1.0}, "steps[2]")


def test_hash_ignores_locations_but_not_settings():
    a = load_config(Cfg, None)
    b = load_config(Cfg, None, ["input=elsewhere", "output=other"])
    c = load_config(Cfg, None, ["seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_diff_keys():
    assert diff_keys({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 2, "d": 2}}) == ["b.c"]


def test_field_docs_and_print_config_roundtrip(tmp_path):
    assert field_docs(Train)["lr"] == "Peak learning rate."
    text = format_config(load_config(Cfg, None, ["tags=[x]"]))
    assert "# Peak learning rate.\n  lr: 0.001" in text
    again = load_config(Cfg, _yaml(tmp_path, text))
    assert again == load_config(Cfg, None, ["tags=[x]"])


@dataclass
class Aliased:
    from_file: str | None = field(default=None, metadata={"key": "from"})
    """A file to start from (YAML key `from`, a Python keyword)."""


def test_key_alias_for_python_keywords():
    from mlmctl.config import config_to_dict

    cfg = load_config(Aliased, None, ["from=x.json"])
    assert cfg.from_file == "x.json"
    assert config_to_dict(cfg) == {"from": "x.json"}
    assert "from: x.json" in format_config(cfg)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Aliased, None, ["from_file=x.json"])


def test_all_errors_of_a_file_are_reported_together(tmp_path, run_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n  max_steps: 10\n  warmup: 3\nmodel:\n  preset: huge\nlog_every: x\n")
    code, _, err = run_cli("pretrain", "-c", bad)
    lines = err.strip().splitlines()
    assert code == 1 and all(line.startswith("mlmctl: error: ") for line in lines)
    assert ["`train.lr`" in lines[0], "`train.warmup`" in lines[1], "`model.preset`" in lines[2],
            "`log_every`" in lines[3]] == [True] * 4
    assert len(lines) == 4  # a group with bad values is not also blamed for a missing key
    # One mistake stays exactly one line.
    bad.write_text("train:\n  max_steps: 10\n  lr: fast\n")
    code, _, err = run_cli("pretrain", "-c", bad)
    assert code == 1 and err.count("\n") == 1


def test_key_with_a_line_break_is_shown_escaped_on_one_line(tmp_path, run_cli):
    p = tmp_path / "c.yaml"
    p.write_text('pretokenizer: {"a\\nb": 1}\n')
    code, _, err = run_cli("tokenize", "-c", p)
    assert code == 1 and err.count("\n") == 1 and "`pretokenizer.a\\nb`: unknown key" in err
