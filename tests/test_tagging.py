"""Tagged-file readers, sub-word alignment, windows and merging (mlmctl/tagging.py), with a
real (tiny, built here) `tokenizers` WordPiece tokenizer."""

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.errors import InputError
from mlmctl.tagging import (
    IGNORE,
    align_labels,
    iob1_to_iob2,
    make_windows,
    merge_windows,
    model_input,
    read_tagged,
    tag_list,
)

CONLL = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""

WORDS = ["eu", "re", "##jects", "german", "peter", "black", "##burn", "##s", "a", "##b", "##c"]


@pytest.fixture(scope="module")
def tok():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    t = tokenizers.Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return t


def test_conll_reader(tmp_path):
    p = tmp_path / "train.conll"
    p.write_text(CONLL)
    d = read_tagged(p)
    assert d.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert d.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert d.lines == [3, 7] and d.ill_formed == {}
    chunks = read_tagged(p, tag_column=2)  # another column: the chunk tags
    assert chunks.tags[1] == ["B-NP", "I-NP"]
    gz = tmp_path / "train.conll.gz"
    gz.write_bytes(gzip.compress(CONLL.encode()))
    assert read_tagged(gz).tags == d.tags
    assert tag_list(d.tags) == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_jsonl_reader(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps({"tokens": ["Peter", "went"], "tags": ["S-PER", "O"]}) + "\n\n")
    d = read_tagged(p, scheme="iobes")
    assert d.tokens == [["Peter", "went"]] and d.tags == [["S-PER", "O"]]


@pytest.mark.parametrize("name, text, scheme, message", [
    ("a.conll", "EU B-ORG\nrejects E-ORG\n", "iob2", r"a.conll:2: tag 'E-ORG' is not in the IOB2 scheme"),
    ("a.conll", "EU B-ORG\nrejects\n", "iob2", r"a.conll:2: 1 columns but the file's first token line has 2"),
    ("a.conll", "EU NNP B-ORG\nrejects VBZ O\n\nx Y\n", "iob2", r"a.conll:4: 2 columns"),
    ("a.conll", "EU\nrejects\n", "iob2", r"a.conll:1: tag_column -1 is not a tag column"),
    ("a.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', "iob2", r"a.jsonl:1: 2 tokens but 1 tags"),
    ("a.jsonl", '\n{"tokens": ["a"], "tags": [""]}\n', "iob2", r"a.jsonl:2: empty tag"),
    ("a.jsonl", '{"tokens": ["a"], "tags": ["X-PER"]}\n', "iobes", r"a.jsonl:1: tag 'X-PER' is not in the IOBES"),
    ("a.jsonl", '{"tokens": "a b", "tags": ["O"]}\n', "iob2", r"a.jsonl:1: `tokens` must be a list of strings"),
    ("a.conll", "\n\n-DOCSTART- O\n", "iob2", r"a.conll: no tagged sentences"),
])
def test_bad_input_names_file_and_line(tmp_path, name, text, scheme, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        read_tagged(p, scheme=scheme)
    assert "\n" not in str(e.value)


def test_ill_formed_iob2_is_kept_and_counted(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text("x O\nPeter I-PER\n\ny B-LOC\nz I-LOC\n\nw I-LOC\n")
    d = read_tagged(p)
    assert d.tags[0] == ["O", "I-PER"]  # kept as written
    assert d.ill_formed == {"first": f"{p}:1", "count": 2}
    assert read_tagged(p, scheme="none").ill_formed == {}
    assert iob1_to_iob2(["O", "I-PER", "I-PER", "B-PER", "I-LOC"]) == ["O", "B-PER", "I-PER", "B-PER", "B-LOC"]


def test_align_labels():
    assert align_labels([None, 0, 1, 1, 2, None], [5, 6, 7]) == [IGNORE, 5, 6, IGNORE, 7, IGNORE]


def test_windows_first_subword_and_merge(tok):
    sents = [["EU", "rejects", "German", "Blackburns"], ["Peter"]]
    tags = [[1, 0, 2, 3], [4]]
    wins = make_windows(tok, sents, tags, max_subwords=100)
    assert len(wins) == 2
    w = wins[0]
    assert [tok.id_to_token(i) for i in w.ids] == ["eu", "re", "##jects", "german", "black", "##burn", "##s"]
    assert w.labels == [1, 0, IGNORE, 2, 3, IGNORE, IGNORE]
    ids, labels = model_input(w, 2, 3)
    assert ids[0] == 2 and ids[-1] == 3 and labels[0] == labels[-1] == IGNORE
    # predict each sub-word's label id back (IGNORE positions get junk that must not matter)
    preds = [[lab if lab != IGNORE else 99 for lab in win.labels] for win in wins]
    assert merge_windows(wins, preds, [4, 1]) == tags


def test_word_without_subwords_becomes_unk(tok):
    wins = make_windows(tok, [["eu", "\u200b", "german"]], [[1, 2, 3]], max_subwords=10)
    assert wins[0].labels == [1, 2, 3]
    assert tok.id_to_token(wins[0].ids[1]) == "[UNK]"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["EU", "rejects", "Blackburns", "abc", "Peter", "zzz"]), min_size=1, max_size=20),
       st.integers(1, 6))
def test_windows_never_lose_a_tag(tok, words, max_subwords):
    tags = [[i % 5 for i in range(len(words))]]
    wins = make_windows(tok, [words], tags, max_subwords)
    assert all(len(w.ids) <= max_subwords for w in wins)
    labelled = [lab for w in wins for lab in w.labels if lab != IGNORE]
    assert labelled == tags[0]  # every word exactly once, in order
    preds = [list(w.labels) for w in wins]
    assert merge_windows(wins, [[p if p != IGNORE else 0 for p in ps] for ps in preds], [len(words)]) == tags
