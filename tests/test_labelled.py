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
