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


# --------------------------------------------------------------------------- formulas, by hand
#
# Each measure is pinned by its threshold: a rule that drops when value > t (Gopher) drops at
# t = value - 1e-9 and keeps at t = value; FineWeb's `<=` / `>=` rules the other way round. The
# values are worked out by hand in the comments (Gopher: datatrove's GopherRepetitionFilter
# definitions, denominator = len(text) with its spaces and newlines; see docs/clean.md for where
# and why we differ from datatrove and from the paper's wording).

EPS = 1e-9


def gopher_value_is(text: str, key: str, value: float, n: int | None = None) -> bool:
    """True when the Gopher rule `key` (for n-gram size n) measures exactly `value` on text."""
    def cfg(t: float) -> dict:
        if n is None:
            return {key: t}
        first = 2 if key == "max_top_ngram_char_fractions" else 5
        return {key: [1.0] * (n - first) + [t]}
    keeps = gopher(text, **cfg(value)) is None
    return keeps and (value == 0 or gopher(text, **cfg(value - EPS)) is not None)


def test_gopher_duplicate_lines_and_paragraphs_by_hand():
    # "x y\nx y\nz": lines (split at runs of \n) x y | x y | z -> 1 repeat of 3 lines = 1/3;
    # repeated characters: "x y" = 3 of len(text) = 3+1+3+1+1 = 9 -> 1/3.
    text = "x y\nx y\nz"
    assert gopher_value_is(text, "max_duplicate_line_fraction", 1 / 3)
    assert gopher_value_is(text, "max_duplicate_line_char_fraction", 3 / 9)
    assert gopher_value_is(text, "max_duplicate_paragraph_fraction", 0.0)  # one paragraph, no repeat
    # "p one\n\np one\n\nq\nr": paragraphs (split at \n\n+) p one | p one | q\nr -> 1/3; repeated
    # characters 5 of 5+2+5+2+3 = 17. Lines: p one | p one | q | r -> 1/4 and 5/17.
    text = "p one\n\np one\n\nq\nr"
    assert gopher_value_is(text, "max_duplicate_paragraph_fraction", 1 / 3)
    assert gopher_value_is(text, "max_duplicate_paragraph_char_fraction", 5 / 17)
    assert gopher_value_is(text, "max_duplicate_line_fraction", 1 / 4)
    assert gopher_value_is(text, "max_duplicate_line_char_fraction", 5 / 17)
    # The first occurrence is not a duplicate: three copies of one line = 2 repeats of 3 lines.
    assert gopher_value_is("ab\nab\nab", "max_duplicate_line_fraction", 2 / 3)


def test_gopher_top_ngram_by_hand():
    # "the cat the cat sat": 2-grams (the cat) x2, (cat the), (cat sat); the top one covers
    # its words' characters (3 + 3) in each of its 2 occurrences = 12, of len(text) = 19.
    text = "the cat the cat sat"
    assert gopher_value_is(text, "max_top_ngram_char_fractions", 12 / 19, n=2)
    # Every 3-gram occurs once: no top 3-gram counts (datatrove would score 11 / 19).
    assert gopher_value_is(text, "max_top_ngram_char_fractions", 0.0, n=3)
    # Occurrences may overlap, as in datatrove: "ha ha ha ha" has (ha ha) 3 times -> 3 * 4 = 12
    # characters of 11: a fraction above 1, dropped at any threshold.
    assert gopher("ha ha ha ha", max_top_ngram_char_fractions=[1.0]) == "top_2_gram"


def test_gopher_duplicate_ngrams_by_hand():
    # 15 one-letter words "a b c d e" x 3, len(text) = 29. The scan over 5-grams: positions 0-4
    # are new (abcde bcdea cdeab deabc eabcd), position 5 repeats abcde -> +5 characters, jump
    # to 10: abcde again -> +5, jump to 15: past the last 5-gram. 10 / 29.
    text = " ".join("abcde" * 3)
    assert gopher_value_is(text, "max_duplicate_ngram_char_fractions", 10 / 29, n=5)
    # 6-grams: positions 0-4 new (abcdea ... eabcde), position 5 (abcdea) repeats -> +6, jump to
    # 11 > 15 - 6: stop. 6 / 29.
    assert gopher_value_is(text, "max_duplicate_ngram_char_fractions", 6 / 29, n=6)
    # Overlapping repeats count once: 7 x "a" (len 13): position 0 new, 1 repeats -> +5, jump
    # to 6 > 7 - 5: stop. 5 / 13, not 3 overlapping repeats (15 characters).
    assert gopher_value_is(" ".join("a" * 7), "max_duplicate_ngram_char_fractions", 5 / 13, n=5)
    # Chinese: each character is a unit. "好好学习天天向上" x 3 (24 characters, no spaces):
    # 5-grams at positions 0-7 are new, 8 repeats 0 -> +5, jump to 13 (repeats 5) -> +5, jump
    # to 18 (repeats 2) -> +5, jump to 23 > 24 - 5: stop. 15 / 24.
    assert gopher_value_is("好好学习天天向上" * 3, "max_duplicate_ngram_char_fractions", 15 / 24, n=5)


def fineweb_fires(text: str, key: str, threshold: float, **cfg) -> bool:
    off = dict(min_punctuated_line_fraction=None, max_short_line_fraction=None,
               max_duplicate_line_char_fraction=None, max_newlines_per_word=None)
    return FineWebQuality(FineWebQualityConfig(**{**off, **cfg, key: threshold})).reason(text) is not None


def test_fineweb_rules_by_hand():
    # Non-empty lines: "aaaa." "aaaa." "bb" "cc" (the blank line is not a line here).
    text = "aaaa.\naaaa.\nbb\n\ncc"
    # Punctuated: 2 of 4 = 0.5; drops when <= the threshold.
    assert fineweb_fires(text, "min_punctuated_line_fraction", 0.5)
    assert not fineweb_fires(text, "min_punctuated_line_fraction", 0.5 - EPS)
    # Short (<= 30 characters): 4 of 4; with short_line_chars=3 only "bb" and "cc": 2/4. Drops when >=.
    assert fineweb_fires(text, "max_short_line_fraction", 1.0)
    assert fineweb_fires(text, "max_short_line_fraction", 0.5, short_line_chars=3)
    assert not fineweb_fires(text, "max_short_line_fraction", 0.5 + EPS, short_line_chars=3)
    # Repeated line characters: "aaaa." once = 5, of the non-newline characters 5+5+2+2 = 14.
    assert fineweb_fires(text, "max_duplicate_line_char_fraction", 5 / 14)
    assert not fineweb_fires(text, "max_duplicate_line_char_fraction", 5 / 14 + EPS)
    # Newlines per word: 4 newlines, 4 words = 1.0; drops when >.
    assert fineweb_fires(text, "max_newlines_per_word", 1.0 - EPS)
    assert not fineweb_fires(text, "max_newlines_per_word", 1.0)
    # A line ends in punctuation after trailing spaces are ignored; ) and the CJK full stop count.
    assert not fineweb_fires("one (two) \nthree。\nfour", "min_punctuated_line_fraction", 0.5)


def test_thai_skips_line_punctuation_only():
    # Thai ends a sentence with a space: no line ends in a stop, the rule is not applied ...
    thai = "วันนี้อากาศดีมาก เราไปเดินเล่นที่สวน\nตอนเย็นฝนตกหนัก เราจึงกลับบ้านเร็ว"
    assert not fineweb_fires(thai, "min_punctuated_line_fraction", 0.12)
    # ... while the other rules still are (2 short lines of 2).
    assert fineweb_fires(thai, "max_short_line_fraction", 0.67, short_line_chars=40)


def test_hostile_documents_are_linear():
    """1 M-unit documents of pathological repetition: every rule runs in seconds, none crashes."""
    import time

    cases = {"a\n" * 1_000_000: "duplicate_lines", "a " * 1_000_000: "top_2_gram",
             "a" * 2_000_000: None, " ".join(VOCAB * 100): "duplicate_5_grams"}
    for text, reason in cases.items():
        start = time.process_time()  # CPU seconds, which a loaded machine does not stretch
        assert GopherRepetition().reason(text) == reason
        FineWebQuality().reason(text)
        assert time.process_time() - start < 60


def _reference_top(words: list[str], n: int) -> int:
    """The top n-gram rule written plainly over word tuples (Counter breaks ties by first seen)."""
    from collections import Counter

    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return sum(map(len, gram)) * count if count > 1 else 0


def _reference_duplicated(words: list[str], n: int) -> int:
    """datatrove's find_all_duplicate scan, over word tuples."""
    seen: set = set()
    chars = i = 0
    while i <= len(words) - n:
        gram = tuple(words[i:i + n])
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def test_vectorised_ngram_measures_equal_the_plain_definitions():
    from mlmctl.repetition import _duplicated_ngram_chars, _NGrams, _top_ngram_chars

    r = random.Random(8)
    for trial in range(300):
        # Tiny vocabularies of words of different lengths: many repeats, overlaps and ties.
        vocab = ["x" * r.randint(1, 6) + str(k) for k in range(r.randint(1, 12))]
        words = [r.choice(vocab) for _ in range(r.randint(0, 80))]
        grams = _NGrams(words)
        for n in range(2, 5):
            assert _top_ngram_chars(grams, n) == _reference_top(words, n), (words, n)
        for n in range(5, 11):
            assert _duplicated_ngram_chars(grams, n) == _reference_duplicated(words, n), (words, n)
