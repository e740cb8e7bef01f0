"""configs/zh at smoke size, clean -> pretrain -> demo-task, and fill-mask in Chinese vs transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "configs" / "zh"
SMALL_MODEL = ("--set", "model.hidden_size=64", "--set", "model.num_attention_heads=2", "--set",
               "model.intermediate_size=128", "--set", "model.num_hidden_layers=1", "--set", "train.max_steps=20",
               "--set", "train.warmup_steps=2", "--set", "validation.every=10", "--set", "checkpoint.save_every=10",
               "--set", "data.max_seq_len=64", "--set", "train.batch_size=8")


@pytest.mark.slow
def test_zh_chain_and_fill_mask_agree_with_transformers(tmp_path, run_cli):
    pytest.importorskip("rjieba")
    transformers = pytest.importorskip("transformers")
    from mlmctl.fill_mask import fill_mask
    from mlmctl.zh_corpus import write_jsonl

    d = tmp_path
    write_jsonl(d / "corpus.jsonl", 1200)
    steps = [
        ("clean", "clean.yaml", ["--set", f"input=[{d / 'corpus.jsonl'}]", "--output", d / "clean", "--workers", "2"]),
        ("tokenize", "tokenize.yaml", ["--input", d / "clean", "--output", d / "tokens", "--workers", "2"]),
        ("build-vocab", "build-vocab.yaml", ["--input", d / "tokens", "--output", d / "vocab", "--workers", "2"]),
        ("pretrain", "pretrain.yaml", ["--input", d / "vocab", "--output", d / "pretrain", *SMALL_MODEL]),
        ("demo-task", "demo-task.yaml", ["--input", d / "clean", "--output", d / "task", "--set",
                                         "test_per_class=20", "--set", "dev_per_class=10"]),
    ]
    for stage, cfg, args in steps:
        code, _, err = run_cli(stage, "-c", ZH / cfg, *args)
        assert code == 0, f"{stage}: {err[-2000:]}"

    clean_stats = json.loads((d / "clean" / "stats.json").read_text())
    assert clean_stats["documents_out"]["total"] >= 0.95 * clean_stats["documents_in"]
    vocab_stats = json.loads((d / "vocab" / "stats.json").read_text())
    assert vocab_stats["validation"]["unk_rate"] < 0.005
    train_tsv = (d / "task" / "train.tsv").read_text(encoding="utf-8").splitlines()
    labels = {row.rsplit("\t", 1)[1] for row in train_tsv[1:]}
    assert labels == {"体育", "科技", "美食", "旅行"}
    assert " " not in train_tsv[1].split("\t")[0]  # Chinese extracts keep their original spacing

    # [MASK] inside a Chinese sentence, no spaces around it; output joined without spaces.
    text = "学生们常常说起足[MASK]和篮球。"  # characters of the generated corpus (no [UNK])
    model_dir = d / "pretrain" / "final"
    ours = fill_mask(model_dir, text, top_k=3)
    assert len(ours["masks"]) == 1
    assert ours["filled"].startswith("学生们常常说起足") and " " not in ours["filled"]
    pipe = transformers.pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    theirs = [c for c in pipe(text, top_k=20)
              if c["token_str"] not in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")][:3]
    assert [t for t, _ in ours["masks"][0]] == [c["token_str"].replace(" ", "") for c in theirs]
    for (_, p), c in zip(ours["masks"][0], theirs):
        assert p == pytest.approx(c["score"], abs=1e-4)
