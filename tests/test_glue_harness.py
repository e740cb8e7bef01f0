"""`mlmctl glue` (mlmctl/stages/glue.py, mlmctl/glue_report.py): tiny generated tasks in the exact
release layouts (CoLA header-less, MRPC with its BOM, STS-B float scores, MNLI's many columns and
two dev files), a tiny model from the test fixtures; the table, skipped tasks, one-line layout
errors before any training, seeds mean ± std, the baselines, resume after a kill, rerun no-op."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from mlmctl import glue_report
from mlmctl.glue_tasks import TASKS, official_metrics, read_split, task_score
from test_glue_tasks import _mnli
from test_labelled import make_tiny_model_dir

WORDS = {"0": ["dull", "grey", "flat"], "1": ["bright", "vivid", "sharp"]}
NLI = {"entailment": "so", "neutral": "maybe", "contradiction": "never"}
FILLER = [f"w{i}" for i in range(20)]


def _sentence(rng, key_words):
    words = [rng.choice(FILLER) for _ in range(rng.randrange(3, 7))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(key_words))
    return " ".join(words)


def _cola(rng, n):
    rows = []
    for _ in range(n):
        y = rng.choice("01")
        rows.append(f"gj04\t{y}\t{'' if y == '1' else '*'}\t{_sentence(rng, WORDS[y])}\n")
    return "".join(rows)  # no header, 4 columns


def _mrpc(rng, n):
    rows = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"]
    for i in range(n):
        y = rng.choice("01")
        rows.append(f"{y}\t{i}\t{i + 1}\t{_sentence(rng, FILLER)}\t{_sentence(rng, WORDS[y])}\n")
    return "".join(rows)


def _stsb(rng, n):
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"]
    for i in range(n):
        score = rng.choice([0.5, 1.75, 3.0, 4.25, 5.0])
        key = WORDS["1" if score > 2.5 else "0"]
        rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{_sentence(rng, FILLER)}\t"
                    f"{_sentence(rng, key)}\t{score:.3f}\n")
    return "".join(rows)


def _nli(rng, n, label_cols):
    rows = []
    for _ in range(n):
        y = rng.choice(list(NLI))
        rows.append((_sentence(rng, FILLER), _sentence(rng, [NLI[y]]), y))
    return _mnli(label_cols, rows)


def write_glue(root, tasks=("CoLA", "MRPC", "STS-B", "MNLI"), n_train=48, n_dev=24):
    rng = random.Random(0)
    five = ["label1", "label2", "label3", "label4", "label5"]
    makers = {"CoLA": lambda n, dev: _cola(rng, n), "MRPC": lambda n, dev: _mrpc(rng, n),
              "STS-B": lambda n, dev: _stsb(rng, n), "MNLI": lambda n, dev: _nli(rng, n, five if dev else ["label1"])}
    for name in tasks:
        d = root / name
        d.mkdir(parents=True)
        (d / "train.tsv").write_text(makers[name](n_train, False), encoding="utf-8")
        for dev in TASKS[name].dev_files:
            (d / dev).write_text(makers[name](n_dev, True), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue-model")
    texts = [" ".join(FILLER + sum(WORDS.values(), []) + list(NLI.values()))] * 5
    return make_tiny_model_dir(root, texts, hidden=16, layers=1)


def _args(glue, model, out, *more):
    return ["glue", "--glue-dir", glue, "--input", model, "--output", out, "--set", "epochs=2", "--set", "lr=0.003",
            "--set", "batch_size=8", "--set", "max_seq_len=32", "--set", "threads=1", "--set", "device=cpu", *more]


def test_table_seeds_baselines_resume_and_rerun(tmp_path, model, run_cli, monkeypatch):
    glue, out = write_glue(tmp_path / "GLUE"), tmp_path / "glue"

    # A kill after every sub-run finished, before the table: nothing looks finished...
    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(glue_report, "build", killed)
        code, _, err = run_cli(*_args(glue, model, out, "--seeds", "2"))
    assert code == 130, err
    assert not (out / "manifest.json").exists() and not (out / "glue.json").exists()
    runs = sorted(out.glob("*/seed-*/manifest.json"))
    assert len(runs) == 8  # 4 tasks x 2 seeds, each an ordinary finetune run
    stamps = {p: p.stat().st_mtime_ns for p in runs}

    # ... and the rerun reuses the finished sub-runs instead of training them again.
    code, stdout, err = run_cli(*_args(glue, model, out, "--seeds", "2"))
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    assert err.count("up to date") >= 8

    report = json.loads((out / "glue.json").read_text())
    assert list(report["tasks"]) == ["CoLA", "MRPC", "STS-B", "MNLI-m", "MNLI-mm"]
    assert set(report["skipped"]) == {"SST-2", "QQP", "QNLI", "RTE", "WNLI"}
    assert report["skipped"]["QQP"].startswith("no ") and report["seeds"] == [0, 1]
    for name, row in report["tasks"].items():
        scores = [r["score"] for r in row["runs"]]
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        assert scores == [task_score(r["figures"]) for r in row["runs"]]
        assert row["score"]["mean"] == pytest.approx(statistics.fmean(scores))
        assert row["score"]["std"] == pytest.approx(statistics.stdev(scores))
        assert list(row["figures"]) == list(TASKS[row["task"]].metrics)
    assert report["tasks"]["MNLI-m"]["dev_file"] == "dev_matched.tsv"
    assert report["tasks"]["MNLI-m"]["runs"][0]["run"] == "MNLI/seed-0"
    avg = report["average"]
    assert avg["model"]["mean"] == pytest.approx(statistics.fmean(avg["per_seed"]))

    # The baselines, recomputed here from their definitions on the release files.
    mnli_dev = read_split(TASKS["MNLI"], glue / "MNLI/dev_mismatched.tsv")
    mnli_train = read_split(TASKS["MNLI"], glue / "MNLI/train.tsv")
    majority = max(TASKS["MNLI"].labels, key=mnli_train.labels.count)
    assert report["tasks"]["MNLI-mm"]["majority"]["figures"]["accuracy"] == pytest.approx(
        mnli_dev.labels.count(majority) / len(mnli_dev))
    assert report["tasks"]["CoLA"]["majority"]["figures"] == {"mcc": 0.0}
    assert report["tasks"]["STS-B"]["majority"]["figures"] == {"pearson": 0.0, "spearman": 0.0}
    from mlmctl.baseline import BowBaseline

    cola = TASKS["CoLA"]
    train, dev = read_split(cola, glue / "CoLA/train.tsv"), read_split(cola, glue / "CoLA/dev.tsv")
    bow = BowBaseline().fit(train.texts, [int(y) for y in train.labels], None, 2)
    pred = [cola.labels[i] for i in bow.predict(dev.texts)]
    assert report["tasks"]["CoLA"]["bow"]["figures"] == pytest.approx(official_metrics(cola, dev.labels, pred))
    assert report["tasks"]["CoLA"]["bow"]["figures"]["mcc"] > 0.5  # the keywords are learnable

    # The model's figures, recomputed by `mlmctl eval` (its own prediction path) on the converted file.
    code, _, err = run_cli("eval", "--input", out / "MNLI/seed-1/best", "--output", tmp_path / "ev",
                           "--set", f"test_file={out / 'MNLI/data/dev_mismatched.jsonl'}", "--set", "bootstrap_resamples=0")
    assert code == 0, err
    assert json.loads((tmp_path / "ev/eval.json").read_text())["accuracy"] == pytest.approx(
        report["tasks"]["MNLI-mm"]["runs"][1]["figures"]["accuracy"])
    first = json.loads((out / "MRPC/data/train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "text_pair", "label"} and first["label"] in ("0", "1")  # the BOM is gone

    # The printed table, and the same table on disk.
    for line in ("| MNLI-m | acc |", "| MNLI-mm | acc |", "| MRPC | f1/acc |", "| average |"):
        assert line in stdout, stdout
    assert "skipped: SST-2 (no " in stdout
    behind = [k for k, r in report["tasks"].items() if r["score"]["mean"] <= r["bow"]["score"]]
    assert behind and f"the model does not beat the bag-of-words baseline on: {', '.join(behind)}" in stdout
    text = (out / "glue.txt").read_text()
    assert "±" in text and "MNLI-mm" in text and "bag-of-words" in text
    assert (out / "glue.md").read_text().count("\n| ") == 1 + 5 + 1  # header, rows, average

    # Finished: the same command again does nothing.
    mtime = (out / "glue.json").stat().st_mtime_ns
    code, _, err = run_cli(*_args(glue, model, out, "--seeds", "2"))
    assert code == 0 and "up to date" in err and (out / "glue.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("rel, text, message", [
    ("MNLI/train.tsv", "sentence1\tsentence2\tlabel\nA\tB\tentailment\n",
     r"MNLI/train.tsv:1: MNLI header has no column 'gold_label'"),
    ("CoLA/dev.tsv", "source\tlabel\tjudgement\tsentence\n", r"CoLA/dev.tsv:1: CoLA label 'label'"),
    ("STS-B/dev.tsv", None, r"STS-B needs dev.tsv"),
    (None, None, r"`max_seq_len` 128 exceeds the model's max_position_embeddings 64"),
])
def test_bad_input_is_one_line_before_any_training(tmp_path, model, run_cli, rel, text, message):
    import re

    glue, out = write_glue(tmp_path / "GLUE"), tmp_path / "glue"
    if rel is not None and text is None:
        (glue / rel).unlink()
    elif rel is not None:
        (glue / rel).write_text(text, encoding="utf-8")
    code, _, err = run_cli(*_args(glue, model, out, *(["--set", "max_seq_len=128"] if rel is None else [])))
    assert code == 1 and err.count("\n") == 1 and err.startswith("mlmctl: error: "), err
    assert re.search(message, err), err
    assert not out.exists()  # nothing written, no task trained


def test_tasks_filter_flags_and_bad_task_names(tmp_path, model, run_cli):
    code, out, err = run_cli("glue", "--glue-dir", "2024", "--seeds", "3", "--set", "tasks=[RTE, CoLA]",
                             "--print-config")
    assert code == 0, err
    assert "seeds: 3" in out and "glue_dir: '2024'" in out
    code, _, err = run_cli("glue", "--set", "tasks=[COLA]", "--print-config")
    assert code == 1 and "unknown task 'COLA'" in err
    write_glue(tmp_path / "GLUE", tasks=("CoLA",), n_train=4, n_dev=2)
    code, _, err = run_cli("glue", "--glue-dir", tmp_path / "GLUE", "--set", "tasks=[RTE]", "--input", model,
                           "--set", "max_seq_len=32", "--output", tmp_path / "o")
    assert code == 1 and "none of `tasks` (RTE)" in err and "holds CoLA" in err


def test_report_counts_mnli_once_and_spreads_over_seeds():
    runs = lambda *scores: [{"seed": i, "run": f"X/seed-{i}", "dev": s} for i, s in enumerate(scores)]  # noqa: E731
    results = {
        "CoLA": {"runs": runs({"dev.tsv": {"mcc": 0.2}}, {"dev.tsv": {"mcc": 0.4}}),
                 "examples": {"train.tsv": 10, "dev.tsv": 5},
                 "baselines": {"bow": {"dev.tsv": {"mcc": 0.1}}, "majority": {"dev.tsv": {"mcc": 0.0}}}},
        "MNLI": {"runs": runs({"dev_matched.tsv": {"accuracy": 0.6}, "dev_mismatched.tsv": {"accuracy": 0.8}},
                              {"dev_matched.tsv": {"accuracy": 0.6}, "dev_mismatched.tsv": {"accuracy": 0.6}}),
                 "examples": {"train.tsv": 10, "dev_matched.tsv": 5, "dev_mismatched.tsv": 5}, "baselines": {}},
    }
    report = glue_report.build(results, {"QQP": "no GLUE/QQP directory"}, [0, 1], {"model": "m"})
    assert report["tasks"]["CoLA"]["score"] == {"mean": pytest.approx(0.3), "std": pytest.approx(0.1414, abs=1e-4)}
    # seed 0: (0.2 + (0.6 + 0.8) / 2) / 2 = 0.45; seed 1: (0.4 + 0.6) / 2 = 0.5
    assert report["average"]["per_seed"] == pytest.approx([0.45, 0.5])
    assert "bow" not in report["average"]  # MNLI has none: no average of a part
    rows = glue_report.table_rows(report)
    assert rows[0] == ["CoLA", "mcc", "30.0 ± 14.1", "", "10.0", "0.0"]
    assert rows[-1][:3] == ["average", "", "47.5 ± 3.5"]
    assert "skipped: QQP (no GLUE/QQP directory)" in glue_report.render(report, markdown=False)
