"""Issue 8 regressions: hostile inputs, configs and model directories end in one clear line
(or cleaned and counted), never a traceback, a crash of a whole run or a silently wrong result."""

from __future__ import annotations

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
NEGATIVE_OK: set[str] = {"tag_column"}  # -1 = the last column (Python indexing), -100 .. 100 accepted
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


# --------------------------------------------------------------------------- model directories


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from test_labelled import make_tiny_model_dir

    root = tmp_path_factory.mktemp("md")
    return make_tiny_model_dir(root, ["the cat sat on the mat", "a dog ran in the park"] * 10, hidden=16, layers=1)


def _copy(model_dir, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "m"
    shutil.copytree(model_dir, dst)
    return dst


def _fill(run_cli, d) -> str:
    return one_error_line(*run_cli("fill-mask", d, "the [MASK] sat")[::2])


@pytest.mark.parametrize("change, key", [
    ({"num_attention_heads": 0}, "num_attention_heads"), ({"vocab_size": -5}, "vocab_size"),
    ({"num_hidden_layers": -1}, "num_hidden_layers"), ({"num_attention_heads": 3}, "num_attention_heads"),
    ({"hidden_size": "16"}, "hidden_size"), ({"hidden_dropout_prob": 7}, "hidden_dropout_prob"),
    ({"vocab_size": 10**12, "hidden_size": 4096, "num_attention_heads": 64}, "parameters"),
    ({"num_hidden_layers": 10**6, "intermediate_size": 10**6}, "parameters"),
])
def test_impossible_config_json_is_one_line_naming_file_and_key(run_cli, model_dir, tmp_path, change, key):
    d = _copy(model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    line = _fill(run_cli, d)
    assert "config.json" in line and key in line


@pytest.mark.parametrize("text", ["[1, 2]", "{" * 50_000, '{"vocab_size": ' + "9" * 5000 + "}", "\xff\xfe"])
def test_config_json_not_an_object_is_one_line(run_cli, model_dir, tmp_path, text):
    d = _copy(model_dir, tmp_path)
    (d / "config.json").write_bytes(text.encode("latin-1"))
    assert "config.json" in _fill(run_cli, d)


def test_tokenizer_larger_than_the_embedding_is_refused(run_cli, model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "vocab_size": 10}))
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    for k in list(sd):
        if "word_embeddings" in k or k.endswith("predictions.bias"):
            sd[k] = sd[k][:10].clone()
    save_file(sd, str(d / "model.safetensors"))
    line = _fill(run_cli, d)
    assert "tokenizer.json" in line and "vocab_size is 10" in line


def test_broken_tokenizer_json_is_one_line(run_cli, model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    (d / "tokenizer.json").write_text("not json {")
    assert "tokenizer.json" in _fill(run_cli, d)


def test_pickled_weights_are_refused_without_torch_advice(run_cli, model_dir, tmp_path):
    import torch

    d = _copy(model_dir, tmp_path)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, d / "pytorch_model.bin")
    line = _fill(run_cli, d)
    assert "never loads pickles" in line and "safetensors" in line and "weights_only" not in line
    assert not marker.exists()


@pytest.mark.parametrize("where", ["../outside.safetensors", "/abs/outside.safetensors", "link"])
def test_safetensors_index_pointing_outside_is_refused(run_cli, model_dir, tmp_path, where):
    d = _copy(model_dir, tmp_path)
    outside = tmp_path / "outside.safetensors"
    (d / "model.safetensors").rename(outside)
    if where == "link":
        (d / "shard.safetensors").symlink_to(outside)
        where = "shard.safetensors"
    elif where.startswith("/abs"):
        where = str(outside)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": where}}))
    line = _fill(run_cli, d)
    assert "outside" in line and "refused" in line


# --------------------------------------------------------------------------- build-vocab directories


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "stages"))
    from test_tokenize import make_clean_dir, sample_docs

    from mlmctl.cli import main

    tmp = tmp_path_factory.mktemp("vd")
    clean = make_clean_dir(tmp / "clean", sample_docs(30, seed=3), shards=1)
    assert main(["tokenize", "--input", str(clean), "--output", str(tmp / "tok")]) == 0
    assert main(["build-vocab", "--input", str(tmp / "tok"), "--output", str(tmp / "vocab"),
                 "--set", "vocab_size=200", "--set", "min_frequency=1"]) == 0
    return tmp / "vocab"


def _rewrite(vdir: Path, tmp_path: Path, damage) -> Path:
    """Copy, damage, and rewrite manifest.json so sizes and hashes match the damage."""
    import shutil

    from mlmctl.shards import file_sha256

    d = tmp_path / "v"
    shutil.copytree(vdir, d)
    man = json.loads((d / "manifest.json").read_text())
    damage(d, man)
    for info in man["shards"] + man["files"]:
        p = d / info["name"]
        info["bytes"], info["sha256"] = p.stat().st_size, file_sha256(p)
    (d / "manifest.json").write_text(json.dumps(man))
    return d


def _truncate(d, man):
    s = next(s for s in man["shards"] if s["name"].endswith(".ids.bin"))
    p = d / s["name"]
    p.write_bytes(p.read_bytes()[:-20])


def _big_ids(d, man):
    s = next(s for s in man["shards"] if s["name"].endswith(".ids.bin"))
    p = d / s["name"]
    p.write_bytes(p.read_bytes()[:-2] + (60000).to_bytes(2, "little"))
    s["records"]["max_id"] = 60000


def _offsets(d, man):
    import numpy as np

    p = d / "train" / "sent_offsets.bin"
    a = np.fromfile(p, dtype="<i8")
    a[-1] += 1000
    a.tofile(p)


def _tokenizer(d, man):
    (d / "tokenizer.json").write_text("{not json")


@pytest.mark.parametrize("damage, words", [(_truncate, "tokens recorded"), (_big_ids, "beyond the vocabulary"),
                                           (_offsets, "offsets"), (_tokenizer, "tokenizer")])
def test_damaged_vocab_dir_with_matching_manifest_is_refused(vocab_dir, tmp_path, damage, words):
    from mlmctl.errors import InputError
    from mlmctl.token_ids import open_vocab_dir

    d = _rewrite(vocab_dir, tmp_path, damage)
    with pytest.raises(InputError, match=words):
        open_vocab_dir(d).split("train")  # the offsets are checked when a split is opened


def test_vocab_manifest_records_max_id(vocab_dir):
    import numpy as np

    man = json.loads((vocab_dir / "manifest.json").read_text())
    for s in man["shards"]:
        if s["name"].endswith(".ids.bin"):
            assert s["records"]["max_id"] == int(np.fromfile(vocab_dir / s["name"], dtype="<u2").max())


# --------------------------------------------------------------------------- labelled and text files


def test_labelled_hostile_records_name_the_line(tmp_path):
    from mlmctl.errors import InputError
    from mlmctl.labelled import read_labelled, read_text_docs

    cases = {
        "deep.jsonl": ('{"text": "a", "label": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n", r"deep.jsonl:2: nested"),
        "huge.jsonl": ('{"text": "a", "label": ' + "1" * 5000 + "}\n", r"huge.jsonl:1: a number too large"),
        "big.tsv": ("text\tlabel\nok\t1\n" + "x" * 200_000 + "\t1\n", r"big.tsv:3: a field is longer than max_field_chars"),
        "plain.tsv.gz": ("text\tlabel\nok\t1\n", r"named .gz but not gzip"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(InputError, match=match):
            read_labelled(tmp_path / name, max_field_chars=100_000)
    assert len(read_labelled(tmp_path / "big.tsv", max_field_chars=300_000)) == 2  # within the limit
    (tmp_path / "bad.txt").write_bytes(b"fine text\n\nmore \xff text\n")
    with pytest.raises(InputError, match=r"eval: .*bad.txt:3: invalid UTF-8"):
        read_text_docs(tmp_path / "bad.txt", "eval")
