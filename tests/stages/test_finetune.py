"""finetune: learns a generated task well above the majority class, reproducibly, writes an HF
classifier directory that transformers loads with the same logits, and refuses bad label files."""

from __future__ import annotations

import json
import random

import pytest

from mlmctl.shards import file_sha256
from test_labelled import make_tiny_model_dir

CLASSES = {"fruit": ["apple", "pear", "plum", "grape"], "car": ["wheel", "engine", "brake", "tyre"],
           "sea": ["wave", "tide", "shell", "coral"]}
FILLER = [f"w{i}" for i in range(40)]


def task_rows(n, seed, weights=(0.5, 0.3, 0.2)):
    """Texts of filler words with one or two keywords of the label's class (unbalanced classes)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choices(list(CLASSES), weights)[0]
        words = [rng.choice(FILLER) for _ in range(rng.randrange(6, 14))]
        for _ in range(rng.randrange(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(CLASSES[label]))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    train, dev, test = task_rows(300, 1), task_rows(90, 2), task_rows(120, 3)
    model = make_tiny_model_dir(root, [t for t, _ in train])
    return {"root": root, "model": model, "train": write_tsv(root / "train.tsv", train),
            "dev": write_tsv(root / "dev.tsv", dev), "test": write_tsv(root / "test.tsv", test),
            "test_rows": test}


def _args(task, out, *more):
    return ["finetune", "--input", task["model"], "--output", out,
            "--set", f"train_file={task['train']}", "--set", f"dev_file={task['dev']}",
            "--set", "lr=0.003", "--set", "batch_size=16", "--set", "threads=1", "--set", "warmup_ratio=0.05", "--set", "max_seq_len=32",
            *more]


def test_finetune_beats_majority_and_loads_in_transformers(task, tmp_path, run_cli):
    out = tmp_path / "run"
    code, stdout, err = run_cli(*_args(task, out, "--set", "epochs=6", "--set", f"test_file={task['test']}",
                                       "--set", "length_bucketing=true"))
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    labels = m["extra"]["labels"]
    assert labels == ["car", "fruit", "sea"]
    test_labels = [y for _, y in task["test_rows"]]
    majority = max(test_labels.count(x) for x in labels) / len(test_labels)
    assert m["extra"]["test"]["accuracy"] > majority + 0.25, (m["extra"]["test"], majority)
    assert m["extra"]["dev"]["accuracy"] > 0.7

    # metrics.jsonl: training lines and dev lines, the best step among the dev lines.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    dev_lines = [x for x in lines if "dev_macro_f1" in x]
    assert len(dev_lines) == 6  # one per epoch
    assert m["extra"]["best_step"] in {x["step"] for x in dev_lines if x["best"]}
    assert all("loss" in x for x in lines if "dev_macro_f1" not in x)

    # The best/ directory is an HF classifier as it stands, with the same logits as ours.
    transformers = pytest.importorskip("transformers")
    import torch

    from mlmctl.labelled import LabelledData
    from mlmctl.text_encoder import pad_batch, TextEncoder
    from mlmctl.model import BertForSequenceClassification
    from mlmctl.model_dir import load_model_dir

    best = out / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert cfg["label2id"] == {"car": 0, "fruit": 1, "sea": 2}
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(best).eval()
    assert hf.config.id2label == {0: "car", 1: "fruit", 2: "sea"}
    ours, _, _ = load_model_dir(best, BertForSequenceClassification, num_labels=3)
    ours.eval()
    enc = TextEncoder(best, 64, "test").encode(LabelledData("x", [t for t, _ in task["test_rows"][:8]], None,
                                                           ["car"] * 8), {"car": 0})
    ids, mask, types = pad_batch(enc, list(range(8)), 0)
    with torch.no_grad():
        a, _ = ours(ids, attention_mask=mask, token_type_ids=types)
        b = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.allclose(a, b, atol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(best)
    assert tok(task["test_rows"][0][0])["input_ids"] == enc.ids[0]

    # Rerun with the same config and inputs: nothing to do.
    code, _, err = run_cli(*_args(task, out, "--set", "epochs=6", "--set", f"test_file={task['test']}",
                                  "--set", "length_bucketing=true"))
    assert code == 0 and "up to date" in err


def test_seeded_runs_are_identical_and_random_init_differs(task, tmp_path, run_cli):
    shas = []
    for name, init in (("a", "pretrained"), ("b", "pretrained"), ("c", "random")):
        code, _, err = run_cli(*_args(task, tmp_path / name, "--set", "max_steps=6", "--set", "eval_every=3",
                                      "--set", f"init={init}", "--set", "class_weights=balanced",
                                      "--set", "patience=1"))
        assert code == 0, err
        shas.append(file_sha256(tmp_path / name / "best" / "model.safetensors"))
    assert shas[0] == shas[1]
    assert shas[0] != shas[2]
    extra = json.loads((tmp_path / "c" / "manifest.json").read_text())["extra"]
    assert extra["init"] == "random"


def test_pair_task_jsonl(task, tmp_path, run_cli):
    rows = task_rows(60, 5)
    lines = [json.dumps({"a": t, "b": t[::-1], "y": i % 2}) for i, (t, _) in enumerate(rows)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli("finetune", "--input", task["model"], "--output", tmp_path / "run",
                           "--set", f"train_file={tmp_path / 'pairs.jsonl'}", "--set", "dev_file=null",
                           "--set", "text_field=a", "--set", "text_pair_field=b", "--set", "label_field=y",
                           "--set", "max_steps=2", "--set", "threads=1", "--set", "max_seq_len=64")
    assert code == 0, err
    cfg = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "0", "1": "1"}


@pytest.mark.parametrize(
    "dev_content, match",
    [
        ("text\tlabel\nw1 apple\tfruit\nw2 boat\tboat\n", r"dev.tsv: label\(s\) 'boat' not in the training label set"),
        ("sentence\tlabel\nw1\tfruit\n", r"no column `text` \(columns: sentence, label\)"),
        ("", "no examples"),
        ("text\tlabel\nw1\tfruit\textra\n", r"dev.tsv:2: TSV row has 3 fields but the header has 2"),
    ],
)
def test_bad_dev_file_is_one_clear_error_before_training(task, tmp_path, run_cli, dev_content, match):
    import re

    dev = tmp_path / "dev.tsv"
    dev.write_text(dev_content)
    args = _args(task, tmp_path / "run", "--set", "max_steps=1")
    args[args.index(f"dev_file={task['dev']}")] = f"dev_file={dev}"
    code, _, err = run_cli(*args)
    assert code == 1
    assert re.search(match, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_missing_model_and_files(task, tmp_path, run_cli):
    code, _, err = run_cli("finetune", "--input", tmp_path / "nope", "--output", tmp_path / "r")
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli(*_args(task, tmp_path / "r", "--set", "train_file=missing.tsv"))
    assert code == 1 and "`train_file` missing.tsv does not exist" in err
    code, _, err = run_cli(*_args(task, tmp_path / "r", "--set", "metric=f2"))
    assert code == 1 and "metric" in err


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(task, tmp_path):
    """Under torchrun (gloo, 2 CPU processes) finetune trains, and only rank 0 writes."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    args = _args(task, out, "--set", "epochs=2", "--set", "device=cpu")[1:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mlmctl", "finetune", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    # 300 examples, global batch 16: 19 batches, the last (12 examples) split 6/6; 2 epochs.
    assert m["extra"]["steps"] == 38
    assert (out / "best" / "model.safetensors").exists() and not (out / ".work").exists()
    assert proc.stdout.count("mlmctl finetune") == 1  # one summary: rank 0 only


def test_starts_from_a_transformers_saved_bert(task, tmp_path, run_cli):
    """A local HF BERT directory (BertForMaskedLM.save_pretrained + tokenizer.json) is a valid input."""
    import shutil

    transformers = pytest.importorskip("transformers")
    import torch

    cfg = transformers.BertConfig(vocab_size=json.loads((task["model"] / "config.json").read_text())["vocab_size"],
                                  hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    hf_dir = tmp_path / "hf-bert"
    transformers.BertForMaskedLM(cfg).save_pretrained(hf_dir)
    shutil.copy(task["model"] / "tokenizer.json", hf_dir / "tokenizer.json")
    args = [hf_dir if a == task["model"] else a for a in _args(task, tmp_path / "run2", "--set", "max_steps=4")]
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "freshly initialised: bert.pooler, classifier" in err or "freshly initialised: classifier" in err
    best = json.loads((tmp_path / "run2" / "best" / "config.json").read_text())
    assert best["num_hidden_layers"] == 1 and best["architectures"] == ["BertForSequenceClassification"]


def test_missing_column_error_names_the_config_key(task, tmp_path, run_cli):
    code, _, err = run_cli(*_args(task, tmp_path / "r", "--set", "label_field=category"))
    assert code == 1 and "no column `category`" in err and "`label_field`" in err
    assert err.count("\n") == 1


def test_single_class_predictions_are_flagged():
    from mlmctl.metrics import classification_report
    from mlmctl.stages.finetune import single_class_warning

    collapsed = classification_report([0, 1, 2, 0], [0, 0, 0, 0], ["a", "b", "c"])
    assert "single class ('a')" in single_class_warning(collapsed, "test")
    assert single_class_warning(classification_report([0, 1, 2], [0, 1, 1], ["a", "b", "c"]), "dev") is None


def _ft_cmd(task, out, *more):
    import sys

    return [sys.executable, "-m", "mlmctl", *map(str, _args(task, out, "--set", "epochs=4", "--set", "log_every=1",
                                                              "--set", "eval_every=7", *more))]


@pytest.fixture(scope="module")
def ft_reference(task):
    import subprocess

    out = task["root"] / "ref-run"
    subprocess.run(_ft_cmd(task, out), check=True, capture_output=True, timeout=300)
    return out


def _interrupt_then_rerun(task, ft_reference, out, sig, at_step):
    import signal
    import subprocess

    from hold_at_step import stop_at_step
    from mlmctl.progress import TIMING_KEYS

    cmd = _ft_cmd(task, out)
    proc = stop_at_step(cmd, at_step, sig)  # held at that step until the signal comes
    err = proc.stderr
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    else:
        assert proc.returncode == 128 + sig, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"mlmctl: finetune stopped by {signal.Signals(sig).name} after step {at_step} ") \
            and "rerun the same command" in last, last
    assert not (out / "manifest.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    untimed = lambda p: [{k: v for k, v in json.loads(x).items() if k not in TIMING_KEYS}  # noqa: E731
                         for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert untimed(out) == untimed(ft_reference)
    assert file_sha256(out / "best" / "model.safetensors") == file_sha256(ft_reference / "best" / "model.safetensors")
    a, b = (json.loads((p / "manifest.json").read_text())["extra"] for p in (out, ft_reference))
    assert (a["best_step"], a["dev"], a["steps"]) == (b["best_step"], b["dev"], b["steps"])
    assert not (out / ".work").exists()  # the resumable checkpoints go once the run is finished


def test_sigint_checkpoints_and_the_same_command_continues(task, tmp_path, ft_reference):
    import signal

    _interrupt_then_rerun(task, ft_reference, tmp_path / "run", signal.SIGINT, 10)


@pytest.mark.slow
@pytest.mark.parametrize("sig, at_step", [("SIGTERM", 30), ("SIGKILL", 16)])
def test_sigterm_and_sigkill_then_the_same_command_continue(task, tmp_path, ft_reference, sig, at_step):
    import signal

    _interrupt_then_rerun(task, ft_reference, tmp_path / "run", getattr(signal, sig), at_step)


def test_tensorboard_gets_training_and_dev_rows(task, tmp_path, run_cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    code, _, err = run_cli(*_args(task, out, "--set", "epochs=2", "--set", "tensorboard=true"))
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for key, tag in (("loss", "train/loss"), ("dev_accuracy", "dev/accuracy"), ("dev_macro_f1", "dev/macro_f1")):
        expect = [(r["step"], r[key]) for r in rows if key in r]
        events = acc.Scalars(tag)
        assert expect and [e.step for e in events] == [s for s, _ in expect], tag
        assert [e.value for e in events] == pytest.approx([v for _, v in expect], rel=1e-6), tag


@pytest.mark.parametrize("writer, pooling", [("mlmctl", "mean"), ("transformers", None)])
def test_modernbert_classifier_from_either_writer_loads_as_hf_class(task, tmp_path, run_cli, writer, pooling):
    """A ModernBERT directory (ours, or `ModernBertForMaskedLM.save_pretrained`) fine-tunes into a
    directory transformers loads as ModernBertForSequenceClassification, with the same logits."""
    import shutil

    transformers = pytest.importorskip("transformers")
    import torch

    from mlmctl.labelled import LabelledData
    from mlmctl.text_encoder import pad_batch, TextEncoder
    from mlmctl.model_dir import load_model_dir, save_model_dir
    from mlmctl.modernbert import ModernBertConfig, ModernBertForMaskedLM, ModernBertForSequenceClassification

    vocab_size = json.loads((task["model"] / "config.json").read_text())["vocab_size"]
    shape = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64, local_attention=8, pad_token_id=0,
                 cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
    src = tmp_path / "src"
    torch.manual_seed(0)
    if writer == "mlmctl":
        save_model_dir(ModernBertForMaskedLM(ModernBertConfig(**shape)), src, tokenizer_dir=task["model"],
                       architectures=["ModernBertForMaskedLM"])
    else:
        transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**shape)).save_pretrained(src)
        shutil.copy(task["model"] / "tokenizer.json", src / "tokenizer.json")
    more = ["--set", "max_steps=30", "--set", "eval_every=30"]
    if pooling:
        more += ["--set", f"classifier_pooling={pooling}"]
    args = [src if a == task["model"] else a for a in _args(task, tmp_path / "run", *more)]
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "freshly initialised: classifier" in err
    best = tmp_path / "run" / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["architectures"] == ["ModernBertForSequenceClassification"]
    assert cfg["classifier_pooling"] == (pooling or "cls")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(best).eval()
    assert type(hf).__name__ == "ModernBertForSequenceClassification"
    ours, _, _ = load_model_dir(best, ModernBertForSequenceClassification, num_labels=3)
    enc = TextEncoder(best, 64, "test").encode(LabelledData("x", [t for t, _ in task["test_rows"][:8]], None,
                                                           ["car"] * 8), {"car": 0})
    ids, mask, _ = pad_batch(enc, list(range(8)), 0)
    with torch.no_grad():
        a, _ = ours.eval()(ids, attention_mask=mask)
        b = hf(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a, b, atol=1e-4)
    # eval dispatches on the model_type too
    code, _, err = run_cli("eval", "--input", tmp_path / "run", "--output", tmp_path / "ev",
                           "--set", f"test_file={task['test']}")
    assert code == 0, err
    assert 0 <= json.loads((tmp_path / "ev" / "eval.json").read_text())["accuracy"] <= 1


def test_unsupported_model_type_and_misplaced_pooling_are_one_line(task, tmp_path, run_cli):
    import shutil

    src = tmp_path / "roberta"
    shutil.copytree(task["model"], src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    args = [src if a == task["model"] else a for a in _args(task, tmp_path / "r", "--set", "max_steps=2")]
    code, _, err = run_cli(*args)
    assert code == 1 and "model_type 'roberta' is not supported" in err and "Traceback" not in err
    code, _, err = run_cli(*_args(task, tmp_path / "p", "--set", "max_steps=2", "--set", "classifier_pooling=mean"))
    assert code == 1 and "`classifier_pooling` is for modernbert" in err
    assert not (tmp_path / "r" / "manifest.json").exists() and not (tmp_path / "p" / "manifest.json").exists()


def test_metric_f1_needs_a_binary_task(task, tmp_path, run_cli):
    code, _, err = run_cli(*_args(task, tmp_path / "r", "--set", "metric=f1", "--set", "max_steps=1"))
    assert code == 1 and "F1 of the positive class of a binary task" in err and "has 3 labels" in err
    assert not (tmp_path / "r" / "manifest.json").exists()
