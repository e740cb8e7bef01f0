"""GLUE release layouts (mlmctl/glue_tasks.py): small files written here in the exact public
layouts (headers, column counts, CoLA without a header, MNLI's 12/16 columns, MRPC's BOM)."""

import pytest

from mlmctl.errors import InputError
from mlmctl.glue_tasks import TASKS, discover, glue_average, official_metrics, read_split, task_score

MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _mnli(labels_cols, rows):
    head = MNLI_HEAD + labels_cols + ["gold_label"]
    lines = ["\t".join(head)]
    for i, (a, b, lab) in enumerate(rows):
        lines.append("\t".join([str(i), "31193", f"{i}n", "government", "( ( x ) )", "( y )", "(ROOT x)", "(ROOT y)",
                                a, b] + [lab] * len(labels_cols) + [lab]))
    return "\n".join(lines) + "\n"


FILES = {
    "CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
    "CoLA/dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n",
    "SST-2/train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\ngreat \"fun\"\t1\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\n",
    "MRPC/train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                      "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him, Amrozi accused him.\n",
    "MRPC/dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tHe said.\tShe said.\n",
    "STS-B/train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                       "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
                       "An air plane is taking off.\t5.000\n",
    "STS-B/dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                     "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat.\t"
                     "A man wearing a hard hat.\t4.250\n",
    "MNLI/train.tsv": _mnli(["label1"], [("He said \"hi.", "He spoke.", "entailment"), ("A", "", "neutral")]),
    "MNLI/dev_matched.tsv": _mnli(["label1", "label2", "label3", "label4", "label5"],
                                  [("X", "Y", "contradiction")]),
    "MNLI/dev_mismatched.tsv": _mnli(["label1", "label2", "label3", "label4", "label5"], [("X", "Z", "neutral")]),
}


def _write(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def test_discover_and_read_every_layout(tmp_path):
    _write(tmp_path, FILES)
    present, skipped = discover(tmp_path)
    assert [t.name for t in present] == ["CoLA", "SST-2", "MRPC", "STS-B", "MNLI"]
    assert set(skipped) == {"QQP", "QNLI", "RTE", "WNLI"} and "no " in skipped["QQP"]

    cola = read_split(TASKS["CoLA"], tmp_path / "CoLA/train.tsv")
    assert cola.texts == ["Our friends won't buy this analysis.", "They drank the pub."]
    assert cola.labels == ["1", "0"] and cola.pairs is None
    assert read_split(TASKS["SST-2"], tmp_path / "SST-2/train.tsv").texts[1] == 'great "fun"'  # no quoting
    mrpc = read_split(TASKS["MRPC"], tmp_path / "MRPC/train.tsv")  # BOM before "Quality"
    assert mrpc.labels == ["1"] and mrpc.pairs == ["Referring to him, Amrozi accused him."]
    stsb = read_split(TASKS["STS-B"], tmp_path / "STS-B/dev.tsv")
    assert stsb.labels == [4.25] and stsb.pairs == ["A man wearing a hard hat."]
    mnli = read_split(TASKS["MNLI"], tmp_path / "MNLI/train.tsv")
    assert mnli.texts == ['He said "hi.'] and mnli.labels == ["entailment"]
    assert mnli.dropped == {"empty_text": 1}
    assert read_split(TASKS["MNLI"], tmp_path / "MNLI/dev_mismatched.tsv").labels == ["neutral"]


@pytest.mark.parametrize("rel, text, message", [
    # an exported CoLA with a header line: its "label" is no CoLA label
    ("CoLA/train.tsv", "source\tlabel\tjudgement\tsentence\n",
     r"CoLA/train.tsv:1: CoLA label 'label' is not one of 0, 1 \(a header line"),
    ("CoLA/train.tsv", "sentence\tlabel\n", r"CoLA/train.tsv:1: CoLA row has 2 tab-separated fields, expected 4"),
    ("CoLA/train.tsv", "gj04\t1\tOne too few columns\n", r"CoLA/train.tsv:1: CoLA row has 3 tab-separated fields"),
    ("STS-B/train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
     "0\tg\tf\ty\to\tn\tn\tA.\tB.\tfive\n", r"STS-B/train.tsv:2: STS-B score 'five' is not a number"),
    ("MNLI/train.tsv", "sentence1\tsentence2\tlabel\nA\tB\tentailment\n",
     r"MNLI/train.tsv:1: MNLI header has no column 'gold_label'"),
    ("SST-2/dev.tsv", "sentence\tlabel\nfine\t1\nwith\ta tab\t0\n", r"SST-2/dev.tsv:3: SST-2 row has 3"),
    ("SST-2/dev.tsv", "sentence\tlabel\nfine\tpositive\n", r"SST-2/dev.tsv:2: SST-2 label 'positive'"),
])
def test_wrong_layout_names_file_and_line(tmp_path, rel, text, message):
    _write(tmp_path, {**FILES, rel: text})
    task = TASKS[rel.split("/")[0]]
    with pytest.raises(InputError, match=message) as e:
        read_split(task, tmp_path / rel)
    assert "\n" not in str(e.value)


def test_incomplete_task_directory_is_an_error_not_a_skip(tmp_path):
    _write(tmp_path, {"MNLI/train.tsv": FILES["MNLI/train.tsv"], "MNLI/dev.tsv": "x"})
    with pytest.raises(InputError, match=r"MNLI needs dev_matched.tsv .*holds dev.tsv, train.tsv"):
        discover(tmp_path)
    with pytest.raises(InputError, match="no GLUE task directory"):
        discover(tmp_path / "MNLI")


def test_official_metrics_and_scores():
    cola = official_metrics(TASKS["CoLA"], ["1", "1", "1", "0"], ["1", "0", "1", "1"])
    assert cola == {"mcc": pytest.approx(-1 / 3)}
    mrpc = official_metrics(TASKS["MRPC"], ["1", "1", "0", "0"], ["1", "0", "1", "0"])
    assert mrpc == {"f1": pytest.approx(0.5), "accuracy": pytest.approx(0.5)}
    sts = official_metrics(TASKS["STS-B"], [1.0, 2.0, 3.0], [1.1, 2.5, 2.9])
    assert list(sts) == ["pearson", "spearman"] and sts["spearman"] == pytest.approx(1.0)
    assert task_score({"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert glue_average({"CoLA": 0.5, "MNLI-m": 0.8, "MNLI-mm": 0.6}) == pytest.approx((0.5 + 0.7) / 2)


def test_the_docs_snippet_runs_on_the_release_layout(tmp_path, monkeypatch, capsys):
    """docs/glue.md's Python block, extracted from the doc (so doc and test cannot drift), on a
    GLUE directory written in the public layouts."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "glue.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1
    _write(tmp_path / "GLUE", FILES)
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "docs/glue.md", "exec"), {})
    out = capsys.readouterr().out
    for name in ("CoLA", "SST-2", "MRPC", "STS-B", "MNLI"):
        assert f"\n{name} " in "\n" + out, name
    assert "dev_matched.tsv" in out and "dev_mismatched.tsv" in out
