"""Rule-based sentence splitter: English abbreviations, decimals, ellipses, quotes, CJK."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl import sentences as S
from mlmctl.sentences import split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        ("One sentence. Another one! A third? Yes.", ["One sentence.", "Another one!", "A third?", "Yes."]),
        ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", "They talked."]),
        ("Use tools, e.g. a hammer. Then rest.", ["Use tools, e.g. a hammer.", "Then rest."]),
        ("Pi is 3.14 roughly. Next.", ["Pi is 3.14 roughly.", "Next."]),
        ("J. R. R. Tolkien wrote it. Fine.", ["J. R. R. Tolkien wrote it.", "Fine."]),
        ("The U.S. economy grew. Prices fell.", ["The U.S. economy grew.", "Prices fell."]),
        ("Wait... what happened? Nothing... Then rain.", ["Wait... what happened?", "Nothing...", "Then rain."]),
        ('He said "Hi." Then he left.', ['He said "Hi."', "Then he left."]),
        ("(See the note.) Next sentence.", ["(See the note.)", "Next sentence."]),
        ('"Wow!" she said. OK.', ['"Wow!" she said.', "OK."]),
        ("It costs $5. 3 people paid.", ["It costs $5.", "3 people paid."]),
        ("Results in Fig. 3 agree. Good.", ["Results in Fig. 3 agree.", "Good."]),
        ("他说：“你好。”然后走了！真的吗？是的；好。", ["他说：“你好。”", "然后走了！", "真的吗？", "是的；", "好。"]),
        ("全角！问号？分号；结束", ["全角！", "问号？", "分号；", "结束"]),
        ("你好!我很好.", ["你好!", "我很好."]),
        ("English first. 然后中文。Mixed", ["English first.", "然后中文。", "Mixed"]),
        ("Para one\nwraps here.\n\nPara two", ["Para one\nwraps here.", "Para two"]),
        ("no terminator at all", ["no terminator at all"]),
        ("   \n\n  ", []),
        ("", []),
    ],
)
def test_split(text, expected):
    assert split_sentences(text) == expected


def test_newline_boundary_option():
    assert split_sentences("line one\nline two") == ["line one\nline two"]
    assert split_sentences("line one\nline two", newline_is_boundary=True) == ["line one", "line two"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab. !?\n\"')(。！？；」U.Dr e.g…北京 ")), max_size=80))
def test_sentences_cover_the_text(text):
    """Nothing is lost or reordered: the sentences are the text's non-space characters, in order."""
    sents = split_sentences(text)
    assert all(s and s == s.strip() for s in sents)
    assert "".join("".join(s.split()) for s in sents) == "".join(text.split())


def test_linear_time_on_long_input():
    import time

    text = "Word. " * 200_000 + "X" * 100_000 + ". Next"
    # CPU seconds of this process, not wall time: a loaded machine does not stretch them. A quadratic
    # split of 1.3 M characters would take hours; linear takes ~0.5 s, so the bound has room for a
    # much slower machine.
    start = time.process_time()
    out = split_sentences(text)
    assert len(out) == 200_002
    assert time.process_time() - start < 30


# The candidate regex before it was rewritten to start with one character class (two alternatives,
# tried at every position); the splitter must find exactly the same sentences with either.
_OLD_CANDIDATE = re.compile(
    f"(?P<cjk>[{S._CJK_TERMS}]+[{S._CLOSERS_CJK}]*)"
    f"|(?P<lat>(?:\\.\\.+|\u2026|[.!?])+[{S._CLOSERS_LATIN}]*)(?=\\s|[{S._CJK_RANGE}])"
)


def _old_split(text: str, newline_is_boundary: bool) -> list[str]:
    out: list[str] = []
    for block in text.splitlines() if newline_is_boundary else S._PARAGRAPH.split(text):
        start = 0
        for m in _OLD_CANDIDATE.finditer(block):
            if m.group("lat") is not None and not S._latin_boundary(block, m):
                continue
            if piece := block[start:m.end()].strip():
                out.append(piece)
            start = m.end()
        if piece := block[start:].strip():
            out.append(piece)
    return out


_PIECES = [
    "Dr.", "Mr.", "e.g.", "i.e.", "U.S.", "a.m.", "etc.", "Fig.", "J.", "3.14", "$5.", "No.", "vs.",
    "word", "Word", "the", "ÉTÉ", "été", "x", "42", ".", "..", "...", "…", "!", "?", "?!", "!!",
    '"', "'", "”", "’", "»", ")", "]", "(", "“", "«", "。", "！", "？", "；", "｡", "．", "」", "』",
    "）", "】", "》", '."', ".')", '!”»', "?'", "...)", "。」", "！』）", "北京", "你好", "カナ", "한국", "，", "、", " ", " ", " ", "\n", "\n\n", "\t", "\u3000",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.booleans())
def test_same_sentences_as_the_old_splitter(pieces, newline_is_boundary):
    text = "".join(pieces)
    assert split_sentences(text, newline_is_boundary) == _old_split(text, newline_is_boundary)
