"""Gopher repetition and FineWeb line filters: each rule fires on its own case, clean prose passes."""

from __future__ import annotations

import json
import random

import pytest

from mlmctl.config import load_config
from mlmctl.errors import ConfigError
from mlmctl.repetition import FineWebQuality, FineWebQualityConfig, GopherRepetition, GopherRepetitionConfig

rng = random.Random(5)
VOCAB = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(2000)]


def prose(sentences: int = 12, seed: int = 0) -> str:
    r = random.Random(seed)
    lines = [" ".join(r.choice(VOCAB) for _ in range(r.randint(12, 20))).capitalize() + "." for _ in range(sentences)]
    return "\n".join(" ".join(lines[i:i + 3]) for i in range(0, len(lines), 3))


def gopher(text: str, **cfg) -> str | None:
    # Only the rule under test: others off, so each case shows its own reason.
    off = dict(max_duplicate_line_fraction=None, max_duplicate_paragraph_fraction=None,
               max_duplicate_line_char_fraction=None, max_duplicate_paragraph_char_fraction=None,
               max_top_ngram_char_fractions=[], max_duplicate_ngram_char_fractions=[])
    return GopherRepetition(GopherRepetitionConfig(**{**off, **cfg})).reason(text)


def test_clean_prose_passes_both_filters_with_defaults():
    for seed in range(20):
        text = prose(seed=seed)
        assert GopherRepetition().process(text) == (text, None)
        assert FineWebQuality().process(text) == (text, None)
    assert GopherRepetition().reason("北京是中国的首都，也是一座历史悠久的城市。上海是中国最大的城市之一。") is None


@pytest.mark.parametrize("text, cfg, reason", [
    ("menu\nhome\nmenu\nmenu\nabout\n" + prose(3), {"max_duplicate_line_fraction": 0.3}, "duplicate_lines"),
    ("a b\n\nsame paragraph here\n\nsame paragraph here\n\nsame paragraph here", {"max_duplicate_paragraph_fraction": 0.3},
     "duplicate_paragraphs"),
    (prose(3) + "\n" + "Click here to subscribe to our newsletter today and save.\n" * 4, {"max_duplicate_line_char_fraction": 0.2},
     "duplicate_line_chars"),
    (prose(3) + "\n\n" + "Copyright notice of the site, all rights reserved.\n\n" * 4, {"max_duplicate_paragraph_char_fraction": 0.2},
     "duplicate_paragraph_chars"),
    (prose(2) + " " + "buy now " * 30, {"max_top_ngram_char_fractions": [0.2, 0.18, 0.16]}, "top_2_gram"),
    (prose(2) + " " + "the best cheap shoes " * 20, {"max_top_ngram_char_fractions": [1.0, 0.18, 0.16]}, "top_3_gram"),
    (prose(4) + " " + prose(2, seed=9) + " " + prose(2, seed=9), {"max_duplicate_ngram_char_fractions": [0.15]},
     "duplicate_5_grams"),
    (prose(4) + " " + prose(2, seed=9) + " " + prose(2, seed=9), {"max_duplicate_ngram_char_fractions": [1, 1, 1, 1, 1, 0.10]},
     "duplicate_10_grams"),
])
def test_each_gopher_rule_has_its_reason(text, cfg, reason):
    assert gopher(text, **cfg) == reason
    assert gopher(prose(seed=3), **cfg) is None


def test_top_ngram_needs_a_repeat_and_chinese_counts_characters():
    assert gopher("Short note.", max_top_ngram_char_fractions=[0.2]) is None  # datatrove would drop it
    assert gopher("好好学习天天向上" * 3, max_duplicate_ngram_char_fractions=[0.15]) == "duplicate_5_grams"


@pytest.mark.parametrize("text, reason", [
    ("\n".join(f"{w} item of the long navigation menu number {i} here" for i, w in enumerate(VOCAB[:20])), "line_punct_ratio"),
    ("\n".join(f"Item {w}." for w in VOCAB[:20]), "short_line_ratio"),
    (prose(12) + "\nThis line repeats in the text.\nThis line repeats in the text.", "char_dup_ratio"),
])
def test_each_fineweb_rule_has_its_reason(text, reason):
    assert FineWebQuality().reason(text) == reason


def test_fineweb_list_ratio():
    text = "\n".join(f"Entry {w}." for w in VOCAB[:40]) + "\n" + prose(2)
    cfg = FineWebQualityConfig(max_short_line_fraction=None)
    assert FineWebQuality(cfg).reason(text) == "list_ratio"


def test_config_checks(tmp_path):
    from mlmctl.stages.clean import CleanConfig

    p = tmp_path / "c.yaml"
    p.write_text(json.dumps({"gopher_repetition": {"max_top_ngram_char_fractions": [0.2, 0.2, 0.2, 0.2]}}))
    with pytest.raises(ConfigError, match="max_top_ngram_char_fractions.*at most 3"):
        load_config(CleanConfig, p)
    p.write_text(json.dumps({"fineweb_quality": {"max_short_line_fraction": 2}}))
    with pytest.raises(ConfigError, match="max_short_line_fraction"):
        load_config(CleanConfig, p)


def test_drop_reasons_reach_stats_json(run_cli, tmp_path):
    good = [prose(seed=s) for s in range(5)]
    bad = ["menu\nhome\nmenu\nmenu\nabout\nmenu\nnews"] + ["\n".join(f"Item {w}." for w in VOCAB[:20])]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in good + bad))
    code, _, err = run_cli("clean", "--input", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"),
                           "--set", "steps=[decode, whitespace, gopher_repetition, fineweb_quality]")
    assert code == 0, err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["documents_out"]["total"] == 5
    assert stats["dropped"]["gopher_repetition"]["duplicate_lines"]["documents"] == 1
    assert stats["dropped"]["fineweb_quality"]["short_line_ratio"]["documents"] == 1
