"""Chinese cleaning: real Chinese text of several kinds is kept, junk is dropped, every drop counted."""

from __future__ import annotations

import pytest

from mlmctl import zh_corpus
from mlmctl.cleaning import DEFAULT_STEPS, QualityFilter, QualityFilterConfig, build_pipeline, drop_warning
from mlmctl.errors import MlmctlError
from mlmctl.scripts import join_unspaced, script_stats, units

JUNK = [
    "。。。！！！？？？，，，、、、……",  # pure punctuation
    "ä½ å¥½ä¸–ç•Œï¼Œè¿™æ˜¯ä¸€ä¸ªæµ‹è¯•æ–‡æœ¬ï¼Œç”¨äºŽæ£€æŸ¥ä¹±ç ã€‚",  # UTF-8 read as cp1252
    "ÄãºÃÊÀ½ç£¬ÕâÊÇÒ»¸ö²âÊÔÎÄ±¾£¬ÓÃÓÚ¼ì²éÂÒÂë¡£",  # GBK read as Latin-1
    "这是乱码������������������������������������",  # undecodable bytes replaced
    "啊" * 40,  # one character repeated
    "今天天气很好哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈",
    "１２３４５６７８９０ ### $$$ %%% ^^^ &&& *** 一",  # symbols with one Han character
    "他",  # a single character
]


def _real_text() -> list[str]:
    return ([d["text"] for d in zh_corpus.documents(300, seed=3)] + zh_corpus.poems(60, seed=3)
            + zh_corpus.ui_strings() + zh_corpus.mixed(60, seed=3))


def test_default_steps_keep_real_chinese_and_drop_junk():
    pipe = build_pipeline(DEFAULT_STEPS, {})
    real = _real_text()
    kept = sum(pipe.run(t)[1] is None for t in real)
    assert kept >= 0.95 * len(real), pipe.dropped
    before = sum(n for reasons in pipe.dropped.values() for n, _ in reasons.values())
    for junk in JUNK:
        assert pipe.run(junk)[1] is not None, junk
    after = sum(n for reasons in pipe.dropped.values() for n, _ in reasons.values())
    assert after - before == len(JUNK)  # every drop counted, with a reason


@pytest.mark.parametrize("text,reason", [
    ("ä½ å¥½ä¸–ç•Œï¼Œè¿™æ˜¯ä¸€ä¸ªæµ‹è¯•æ–‡æœ¬ï¼Œç”¨äºŽæ£€æŸ¥ä¹±ç ã€‚" * 3, "mojibake"),
    ("ÄãºÃÊÀ½ç£¬ÕâÊÇÒ»¸ö²âÊÔÎÄ±¾£¬ÓÃÓÚ¼ì²éÂÒÂë¡£" * 3, "mojibake"),
    ("我们今天去公园玩。" + "啊" * 20 + "真好玩。", "long_char_run"),
    ("。！？" * 10 + "好", "non_letter_fraction"),
])
def test_quality_filter_reasons(text, reason):
    # Mean word length off: mojibake without spaces would otherwise go as `mean_word_too_long` first.
    cfg = QualityFilterConfig(min_mean_word_chars=None, max_mean_word_chars=None)
    assert QualityFilter(cfg).filter(text) == (False, reason)


def test_european_text_is_not_mojibake():
    q = QualityFilter()
    for text in ("A informação e a educação são fundamentais para a população.",
                 "Größere Straßen führen über die Brücke nach Köln.",
                 "L'été dernier, nous étions à Montréal pour le congrès."):
        assert q.filter(text) == (True, ""), text


def test_long_chinese_paragraph_is_not_one_long_word():
    para = "".join(d["text"] for d in zh_corpus.documents(40, seed=1))
    assert len(para) > 1000 and " " not in para
    assert QualityFilter().filter(para) == (True, "")


def test_script_stats_and_units():
    st = script_stats("我用 Python 写代码")
    assert st.counts["han"] == 5 and st.letters == 11 and st.is_unspaced
    assert not script_stats("Our guest Li Wei (李伟) spoke about language models today").is_unspaced
    assert units("我用 Python 写代码") == ["我", "用", "Python", "写", "代", "码"]


def test_join_unspaced_keeps_latin_spaces():
    assert join_unspaced("访 问 已 被 拒 绝") == "访问已被拒绝"
    assert join_unspaced("我 用 python 写 代 码 。") == "我用 python 写代码。"
    assert join_unspaced("the cat sat , on the mat .") == "the cat sat , on the mat ."


def test_drop_warning_names_top_reasons():
    dropped = {"length_filter": {"too_few_chars": {"documents": 70}},
               "quality_filter": {"mojibake": {"documents": 5}}}
    msg = drop_warning(100, 25, dropped)
    assert msg.startswith("warning: kept only 25 of 100") and "length_filter.too_few_chars 70" in msg
    assert drop_warning(100, 60, dropped) is None


def test_zh_convert_traditional_to_simplified():
    pytest.importorskip("opencc")
    pipe = build_pipeline(["decode", "zh_convert"], {})
    assert pipe.run("漢語計算機軟體，鼠標與網絡。")[0] == "汉语计算机软体，鼠标与网络。"
    assert pipe.changed["zh_convert"] == 1


def test_zh_convert_without_opencc_is_one_line_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_opencc(name, *a, **k):
        if name == "opencc":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_opencc)
    with pytest.raises(MlmctlError, match=r"pip install 'mlmctl\[zh\]'"):
        build_pipeline(["decode", "zh_convert"], {})
