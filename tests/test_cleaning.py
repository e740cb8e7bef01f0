"""Clean steps one by one, the registry, and the pipeline's counters."""

from __future__ import annotations

import dataclasses
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.cleaning import (
    DEFAULT_STEPS,
    STEPS,
    Decode,
    DecodeConfig,
    LengthFilter,
    LengthFilterConfig,
    Normalize,
    NormalizeConfig,
    Pipeline,
    QualityFilter,
    QualityFilterConfig,
    RemoveBom,
    RemoveBomConfig,
    RemoveChars,
    RemoveCharsConfig,
    StripMarkup,
    StripMarkupConfig,
    Urls,
    UrlsConfig,
    Whitespace,
    WhitespaceConfig,
    build_pipeline,
)
from mlmctl.errors import ConfigError

PROSE = "The quick brown fox jumps over the lazy dog while the cat watches from the window."


def apply(step, text):
    out, reason = step.process(text)
    assert reason is None
    return out


# --------------------------------------------------------------------------- registry


def test_registry_steps_have_name_config_and_documented_fields():
    from mlmctl.config import field_docs

    assert set(DEFAULT_STEPS) <= set(STEPS)
    for name, cls in STEPS.items():
        assert cls.name == name
        assert dataclasses.is_dataclass(cls.Config)
        docs = field_docs(cls.Config)
        for f in dataclasses.fields(cls.Config):
            assert docs.get(f.name), f"{name}.{f.name} has no docstring"
        cls()  # defaults construct


def test_unchanged_text_is_returned_as_the_same_object():
    # Cheap path: clean text is not copied by any default step.
    for name in DEFAULT_STEPS + ["strip_markup"]:
        out, reason = STEPS[name]().process(PROSE)
        assert reason is None and out is PROSE, name


# --------------------------------------------------------------------------- decode / BOM / normalize


def test_decode_replaces_or_drops_invalid_utf8():
    bad = b"caf\xe9 ok \xff\xfe".decode("utf-8", "surrogateescape")
    assert apply(Decode(), bad) == "caf\ufffd ok \ufffd\ufffd"
    assert Decode(DecodeConfig(on_invalid="drop")).process(bad)[1] == "invalid_utf8"
    assert apply(Decode(), "valid é") == "valid é"
    # A JSON "\ud800" escape arrives as a lone surrogate: same treatment.
    assert apply(Decode(), "x\ud800y") == "x\ufffdy"


@given(st.binary(max_size=200))
@settings(max_examples=60, deadline=None)
def test_decode_output_is_always_encodable(data):
    text = data.decode("utf-8", "surrogateescape")
    out, reason = Decode().process(text)
    assert reason is None
    out.encode("utf-8")  # never raises


def test_remove_bom():
    assert apply(RemoveBom(), "\ufeffhello\ufeff world") == "hello world"
    assert apply(RemoveBom(RemoveBomConfig(leading_only=True)), "\ufeffa\ufeffb") == "a\ufeffb"


def test_normalize_nfd_accents_and_nfkc():
    nfd = unicodedata.normalize("NFD", "café naïve Zürich")
    assert nfd != "café naïve Zürich"
    assert apply(Normalize(), nfd) == "café naïve Zürich"
    assert apply(Normalize(NormalizeConfig(form="NFKC")), "ﬁne ＡＢＣ") == "fine ABC"
    assert apply(Normalize(), "ﬁne") == "ﬁne"  # NFC keeps compatibility characters


# --------------------------------------------------------------------------- characters


def test_remove_chars_controls_zero_width_bidi():
    text = "a\x00b\x07c\x1b[0m d\u200be\u2060f\u00adg \u202eevil\u202c \u2066iso\u2069 h\u200ei\ttab\r\n"
    out = apply(RemoveChars(), text)
    assert out == "abc[0m defg evil iso hi\ttab\r\n"
    assert apply(RemoveChars(), "page\x0cbreak\x0bv\u2028w") == "page\nbreak\nv\nw"


def test_remove_chars_keeps_joiners_by_default_and_respects_switches():
    persian = "می\u200cخواهم 👨\u200d👩"
    assert apply(RemoveChars(), persian) == persian
    assert apply(RemoveChars(RemoveCharsConfig(joiners=True)), persian) == "میخواهم 👨👩"
    assert apply(RemoveChars(RemoveCharsConfig(control=False)), "a\x00b") == "a\x00b"
    assert apply(RemoveChars(RemoveCharsConfig(bidi=False)), "a\u202eb") == "a\u202eb"


@given(st.text(max_size=200))
@settings(max_examples=80, deadline=None)
def test_remove_chars_leaves_no_control_characters(text):
    out = apply(RemoveChars(), text)
    assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in out)
    assert not set(out) & {"\u200b", "\u202e", "\u2066", "\ufeff"}


# --------------------------------------------------------------------------- markup / URLs


def test_strip_markup_drops_script_style_and_comments():
    page = (
        "<!DOCTYPE html><html><head><title>T</title><style>p {color: red}</style></head>"
        "<body><script type='x'>alert('<p>no</p>')</script><!-- hidden --><p>Fish &amp; chips</p>"
        "<div>caf&eacute; <b>bold</b></div></body></html>"
    )
    out = apply(StripMarkup(), page)
    assert "alert" not in out and "color" not in out and "hidden" not in out and "<" not in out
    assert "Fish & chips" in out and "café bold" in out
    # An unclosed <script> runs to the end (and the regex stays linear).
    assert apply(StripMarkup(), "<p>keep</p><script>" + "x" * 10000) .strip() == "keep"


def test_strip_markup_leaves_plain_text_with_angle_brackets():
    text = "if a < b and c > d then List<int> x = 1"
    assert apply(StripMarkup(), text) is text
    forced = StripMarkup(StripMarkupConfig(only_if_html=False))
    assert apply(forced, "a <b>c</b>") == "a c"


def test_urls_and_emails_mask_remove_keep():
    text = "See https://example.com/a?b=1, www.python.org. Mail jane.doe@example.co.uk now."
    assert apply(Urls(), text) == "See [URL], [URL]. Mail [EMAIL] now."
    removed = apply(Urls(UrlsConfig(urls="remove", emails="remove")), text)
    assert removed == "See , . Mail  now."
    assert apply(Urls(UrlsConfig(urls="keep", emails="keep")), text) is text
    assert apply(Urls(), "a@b is not an address") == "a@b is not an address"


# --------------------------------------------------------------------------- whitespace


def test_whitespace_repairs():
    text = "  line one  \r\nline\ttwo   words\r\n\r\n\r\n\r\nthird\u00a0line \n   \n\n\n    indented  code\rlast   "
    out = apply(Whitespace(), text)
    assert out == "line one\nline two words\n\nthird line\n\n    indented code\nlast"


def test_whitespace_options():
    text = "a\n\n\n\nb    c\n    d"
    assert apply(Whitespace(WhitespaceConfig(max_blank_lines=0)), text) == "a\nb c\n    d"
    assert apply(Whitespace(WhitespaceConfig(max_blank_lines=2)), text) == "a\n\n\nb c\n    d"
    assert apply(Whitespace(WhitespaceConfig(keep_indentation=False)), text) == "a\n\nb c\n d"
    assert apply(Whitespace(WhitespaceConfig(collapse_spaces=False)), text) == "a\n\nb    c\n    d"
    keep = Whitespace(WhitespaceConfig(strip_trailing=False, collapse_spaces=False))
    assert apply(keep, "a  \n  \n \t\n  \nb") == "a  \n\nb"
    with pytest.raises(ConfigError, match="max_blank_lines"):
        WhitespaceConfig(max_blank_lines=-1)


# --------------------------------------------------------------------------- filters


def test_length_filter_reasons():
    f = LengthFilter(LengthFilterConfig(min_chars=10, max_chars=100, min_words=3, max_words=8))
    assert f.filter("short") == (False, "too_few_chars")
    assert f.filter("x" * 101) == (False, "too_many_chars")
    assert f.filter("twowords only") == (False, "too_few_words")
    assert f.filter("a b c d e f g h i") == (False, "too_many_words")
    assert f.filter("three good words") == (True, "")
    off = LengthFilter(LengthFilterConfig(min_chars=None, max_chars=None, min_words=None, max_words=None))
    assert off.filter("") == (True, "")


def test_quality_filter_reasons():
    q = QualityFilter()
    assert q.filter(PROSE) == (True, "")
    assert q.filter(PROSE + " " + "x" * 10_000) == (False, "word_too_long")
    long_line = " ".join(["word"] * 30_000)  # 150k characters on one line
    assert q.filter(long_line) == (False, "line_too_long")
    assert q.filter("a b c d e f g h i j k l") == (False, "mean_word_too_short")
    assert q.filter("internationalization institutionalization") == (False, "mean_word_too_long")
    assert q.filter("1234 5678 9012 3456 7890 ==== ++++ word text") == (False, "non_letter_fraction")
    repeated = "\n".join(["Click here to subscribe now"] * 5 + ["A different line of text"])
    assert q.filter(repeated) == (False, "repeated_lines")
    assert QualityFilter(QualityFilterConfig(max_repeated_line_fraction=None)).filter(repeated) == (True, "")


def test_quality_filter_config_checks():
    with pytest.raises(ConfigError, match="max_non_letter_fraction"):
        QualityFilterConfig(max_non_letter_fraction=1.5)
    with pytest.raises(ConfigError, match="min_mean_word_chars"):
        QualityFilterConfig(min_mean_word_chars=9, max_mean_word_chars=4)


# --------------------------------------------------------------------------- pipeline


def test_pipeline_counts_changes_and_drops_per_step_and_reason():
    p = build_pipeline(["decode", "remove_chars", "whitespace", "length_filter"],
                       {"length_filter": LengthFilterConfig(min_chars=10, min_words=2)})
    docs = [PROSE, "bad \udcff byte " + PROSE, "tiny", "  \u200b  ", "x\x00" + PROSE]
    results = [p.run(d) for d in docs]
    assert [r[1:] for r in results] == [
        (None, None), (None, None), ("length_filter", "too_few_chars"), ("length_filter", "too_few_chars"),
        (None, None),
    ]
    assert results[1][0] == "bad \ufffd byte " + PROSE
    assert p.changed == {"decode": 1, "remove_chars": 2, "whitespace": 1, "length_filter": 0}
    assert p.dropped == {"length_filter": {"too_few_chars": [2, 4]}}
    # Without a length filter, a document left empty is still dropped, under `empty`.
    q = build_pipeline(["decode", "remove_chars", "whitespace"], {})
    assert q.run("  \u200b \r\n ")[1:] == ("empty", "empty")
    assert q.dropped == {"empty": {"empty": [1, 0]}}


def test_pipeline_is_idempotent_on_its_own_output():
    p = Pipeline([STEPS[n]() for n in DEFAULT_STEPS])
    messy = "  Caf\u0065\u0301 \u200bis  open\r\n\r\n\r\nat www.cafe.example daily;  mail me@cafe.example  \t"
    once, step, _ = p.run(messy * 3)
    assert step is None
    assert p.run(once)[0] == once


def test_letters_count_marks_so_indic_scripts_pass_the_non_letter_check():
    from mlmctl.cleaning import count_letters

    hindi = "हिन्दी भाषा में लिखा गया यह वाक्य बिल्कुल सामान्य है और इसे रखा जाना चाहिए।"
    assert count_letters(hindi) == len(hindi.replace(" ", "")) - 1  # all but the danda
    assert QualityFilter().filter(hindi) == (True, "")
    assert count_letters("abc 123 déf!") == 6
    assert count_letters("ABC xyz, 42") == 6  # the ASCII fast path


@given(st.binary(max_size=400) | st.text(max_size=300))
@settings(max_examples=150, deadline=None)
def test_every_step_together_never_crashes_and_keeps_valid_text(data):
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    p = Pipeline([STEPS[n]() for n in ["decode", "remove_bom", "normalize", "remove_chars", "strip_markup",
                                       "urls", "whitespace", "length_filter", "quality_filter"]])
    out, step, reason = p.run(text)
    if step is None:
        out.encode("utf-8")
        assert out == out.strip() and out
        assert "\r" not in out and "\x00" not in out and "\ufeff" not in out


def test_quality_filter_formulas_by_hand():
    """Each measure pinned at its threshold (drops when the value is above a max / below a min)."""
    off = dict(max_non_letter_fraction=None, max_line_chars=None, max_word_chars=None, min_mean_word_chars=None,
               max_mean_word_chars=None, max_repeated_line_fraction=None, max_char_run=None,
               max_mojibake_fraction=None)

    def drops(text: str, **cfg) -> bool:
        return not QualityFilter(QualityFilterConfig(**{**off, **cfg})).filter(text)[0]

    eps = 1e-9
    # Whitespace words keep their punctuation: "aaa" "bbbb," "c" = (3 + 5 + 1) / 3 = 3.0.
    assert not drops("aaa bbbb, c", min_mean_word_chars=3.0) and drops("aaa bbbb, c", min_mean_word_chars=3.0 + eps)
    assert not drops("aaa bbbb, c", max_mean_word_chars=3.0) and drops("aaa bbbb, c", max_mean_word_chars=3.0 - eps)
    # Non-empty lines x x y z: one repeat of 4 = 1 - 3/4 = 0.25 (the blank line is no line).
    text = "x\nx\ny\n\nz"
    assert not drops(text, max_repeated_line_fraction=0.25) and drops(text, max_repeated_line_fraction=0.25 - eps)
    # "ab12 cd!!": 8 non-space characters (4 + 4), 4 letters: 4/8 are not letters.
    assert not drops("ab12 cd!!", max_non_letter_fraction=0.5) and drops("ab12 cd!!", max_non_letter_fraction=0.5 - eps)
