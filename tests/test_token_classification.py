"""finetune `task: token-classification` and eval's tagger mode, end to end on a generated NER
task: a tagger well above the constant baselines, transformers' pipeline giving the same tags as
`mlmctl eval` (BERT and ModernBERT), exact resume after Ctrl-C, and bad tagged files."""

from __future__ import annotations

import json
import random

import pytest

from mlmctl.shards import file_sha256
from mlmctl.token_data import lenient_entities, repair_tags
from test_labelled import make_tiny_model_dir

ENTITIES = {"PER": [["alice"], ["bob"], ["carol", "smith"]], "LOC": [["paris"], ["rome"], ["new", "york"]]}
FILLER = [f"w{i}" for i in range(30)] + ["went", "to", "met", "in", "with"]


def tagged_sentences(n, seed, length=(4, 10)):
    """Filler words with one to three entities each, tagged IOB2 (with some label noise)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks = [rng.choice(FILLER) for _ in range(rng.randrange(*length))]
        tags = ["O"] * len(toks)
        for _ in range(rng.randrange(1, 4)):
            kind = rng.choice(sorted(ENTITIES))
            words = rng.choice(ENTITIES[kind])
            at = rng.choice([i for i in range(len(toks) + 1) if i == len(toks) or not tags[i].startswith("I-")])
            toks[at:at] = words
            # 1 in 8 names is left untagged (label noise): no tagger is perfect, intervals have a width
            noisy = rng.random() < 0.125
            tags[at:at] = ["O"] * len(words) if noisy else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        out.append((toks, tags))
    return out


def write_conll(path, sents, extra_col=True):
    lines = ["-DOCSTART- -X- O", ""]
    for toks, tags in sents:
        lines += [f"{t} X {g}" if extra_col else f"{t} {g}" for t, g in zip(toks, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path, sents):
    path.write_text("".join(json.dumps({"tokens": t, "tags": g}) + "\n" for t, g in sents))
    return path


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    train, dev, test = tagged_sentences(240, 1), tagged_sentences(40, 2), tagged_sentences(60, 3)
    model = make_tiny_model_dir(root, [" ".join(t) for t, _ in train])
    return {"root": root, "model": model, "train": write_conll(root / "train.conll", train),
            "dev": write_jsonl(root / "dev.jsonl", dev), "test": write_conll(root / "test.conll", test),
            "test_sents": test}


def _args(ner, out, *more, model=None):
    return ["finetune", "--input", model or ner["model"], "--output", out, "--set", "task=token-classification",
            "--set", "metric=entity_f1", "--set", f"train_file={ner['train']}", "--set", f"dev_file={ner['dev']}",
            "--set", "lr=0.003", "--set", "batch_size=16", "--set", "threads=1", "--set", "max_seq_len=32",
            "--set", "warmup_ratio=0.05", *more]


def _eval(run_cli, run, out, test):
    code, _, err = run_cli("eval", "--input", run, "--output", out, "--set", f"test_file={test}",
                           "--set", "bootstrap_resamples=200", "--set", "threads=1")
    assert code == 0, err
    return json.loads((out / "eval.json").read_text()), [json.loads(x) for x in
                                                           (out / "predictions.jsonl").read_text().splitlines()]


def _pipeline_agrees(best, preds):
    """transformers' token-classification pipeline, per sub-word (`none`) and per entity
    (`first`), gives the tags mlmctl eval wrote to predictions.jsonl."""
    transformers = pytest.importorskip("transformers")
    none = transformers.pipeline("token-classification", model=str(best), aggregation_strategy="none",
                                 ignore_labels=[], device="cpu")
    first = transformers.pipeline("token-classification", model=str(best), aggregation_strategy="first", device="cpu")
    for row in preds[:25]:
        text = " ".join(row["tokens"])
        starts = [sum(len(w) + 1 for w in row["tokens"][:i]) for i in range(len(row["tokens"]))]
        by_start = {}
        for piece in none(text):
            by_start.setdefault(piece["start"], piece["entity"])  # the word's first sub-word
        assert [by_start[s] for s in starts] == row["predicted"], text
        ends = [s + len(w) for s, w in zip(starts, row["tokens"])]
        ours = {(starts[a], ends[b - 1], kind) for a, b, kind in lenient_entities(row["predicted"], "iob2")}
        theirs = {(g["start"], g["end"], g["entity_group"]) for g in first(text)}
        assert theirs == ours, text


def test_bert_tagger_beats_baselines_and_transformers_pipeline_agrees(ner, tmp_path, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli(*_args(ner, run, "--set", "epochs=5", "--set", f"test_file={ner['test']}"))
    assert code == 0, err
    extra = json.loads((run / "manifest.json").read_text())["extra"]
    assert extra["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert extra["test"]["entity_f1"] > 0.7, extra["test"]
    cfg = json.loads((run / "best" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"]
    assert cfg["id2label"]["0"] == "O" and cfg["label2id"]["I-PER"] == 4

    ev, preds = _eval(run_cli, run, tmp_path / "ev", ner["test"])
    assert ev["mode"] == "tagger" and ev["entity_f1"] == pytest.approx(extra["test"]["entity_f1"])
    lo, hi = ev["entity_f1_ci"]
    assert lo <= ev["entity_f1"] <= hi and hi - lo > 0
    assert ev["baseline"]["all_O"]["entity_f1"] == 0 and ev["entity_f1"] > ev["baseline"]["all_O"]["entity_f1"]
    assert ev["token_accuracy"] > ev["baseline"]["majority_tag"]["token_accuracy"]
    assert set(ev["per_type"]) == {"LOC", "PER"} and ev["per_type"]["PER"]["support"] > 0
    assert [p["tokens"] for p in preds] == [t for t, _ in ner["test_sents"]]
    assert [p["gold"] for p in preds] == [g for _, g in ner["test_sents"]]
    _pipeline_agrees(run / "best", preds)


def test_modernbert_tagger_loads_in_the_pipeline_with_the_same_tags(ner, tmp_path, run_cli):
    pytest.importorskip("transformers")
    import torch

    from mlmctl.model_dir import save_model_dir
    from mlmctl.modernbert import ModernBertConfig, ModernBertForMaskedLM

    vocab_size = json.loads((ner["model"] / "config.json").read_text())["vocab_size"]
    shape = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64, local_attention=8, pad_token_id=0,
                 cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
    src = tmp_path / "src"
    torch.manual_seed(0)
    save_model_dir(ModernBertForMaskedLM(ModernBertConfig(**shape)), src, tokenizer_dir=ner["model"],
                   architectures=["ModernBertForMaskedLM"])
    run = tmp_path / "run"
    code, _, err = run_cli(*_args(ner, run, "--set", "max_steps=40", "--set", "eval_every=20", model=src))
    assert code == 0, err
    assert json.loads((run / "best" / "config.json").read_text())["architectures"] == \
        ["ModernBertForTokenClassification"]
    _, preds = _eval(run_cli, run, tmp_path / "ev", ner["test"])
    _pipeline_agrees(run / "best", preds)


@pytest.mark.slow  # three processes that each import torch: ~40 s on a loaded 2-core machine
def test_sigint_then_the_same_command_resumes_exactly(ner, tmp_path):
    import signal
    import subprocess
    import sys

    from hold_at_step import stop_at_step
    from mlmctl.progress import TIMING_KEYS

    def cmd(out):
        return [sys.executable, "-m", "mlmctl", *map(str, _args(ner, out, "--set", "max_steps=16", "--set", "log_every=1",
                                                              "--set", "eval_every=5"))]

    ref, out = tmp_path / "ref", tmp_path / "run"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=300)
    proc = stop_at_step(cmd(out), 7, signal.SIGINT)  # held at step 7 until the signal comes
    err = proc.stderr
    assert proc.returncode == 130, err[-2000:]
    assert "finetune stopped by SIGINT after step 7 " in err.strip().splitlines()[-1], err[-2000:]
    assert not (out / "manifest.json").exists()
    r = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr[-2000:]
    untimed = lambda p: [{k: v for k, v in json.loads(x).items() if k not in TIMING_KEYS}  # noqa: E731
                         for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert untimed(out) == untimed(ref)
    assert file_sha256(out / "best" / "model.safetensors") == file_sha256(ref / "best" / "model.safetensors")


def test_long_sentences_are_windowed_and_every_word_is_tagged(ner, tmp_path, run_cli):
    long = tagged_sentences(6, 7, length=(40, 60))  # ~50 words + entities: several windows of 14 sub-words
    test = write_conll(tmp_path / "long.conll", long)
    run = tmp_path / "run"
    code, _, err = run_cli(*_args(ner, run, "--set", "max_steps=30", "--set", "max_seq_len=16",
                                  "--set", f"test_file={test}"))
    assert code == 0, err
    assert "split into windows" in err
    ev, preds = _eval(run_cli, run, tmp_path / "ev", test)
    assert ev["split_sentences"] == 6 and ev["n_tokens"] == sum(len(t) for t, _ in long)
    assert [len(p["predicted"]) for p in preds] == [len(t) for t, _ in long]
    # eval refuses a tag the model never learnt, naming file and line
    other = write_jsonl(tmp_path / "other.jsonl", [(["alice"], ["B-PER"]), (["bonn"], ["B-LOC"]), (["x"], ["B-ORG"])])
    code, _, err = run_cli("eval", "--input", run, "--output", tmp_path / "ev2", "--set", f"test_file={other}")
    assert code == 1 and f"{other}:3: tag 'B-ORG' is not among the model's tags" in err
    assert not (tmp_path / "ev2" / "eval.json").exists()


def test_ill_formed_tags_are_repaired_and_counted_or_an_error_naming_the_line(ner, tmp_path, run_cli):
    bad = [(["alice", "went", "to", "rome"], ["O", "O", "O", "I-LOC"]), *tagged_sentences(20, 9)]
    path = write_conll(tmp_path / "bad.conll", bad)
    run = tmp_path / "run"
    code, _, err = run_cli(*_args(ner, run, "--set", "max_steps=4", "--set", f"dev_file={path}"))
    assert code == 0, err
    assert f"repaired 1 ill-formed tag sequence(s), first at {path}:3" in err
    code, _, err = run_cli(*_args(ner, tmp_path / "r2", "--set", "max_steps=4", "--set", f"dev_file={path}",
                                  "--set", "ill_formed=error"))
    assert code == 1 and f"{path}:3: ill-formed IOB2 tag sequence" in err and "Traceback" not in err
    assert not (tmp_path / "r2" / "manifest.json").exists()


@pytest.mark.parametrize("case", ["empty_tag_column", "unknown_dev_tag", "tag_outside_scheme", "wrong_metric"])
def test_bad_tagged_input_is_one_line(ner, tmp_path, run_cli, case):
    more = []
    if case == "empty_tag_column":  # a line with the token only: the tag column is empty
        path = tmp_path / "dev.conll"
        path.write_text("alice X B-PER\nwent X O\nrome X\n")
        expect = f"{path}:3: 2 columns but the file's first token line has 3"
    elif case == "unknown_dev_tag":
        path = write_conll(tmp_path / "dev.conll", [(["alice", "went", "home"], ["B-PER", "O", "B-MISC"])])
        expect = f"{path}:5: tag 'B-MISC' is not among the model's tags"
    elif case == "tag_outside_scheme":
        path = write_conll(tmp_path / "dev.conll", [(["alice"], ["E-PER"])])
        expect = f"{path}:3: tag 'E-PER' is not in the IOB2 scheme"
    else:
        path, more = ner["dev"], ["--set", "metric=macro_f1"]
        expect = "`macro_f1` is not a token-classification metric"
    args = _args(ner, tmp_path / "run", "--set", "max_steps=2", *more)
    code, _, err = run_cli(*[f"dev_file={path}" if str(a).startswith("dev_file=") else a for a in args])
    assert code != 0 and expect in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("tags, scheme, want", [
    (["O", "I-PER", "I-PER", "O"], "iob2", ["O", "B-PER", "I-PER", "O"]),
    (["B-PER", "I-LOC"], "iob2", ["B-PER", "B-LOC"]),
    (["B-PER", "I-PER", "O", "E-LOC"], "iobes", ["B-PER", "E-PER", "O", "S-LOC"]),
    (["I-PER", "E-PER", "S-LOC", "B-LOC"], "iobes", ["B-PER", "E-PER", "S-LOC", "S-LOC"]),
    (["B-PER", "I-PER", "E-PER", "S-LOC"], "iobes", ["B-PER", "I-PER", "E-PER", "S-LOC"]),
])
def test_repair_reads_as_seqeval_non_strict(tags, scheme, want):
    from mlmctl.seq_metrics import entities

    assert repair_tags(tags, scheme) == want
    # after repair, strict reading finds exactly the lenient entities
    assert [e[1:] for e in entities(want, scheme)] == lenient_entities(tags, scheme)


def test_pos_tags_without_scheme_score_token_accuracy_only(ner, tmp_path, run_cli):
    """`tag_scheme: none` (POS): any tags, no entities; selected and scored by token accuracy."""
    pos = {w: ("NUM" if w.startswith("w") else "NOUN") for t, _ in ner["test_sents"] for w in t}
    train = write_jsonl(tmp_path / "train.jsonl", [(t, [pos.get(w, "NOUN") for w in t]) for t, _ in ner["test_sents"]])
    run = tmp_path / "run"
    swap = {"metric=entity_f1": "metric=token_accuracy", f"train_file={ner['train']}": f"train_file={train}",
            f"dev_file={ner['dev']}": f"dev_file={train}"}
    args = [swap.get(a, a) for a in _args(ner, run, "--set", "max_steps=6", "--set", "tag_scheme=none")]
    code, _, err = run_cli(*args)
    assert code == 0, err
    ev, preds = _eval(run_cli, run, tmp_path / "ev", train)
    assert "entity_f1" not in ev and 0 <= ev["token_accuracy"] <= 1 and list(ev["baseline"]) == ["majority_tag"]
    assert ev["baseline"]["majority_tag"]["tag"] == "NUM"
    del swap["metric=entity_f1"]
    code, _, err = run_cli(*[swap.get(a, a) for a in _args(ner, tmp_path / "r2", "--set", "tag_scheme=none")])
    assert code == 1 and "`tag_scheme: none` has no entities" in err
