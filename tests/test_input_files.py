"""Files named in a config (INPUT_FILES) are part of a stage's input identity: same path, new bytes
is "a different input" naming the key; the same bytes rewritten stay up to date."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).parent / "stages"))  # the stage tests' fixtures
from test_build_vocab import build  # noqa: E402
from test_tokenize import make_clean_dir, sample_docs  # noqa: E402

from mlmctl.cli import main  # noqa: E402
from mlmctl.manifest import manifest_hash, read_manifest  # noqa: E402


@pytest.fixture(scope="module")
def two_vocabs(tmp_path_factory):
    """A tokenize output, its vocabulary directory, and two different tokenizer.json files that fit it."""
    tmp = tmp_path_factory.mktemp("vocabs")

    def cli(*args):  # run_cli is function-scoped
        return main([str(a) for a in args]), "", ""

    a = build(cli, tmp / "a", sample_docs(40, seed=1), shards=1, vocab_size=300)
    b = build(cli, tmp / "b", sample_docs(40, seed=2), shards=1, vocab_size=320)
    assert (a / "tokenizer.json").read_bytes() != (b / "tokenizer.json").read_bytes()
    return tmp / "a" / "tok", a, b / "tokenizer.json"


def test_build_vocab_from_file_changed_in_place_needs_rebuild(tmp_path, run_cli, two_vocabs):
    tok, vocab, second = two_vocabs
    first = vocab / "tokenizer.json"
    shutil.copy(first, tmp_path / "tok.json")

    def bv(*args):
        return run_cli("build-vocab", "--input", tok, "--output", tmp_path / "out",
                       "--set", f"from={tmp_path / 'tok.json'}", *args)

    assert bv()[0] == 0
    manifest = read_manifest(tmp_path / "out")
    assert set(manifest.input_files) == {"from"}  # recorded under the key users write, not the attribute
    # The same bytes written again (a newer mtime): still up to date, and the manifest is made newer
    # than tok.json so that make stops rerunning the recipe.
    made = (tmp_path / "out" / "manifest.json").stat().st_mtime
    os.utime(tmp_path / "out" / "manifest.json", (made - 100, made - 100))
    (tmp_path / "tok.json").write_bytes(first.read_bytes())
    code, _, err = bv()
    assert code == 0 and "up to date" in err, err
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime >= (tmp_path / "tok.json").stat().st_mtime
    # Another valid tokenizer at the same path: not up to date, and the message names `from`.
    shutil.copy(second, tmp_path / "tok.json")
    code, _, err = bv()
    assert code == 1 and "--rebuild" in err and f"`from` {tmp_path / 'tok.json'}" in err and "changed" in err, err
    assert "different config" not in err and len(err.strip().splitlines()) == 1
    assert bv("--rebuild")[0] == 0
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == second.read_bytes()  # the stale ids are gone
    assert bv()[0] == 0


def test_input_files_leave_the_hash_alone_when_unset(tmp_path, run_cli):
    """Outputs finished before INPUT_FILES existed (none set) stay up to date: no `input_files`."""
    clean = make_clean_dir(tmp_path / "clean", sample_docs(10, seed=3), shards=1)
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "t")[0] == 0
    raw = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert "input_files" not in raw
    assert raw["input_hash"] == manifest_hash(clean)


def test_tokenize_user_dict_changed_is_not_up_to_date(tmp_path, run_cli):
    pytest.importorskip("rjieba")
    clean = make_clean_dir(tmp_path / "clean", ["小明在深度求索公司工作。"] * 3, shards=1)
    user = tmp_path / "user.dict"
    user.write_text("深度求索 10 nz\n", encoding="utf-8")

    def tok(*args):
        return run_cli("tokenize", "--input", clean, "--output", tmp_path / "t", "--set", "segment.kind=jieba",
                       "--set", f"segment.user_dict={user}", *args)

    assert tok()[0] == 0
    assert tok()[0] == 0
    user.write_text("求索公司 10 nz\n", encoding="utf-8")
    code, _, err = tok()
    assert code == 1 and "`segment.user_dict`" in err and "changed" in err, err


def test_missing_named_file_is_one_line_before_any_work(tmp_path, run_cli, two_vocabs):
    tok, vocab, _ = two_vocabs
    missing = tmp_path / "nope.json"
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", tmp_path / "out", "--set", f"from={missing}")
    assert code == 1 and err.strip() == f"mlmctl: error: build-vocab: `from` {missing} does not exist", err
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli("pretrain", "--input", vocab, "--output", tmp_path / "p",
                           "--set", "train.max_steps=1", "--set", f"model.init_from={tmp_path / 'no-model'}")
    assert code == 1 and err.strip() == f"mlmctl: error: pretrain: `model.init_from` {tmp_path / 'no-model'} does not exist"
    assert not (tmp_path / "p").exists()


def test_output_of_an_older_mlmctl_names_the_unrecorded_file(tmp_path, run_cli, two_vocabs):
    """A manifest written before INPUT_FILES (no `input_files`, the input's hash alone) with `from`
    set: the rerun needs --rebuild once, and says why."""
    tok, vocab, _ = two_vocabs
    args = ("build-vocab", "--input", tok, "--output", tmp_path / "out", "--set", f"from={vocab / 'tokenizer.json'}")
    assert run_cli(*args)[0] == 0
    path = tmp_path / "out" / "manifest.json"
    raw = json.loads(path.read_text())
    raw.pop("input_files")
    raw["input_hash"] = manifest_hash(tok)
    path.write_text(json.dumps(raw))
    code, _, err = run_cli(*args)
    assert code == 1 and f"did not record the content of `from` {vocab / 'tokenizer.json'}" in err, err


def test_a_named_directory_is_hashed_by_its_model_files(tmp_path):
    """pretrain's `model.init_from` names a model directory: new weights there are a new input."""
    from mlmctl.config import load_config
    from mlmctl.input_files import combine, read_input_files
    from mlmctl.stages import pretrain

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights-1")
    (model / "notes.md").write_text("not a model file")
    cfg = load_config(pretrain.CONFIG, None, ["train.max_steps=1", f"model.init_from={model}"])
    first = read_input_files(pretrain, cfg)
    assert list(first) == ["model.init_from"] and combine("h", first) != "h"
    (model / "notes.md").write_text("edited")
    assert read_input_files(pretrain, cfg) == first
    (model / "model.safetensors").write_bytes(b"weights-2")
    assert read_input_files(pretrain, cfg)["model.init_from"]["sha256"] != first["model.init_from"]["sha256"]
    assert combine("h", {}) == "h"


def test_finetune_names_the_file_that_changed(tmp_path, run_cli):
    """Stages whose input is files, not a stage directory (finetune, eval, glue), keep what they read
    file by file: a changed labelled file or model file is named, and the hash is the old formula."""
    from test_finetune import task_rows, write_tsv
    from test_labelled import make_tiny_model_dir

    from mlmctl.manifest import digest, file_sha256

    train, dev = task_rows(40, 1), task_rows(20, 2)
    model = make_tiny_model_dir(tmp_path, [t for t, _ in train])
    files = {"train": write_tsv(tmp_path / "train.tsv", train), "dev": write_tsv(tmp_path / "dev.tsv", dev)}

    def ft(*more):
        return run_cli("finetune", "--input", model, "--output", tmp_path / "run", "--set", f"train_file={files['train']}",
                       "--set", f"dev_file={files['dev']}", "--set", "max_steps=2", "--set", "threads=1", "--set", "max_seq_len=32", *more)

    code, _, err = ft()
    assert code == 0, err
    manifest = read_manifest(tmp_path / "run")
    assert {"train_file", "dev_file", "model/config.json", "model/model.safetensors"} <= set(manifest.input_parts)
    # The hash is the formula of the mlmctl before parts were kept: its outputs stay up to date.
    weights = sorted(p for p in model.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".txt", ".bin"))
    assert manifest.input_hash == digest(*[f"model/{p.name}:{file_sha256(p)}" for p in weights],
                                         f"train_file:{file_sha256(files['train'])}", f"dev_file:{file_sha256(files['dev'])}")

    write_tsv(files["dev"], dev[:-1])
    code, _, err = ft()
    assert code == 1 and f"`dev_file` {files['dev']} changed since the last run" in err and "train_file" not in err, err
    write_tsv(files["dev"], dev)
    assert "up to date" in ft()[2]
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    code, _, err = ft()
    assert code == 1 and "`model/config.json`" in err and "dev_file" not in err, err
