"""demo-task `kind: tagging`: code markup removed and tagged, documents dealt whole to splits,
the CLI writes CoNLL files that finetune reads."""

from __future__ import annotations

import json

import pytest

from mlmctl.demo_tagging import build_tagging_task, conll_text, tag_words
from mlmctl.errors import InputError
from mlmctl.stages.demo_task import DemoTaskConfig
from mlmctl.tagging import read_tagged


@pytest.mark.parametrize("text, words, tags", [
    ("Call ``json.dumps`` on it.", "Call json . dumps on it .", "O B I I O O O"),
    ("See :func:`open` and `key`", "See open and key", "O B O B"),
    ("the :class:`~logging.Logger` class", "the logging . Logger class", "O B I I O"),
    ("a `link <https://x.org>`_ here", "a link _ here", "O B O O"),
    ("no code at all", "no code at all", "O O O O"),
])
def test_markup_is_removed_and_its_words_tagged(text, words, tags):
    w, t = tag_words(text)
    assert w == words.split()
    assert t == [{"B": "B-CODE", "I": "I-CODE"}.get(x, x) for x in tags.split()]
    assert "`" not in " ".join(w)


def _records(n):
    return [{"id": f"d{i}", "source": "python-docs:x",
             "text": " ".join(f"w{j}" for j in range(i % 7 + 10)) + f" returns ``value{i % 5}`` when set. "
                     + " ".join(f"v{j}" for j in range(30))}
            for i in range(n)]


def test_documents_are_dealt_whole_and_deterministically():
    cfg = DemoTaskConfig(kind="tagging", max_words=16, min_words=4, test_sentences=10, dev_sentences=5,
                         train_sentences=20, min_train_sentences=5)
    out, stats = build_tagging_task(_records(80), cfg)
    again, _ = build_tagging_task(list(reversed(_records(80))), cfg)
    assert out == again  # independent of record order
    assert len(out["test"]) >= 10 and len(out["dev"]) >= 5 and len(out["train"]) >= 5
    keys = {s: {" ".join(w) for w, _ in out[s]} for s in out}
    assert not (keys["test"] & keys["train"]) and not (keys["dev"] & keys["train"])
    for split in out.values():
        for words, tags in split:
            assert len(words) == len(tags) <= 16 and "B-CODE" in tags and tags[0] != "I-CODE"
    assert stats["dropped"]["no_code"] > 0 and 0 < stats["all_O_test_token_accuracy"] < 1
    with pytest.raises(InputError, match="too few 16-word pieces"):
        build_tagging_task(_records(3), cfg)


def test_cli_writes_conll_that_reads_back(tmp_path, run_cli):
    clean = tmp_path / "clean"
    code, _, err = run_cli("clean", "--output", clean, "--set", "input=[builtin:python-docs]",
                           "--set", "python_docs.packages=[json, logging, argparse]",
                           "--set", "python_docs.max_documents=400")
    assert code == 0, err
    out = tmp_path / "tagging"
    code, _, err = run_cli("demo-task", "--input", clean, "--output", out, "--set", "kind=tagging",
                           "--set", "test_sentences=10", "--set", "dev_sentences=5", "--set", "train_sentences=20",
                           "--set", "min_train_sentences=5")
    assert code == 0, err
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    for split in ("train", "dev", "test"):
        data = read_tagged(out / f"{split}.conll", scheme="iob2")
        assert len(data) == extra["counts"][split] and not data.ill_formed
    assert conll_text([(["a", "b"], ["O", "B-CODE"])]) == "a\tO\nb\tB-CODE\n\n"
