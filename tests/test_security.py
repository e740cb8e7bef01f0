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


# --------------------------------------------------------------------------- configs

# Every numeric key that must refuse a negative value, by stage (a sweep: a new numeric key is
# listed here or in NEGATIVE_OK, or this test fails).
NEGATIVE_OK: set[str] = set()
PROBABILITIES = {
    "pretrain": ["data.short_seq_prob", "train.adam_beta1", "train.adam_beta2", "masking.mask_prob",
                 "model.hidden_dropout_prob", "train.min_lr_ratio"],
    "finetune": ["warmup_ratio", "classifier_dropout"],
    "eval": ["mask_prob", "mask_token_prob"],
    "clean": ["validation_fraction", "quality_filter.max_non_letter_fraction"],
}
STAGES = ["clean", "tokenize", "build_vocab", "pretrain", "finetune", "eval", "demo_task"]
BASE = {"pretrain": ["train.max_steps=1"]}


def _numeric_keys(cls, prefix=""):
    import dataclasses
    import typing

    from mlmctl.config import yaml_key

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + yaml_key(f), hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_keys(tp, key + ".")
        elif any(a in (int, float) for a in (typing.get_args(tp) or (tp,))):
            yield key, float in (typing.get_args(tp) or (tp,))


@pytest.mark.parametrize("stage", STAGES)
def test_every_numeric_key_refuses_negative_and_non_finite_values(stage):
    import importlib

    from mlmctl.config import load_config
    from mlmctl.errors import ConfigError

    cls = importlib.import_module(f"mlmctl.stages.{stage}").CONFIG
    keys = list(_numeric_keys(cls))
    assert keys
    for key, is_float in keys:
        for value in ["-1", ".inf", ".nan"] + ([] if is_float else [str(2**70)]):
            if value == "-1" and key in NEGATIVE_OK:
                continue
            with pytest.raises(ConfigError, match=f"`{key}`"):
                load_config(cls, None, BASE.get(stage, []) + [f"{key}={value}"])
    for key in PROBABILITIES.get(stage, []):
        with pytest.raises(ConfigError, match=f"`{key}`"):
            load_config(cls, None, BASE.get(stage, []) + [f"{key}=2"])


@pytest.mark.parametrize("stage, setting", [
    ("pretrain", "data.seed=-1"), ("pretrain", "train.adam_beta1=2"), ("pretrain", "train.adam_eps=-1"),
    ("pretrain", "train.weight_decay=-1"), ("pretrain", "data.short_seq_prob=2"), ("finetune", "seed=-1"),
    ("eval", "seed=-1"),
])
def test_issue_config_cases_are_one_line_naming_the_key(run_cli, tmp_path, stage, setting):
    base = [a for s in BASE.get(stage, []) for a in ("--set", s)]
    code, _, err = run_cli(stage.replace("_", "-"), "--output", tmp_path / "out", *base, "--set", setting)
    line = one_error_line(code, err)
    assert f"`{setting.split('=')[0]}`" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["a: " + "[" * 20_000, "seed: " + "9" * 5000, "\x00\xff: [", "- 1\n- 2\n"])
def test_hostile_yaml_is_one_line(run_cli, tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text, encoding="utf-8", errors="surrogateescape")
    code, _, err = run_cli("tokenize", "-c", cfg, "--output", tmp_path / "out")
    assert str(cfg) in one_error_line(code, err)
