"""Reading labelled TSV/CSV/JSONL files, and the clear errors on bad ones."""

import gzip
import json

import pytest

from mlmctl.errors import InputError, MlmctlError
from mlmctl.labelled import encode_labels, label_list, read_labelled


def test_tsv_with_pair_and_gzip(tmp_path):
    p = tmp_path / "train.tsv.gz"
    p.write_bytes(gzip.compress("label\ta\tb\npos\thello\tworld\nneg\tbye\tnow\n".encode()))
    d = read_labelled(p, text_field="a", text_pair_field="b")
    assert d.texts == ["hello", "bye"] and d.pairs == ["world", "now"] and d.labels == ["pos", "neg"]


def test_csv_quoting_and_no_header(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text('"a, quoted\ntext",1\nplain,0\n')
    d = read_labelled(p, text_field="0", label_field="1", has_header=False)
    assert d.texts == ["a, quoted\ntext", "plain"] and d.labels == ["1", "0"]


def test_jsonl_int_and_string_labels_are_one_label_set(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "1"}\n{"text": " ", "label": 2}\n')
    d = read_labelled(p)
    assert d.labels == ["1", "1"] and d.dropped == {"empty_text": 1}


def test_label_order_numeric_and_explicit():
    assert label_list(["10", "2", "1"]) == ["1", "2", "10"]
    assert label_list(["b", "a"]) == ["a", "b"]
    assert label_list(["b"], ["b", "a"]) == ["b", "a"]
    with pytest.raises(MlmctlError, match="not in the configured"):
        label_list(["c"], ["a", "b"])


@pytest.mark.parametrize(
    "name, content, kwargs, match",
    [
        ("missing.tsv", "sentence\tlabel\nhi\t1\n", {"text_field": "text"}, r"no column `text` \(columns: sentence, label\)"),
        ("empty.tsv", "", {}, "no examples"),
        ("header.tsv", "text\tlabel\n", {}, "no examples"),
        ("ragged.tsv", "text\tlabel\nok\t1\nbad\ttab\t1\n", {}, r"ragged.tsv:3: TSV row has 3 fields but the header has 2"),
        ("nolabel.tsv", "text\tlabel\nok\t\n", {}, r"nolabel.tsv:2: empty label"),
        ("missing.jsonl", '{"text": "a"}\n', {}, r"missing.jsonl:1: no field `label`"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n', {}, r"bad.jsonl:2: invalid JSON"),
        ("float.jsonl", '{"text": "a", "label": [1]}\n', {}, "not a string or an integer"),
        ("what.txt", "x", {}, "cannot tell the format"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, name, content, kwargs, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(InputError, match=match):
        read_labelled(p, **kwargs)


def test_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"text\tlabel\nok\t1\nbad \xff\t1\n")
    with pytest.raises(InputError, match=r"x.tsv:3: invalid UTF-8"):
        read_labelled(p)


def test_unseen_label_is_an_error(tmp_path):
    p = tmp_path / "dev.jsonl"
    p.write_text("\n".join(json.dumps({"text": "t", "label": x}) for x in ["a", "z"]))
    d = read_labelled(p)
    with pytest.raises(InputError, match=r"dev.jsonl: label\(s\) 'z' not in the training label set"):
        encode_labels(d, {"a": 0, "b": 1})
    ok = read_labelled(p)
    assert encode_labels(ok, {"a": 0, "z": 1}) == [0, 1]


# ----------------------------------------------------------------------------------------------
# A tiny model directory (own WordPiece tokenizer + random BERT), shared by the finetune, eval,
# fill-mask and inspect tests (`from test_labelled import make_tiny_model_dir`).

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_model_dir(root, texts, *, vocab_size=300, seed=0, hidden=32, layers=2, max_pos=64):
    """Train a WordPiece tokenizer on `texts` and save a random tiny BertForPreTraining
    as an mlmctl model directory at root/model; returns that path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from mlmctl.model import BertForPreTraining, ModelConfig
    from mlmctl.model_dir import save_model_dir

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(  # as build-vocab writes it
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok_dir = root / "tok"
    tok_dir.mkdir(parents=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (tok_dir / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab))
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=max_pos)
    torch.manual_seed(seed)
    return save_model_dir(BertForPreTraining(cfg), root / "model", tokenizer_dir=tok_dir,
                          architectures=["BertForMaskedLM"])


def test_text_encoder_layout_and_truncation(tmp_path):
    texts = ["alpha beta gamma delta", "one two three"]
    model_dir = make_tiny_model_dir(tmp_path, texts * 5)
    from mlmctl.labelled import LabelledData
    from mlmctl.text_encoder import TextEncoder

    enc = TextEncoder(model_dir, max_seq_len=6, reader="test")
    single = enc.encode(LabelledData("x", ["alpha beta gamma delta epsilon"], None, ["a"]), {"a": 0})
    assert single.ids[0][0] == enc.cls_id and single.ids[0][-1] == enc.sep_id and len(single.ids[0]) == 6
    assert single.truncated == 1 and single.labels == [0]
    pair = enc.encode(LabelledData("x", ["alpha beta gamma delta"], ["one"], ["a"]), {"a": 0})
    ids, types = pair.ids[0], pair.token_types[0]
    assert len(ids) == 6 and ids.count(enc.sep_id) == 2
    assert types == [0, 0, 0, 0, 1, 1]  # longest-first: a keeps 2 words, b keeps its 1
