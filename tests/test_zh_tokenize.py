"""Chinese 分词 in tokenize and build-vocab: word starts mark whole jieba words, ids stay per character."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tokenizers")
rjieba = pytest.importorskip("rjieba")

from mlmctl import zh_corpus  # noqa: E402
from mlmctl.pretokenize import WORD_JOINER  # noqa: E402
from stages.test_tokenize import make_clean_dir, written_docs  # noqa: E402

SEG = ("--set", "segment.kind=jieba")


def _chain(run_cli, tmp_path, name, docs, held_out, *args, workers="1"):
    clean = make_clean_dir(tmp_path / "clean", docs, shards=3, validation=held_out)
    tok, vocab = tmp_path / f"tok-{name}", tmp_path / f"vocab-{name}"
    code, _, err = run_cli("tokenize", "--input", clean, "--output", tok, "--workers", workers, *args)
    assert code == 0, err
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", vocab, "--workers", workers,
                           "--set", "vocab_size=3000")
    assert code == 0, err
    return tok, vocab


@pytest.fixture(scope="module")
def corpus():
    docs = [d["text"] for d in zh_corpus.documents(240, seed=5)] + zh_corpus.mixed(20, seed=5)
    held_out = [d["text"] for d in zh_corpus.documents(30, seed=99)]
    return docs, held_out


def test_segmented_words_and_identical_ids_for_any_workers(tmp_path, run_cli, corpus):
    docs, held_out = corpus
    tok1, vocab1 = _chain(run_cli, tmp_path, "w1", docs, held_out, *SEG, workers="1")
    tok2, vocab2 = _chain(run_cli, tmp_path, "w2", docs, held_out, *SEG, workers="2")
    for rel in ("tokenizer.json", "vocab.txt", "train/shard-00000.ids.bin", "train/shard-00001.wstart.bin",
                "validation/shard-00000.ids.bin"):
        assert (vocab1 / rel).read_bytes() == (vocab2 / rel).read_bytes(), rel

    stats = json.loads((vocab1 / "stats.json").read_text())
    assert stats["validation"]["unk_rate"] < 0.005  # held-out Chinese text

    # The vocabulary is per character: every Han character of the corpus is a token of its own.
    vocab = set((vocab1 / "vocab.txt").read_text(encoding="utf-8").split("\n"))
    assert set("体育足球饺子") <= vocab and "足球" not in vocab

    # Word starts are exactly jieba's words on the first train sentence.
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(vocab1 / "tokenizer.json"))
    off = np.fromfile(vocab1 / "train" / "sent_offsets.bin", dtype="<i8")
    ids = np.fromfile(vocab1 / "train" / "shard-00000.ids.bin", dtype="<u2")[off[0]:off[1]]
    ws = np.fromfile(vocab1 / "train" / "shard-00000.wstart.bin", dtype=np.uint8)[off[0]:off[1]].astype(bool)
    tokens = [t.id_to_token(int(i)) for i in ids]
    words, cur = [], ""
    for tok, start in zip(tokens, ws):
        if start and cur:
            words.append(cur)
            cur = ""
        cur += tok
    words.append(cur)
    sentence = "".join(tokens)
    assert words == [w for w in rjieba.cut(sentence) if w.strip()]
    assert any(len(w) > 1 for w in words)


def test_segmentation_changes_word_starts_not_pretokens(tmp_path, run_cli, corpus):
    docs, held_out = corpus
    tok_seg, vocab_seg = _chain(run_cli, tmp_path / "a", "seg", docs, held_out, *SEG)
    tok_off, vocab_off = _chain(run_cli, tmp_path / "b", "off", docs, held_out)
    assert written_docs(tok_seg, "train") == written_docs(tok_off, "train")
    for rel in ("tokenizer.json", "train/shard-00000.ids.bin"):
        assert (vocab_seg / rel).read_bytes() == (vocab_off / rel).read_bytes(), rel
    ws_seg = np.fromfile(vocab_seg / "train" / "shard-00000.wstart.bin", dtype=np.uint8)
    ws_off = np.fromfile(vocab_off / "train" / "shard-00000.wstart.bin", dtype=np.uint8)
    assert ws_seg.sum() < 0.8 * ws_off.sum() and np.all(ws_seg <= ws_off)


def test_user_dictionary_joins_its_words(tmp_path, run_cli):
    text = "小明在深度求索公司工作。"
    clean = make_clean_dir(tmp_path / "clean", [text] * 3, shards=1)
    (tmp_path / "user.dict").write_text("# names\n深度求索 10 nz\n", encoding="utf-8")
    lines = {}
    for name, extra in (("plain", ()), ("user", ("--set", f"segment.user_dict={tmp_path / 'user.dict'}"))):
        code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp_path / name, *SEG, *extra)
        assert code == 0, err
        import gzip

        lines[name] = gzip.open(tmp_path / name / "train" / "shard-00000.txt.gz", "rt").readline()
    j = WORD_JOINER
    assert f"深{j}度{j}求{j}索" in lines["user"] and f"深{j}度{j}求{j}索" not in lines["plain"]


def test_bad_settings_are_one_line_errors(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", ["你好世界。"] * 3, shards=1)
    code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp_path / "t1", *SEG,
                           "--set", f"segment.user_dict={tmp_path / 'missing.dict'}")
    assert code == 1 and "segment.user_dict" in err and "Traceback" not in err
    code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp_path / "t2", *SEG,
                           "--set", "pretokenizer.kind=byte-level")
    assert code != 0 and "segment.kind" in err and "Traceback" not in err


def _reference_line(jieba, sentence: str, words: list[str]) -> tuple[str, bool]:
    """The joining rule written out per character (slow and plain), and whether it aligned."""
    from mlmctl.scripts import HAN_RANGES

    def is_han(c):
        return any(lo <= ord(c) <= hi for lo, hi in HAN_RANGES)

    line = " ".join(words)
    flags = []  # per Han character of the sentence: continues the previous character's word
    for word in jieba.cut(sentence, True):
        flags += [is_han(c) and i > 0 and is_han(word[i - 1]) for i, c in enumerate(word) if is_han(c)]
    pos = [i for i, c in enumerate(line) if is_han(c)]
    if not flags:
        return line, True
    if len(pos) != len(flags):
        return line, False
    chars = list(line)
    for k in range(1, len(pos)):
        if flags[k] and pos[k] - pos[k - 1] == 2:
            chars[pos[k] - 1] = WORD_JOINER
    return "".join(chars), True


def test_batched_marking_equals_the_per_sentence_rule():
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json
    from mlmctl.segment import SegmentConfig, Segmenter, segmenter_spec

    sentences = [d["text"] for d in zh_corpus.documents(40, seed=8)] + zh_corpus.mixed(10, seed=8) + [
        "A股和B股都涨了。", "我用iPhone15拍照", "GitHub上有3.12版本", "北京是中国的首都\n上海是最大的城市",
        "No Chinese here at all.", "豈更車賈滑串句龜契金喇奈懶癩羅蘿。", "𠀀𠀁𠀂是扩展B区的字", "ＡＢＣ和１２３全角",
        "他说：“今天天气很好！”然后走了……", "abc", "中", "def北京", "Ｃａｆé和naïve混在中文里"]
    pre = Pretokenizer(pipeline_json(PretokenizerConfig()))
    words = [pre.words(s) for s in sentences]
    seg = Segmenter(segmenter_spec(SegmentConfig(kind="jieba")))
    reference = rjieba.Jieba()
    expected = [_reference_line(reference, s, w)[0] for s, w in zip(sentences, words)]
    assert seg.mark_lines(sentences, words) == expected
    assert [seg.mark(s, w) for s, w in zip(sentences, words)] == expected
    assert seg.unaligned == 0 and any(WORD_JOINER in x for x in expected)

    # Pre-tokens that do not match the sentence's Han characters: written without joins, counted.
    bad = [["北", "京"], ["上", "海", "是"]]
    assert seg.mark_lines(["北京是", "上海是"], bad) == ["北 京", f"上{WORD_JOINER}海 是"]
    assert seg.unaligned == 1
