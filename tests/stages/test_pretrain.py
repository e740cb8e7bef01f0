"""pretrain stage: a real (tiny) run end to end, HF loading, resume, accumulation, DDP, bad input."""

from __future__ import annotations

import json
import re
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

from mlmctl.manifest import Manifest, write_manifest  # noqa: E402
from clean_fixture import write_clean_shard  # noqa: E402
from hold_at_step import stop_at_step  # noqa: E402
from mlmctl.shards import file_sha256  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOUNS = "cat dog bird fish horse mouse teacher doctor farmer pilot river mountain city garden".split()
ADJS = "small big red green old young quiet loud happy brave".split()
VERBS = "sees likes chases finds follows helps watches visits".split()


def _doc(rng: random.Random) -> str:
    sents = []
    for _ in range(rng.randint(2, 6)):
        n1, n2 = rng.choice(NOUNS), rng.choice(NOUNS)
        # Agreement the model can learn: the adjective of a noun is fixed by the noun.
        a1, a2 = ADJS[NOUNS.index(n1) % len(ADJS)], ADJS[NOUNS.index(n2) % len(ADJS)]
        sents.append(f"The {a1} {n1} {rng.choice(VERBS)} the {a2} {n2}.")
    return " ".join(sents)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    """clean (written directly) -> tokenize -> build-vocab, through the real stages."""
    from mlmctl.cli import main

    base = tmp_path_factory.mktemp("pretrain-data")
    clean = base / "clean"
    rng = random.Random(0)
    infos = []
    for split, n in (("train", 400), ("validation", 40)):
        lines = [json.dumps({"id": f"{split}-{i}", "text": _doc(rng), "source": "test"}) for i in range(n)]
        infos.append(write_clean_shard(clean, split, 0, lines))
    write_manifest(clean, Manifest(stage="clean", config={}, config_hash="test", input_hash=None, shards=infos))
    assert main(["tokenize", "-c", str(ROOT / "configs/smoke/tokenize.yaml"), "--input", str(clean),
                 "--output", str(base / "tokens")]) == 0
    assert main(["build-vocab", "-c", str(ROOT / "configs/smoke/build-vocab.yaml"), "--input", str(base / "tokens"),
                 "--output", str(base / "vocab"), "--set", "vocab_size=200", "--set", "min_frequency=1"]) == 0
    return base / "vocab"


TINY = ["--set", "model.hidden_size=32", "--set", "model.num_attention_heads=2", "--set", "model.intermediate_size=64",
        "--set", "model.num_hidden_layers=2", "--set", "data.max_seq_len=32", "--set", "train.batch_size=8",
        "--set", "train.lr=0.003", "--set", "train.warmup_steps=2", "--set", "validation.max_sequences=32",
        "--set", "log_every=1"]


# ModernBERT at the same size, with a local window shorter than the rows and per-document packing.
MODERN = ["--set", "model.arch=modernbert", "--set", "data.packing=documents", "--set", "model.local_attention=8",
          "--set", "model.global_attn_every_n_layers=2"]
ARCH_ARGS = {"bert": [], "modernbert": MODERN}


def pretrain(run_cli, vocab: Path, out: Path, *args):
    return run_cli("pretrain", "-c", ROOT / "configs/smoke/pretrain.yaml", "--input", vocab, "--output", out,
                   *TINY, *args)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_learns_writes_loadable_models_and_reruns_as_up_to_date(tmp_path, run_cli, vocab_dir):
    out = tmp_path / "run"
    code, stdout, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=40",
                                 "--set", "validation.every=20", "--set", "checkpoint.save_every=10",
                                 "--set", "checkpoint.keep_last=2")
    assert code == 0, err
    assert (out / "manifest.json").exists() and not (out / ".work").exists()
    rows = metrics(out)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    prev = 0
    for r in train_rows:
        assert set(r) >= {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"}
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["tokens_per_s"] > 0
        # 8 sequences of 32 tokens per step; only the corpus' last sequence may be shorter
        assert 8 * 32 - 31 <= r["tokens"] - prev <= 8 * 32
        prev = r["tokens"]
    vals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in vals] == [0, 20, 40]
    assert vals[-1]["val_ppl"] < 0.5 * vals[0]["val_ppl"]  # it learned
    assert abs(vals[-1]["val_ppl"] - math.exp(vals[-1]["val_loss"])) < 1e-6 * vals[-1]["val_ppl"]
    # Leak-free (all [MASK]) headline beside the 80/10/10 figure, and MLM accuracy.
    for r in vals:
        assert r["val_ppl_801010"] == pytest.approx(math.exp(r["val_loss_801010"]))
        assert 0 <= r["val_acc"] <= r["val_top5_acc"] <= 1
    assert vals[-1]["val_top5_acc"] > vals[0]["val_top5_acc"]
    # warm-up then linear decay to 0 at the last step
    assert train_rows[0]["lr"] == pytest.approx(1.5e-3) and train_rows[1]["lr"] == pytest.approx(3e-3)
    assert train_rows[-1]["lr"] < 1e-4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000030", "step-000040"]
    assert "val ppl" in stdout

    # final/ and the checkpoints load in transformers with the same logits as our model
    transformers = pytest.importorskip("transformers")
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import load_model_dir

    ours, cfg, info = load_model_dir(out / "final", BertForPreTraining)
    vocab_size = json.loads((vocab_dir / "manifest.json").read_text())["extra"]["vocab_size"]
    assert info["missing"] == [] and info["unexpected"] == [] and cfg.vocab_size == vocab_size
    ids = torch.randint(5, vocab_size, (2, 20))
    with torch.no_grad():
        hf = transformers.AutoModelForMaskedLM.from_pretrained(out / "final").eval()
        assert (ours.eval()(ids)[0] - hf(input_ids=ids).logits).abs().max() < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out / "final")
    assert tok.mask_token_id == 4 and tok("the cat")["input_ids"][0] == 2
    transformers.AutoModelForMaskedLM.from_pretrained(out / "checkpoints" / "step-000030")

    # same config again: nothing to do; another config without --force: refused
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=40", "--set", "validation.every=20",
                            "--set", "checkpoint.save_every=10", "--set", "checkpoint.keep_last=2")
    assert code == 0 and "up to date" in err
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=41")
    assert code == 1 and "--force" in err


def untimed(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows without the clock-dependent keys (a resumed run writes the rest identically)."""
    from mlmctl.progress import TIMING_KEYS

    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_rerunning_an_interrupted_run_continues_it_exactly(tmp_path, run_cli, vocab_dir, arch):
    args = ["--set", "train.max_steps=12", "--set", "checkpoint.save_every=4", "--set", "validation.every=6",
            *ARCH_ARGS[arch]]
    ref = tmp_path / "ref"
    assert pretrain(run_cli, vocab_dir, ref, *args)[0] == 0
    # Simulate a run killed after its step-8 checkpoint: no manifest, no final, later ckpt gone.
    out = tmp_path / "run"
    assert pretrain(run_cli, vocab_dir, out, *args)[0] == 0
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoints" / "step-000012")
    # What a killed run leaves: the runner's mark of an unfinished run of this config.
    man = json.loads((ref / "manifest.json").read_text())
    (out / ".work").mkdir()
    (out / ".work" / "run.json").write_text(json.dumps({"config_hash": man["config_hash"],
                                                        "input_hash": man["input_hash"]}))
    # A run killed before its first checkpoint simply starts again, without stale metric lines.
    early = tmp_path / "early"
    shutil.copytree(out / ".work", early / ".work")
    shutil.copy(out / "metrics.jsonl", early / "metrics.jsonl")
    code, _, err = pretrain(run_cli, vocab_dir, early, *args)
    assert code == 0, err
    assert untimed(metrics(early)) == untimed(metrics(ref))
    # The same command again continues from the newest checkpoint (no --resume needed) ...
    code, _, err = pretrain(run_cli, vocab_dir, out, *args)
    assert code == 0, err
    assert "resuming from" in err and "step 8" in err
    assert untimed(metrics(out)) == untimed(metrics(ref))
    assert file_sha256(out / "final" / "model.safetensors") == file_sha256(ref / "final" / "model.safetensors")
    # ... and --resume is still accepted: here the run is finished, so there is nothing to do.
    code, _, err = pretrain(run_cli, vocab_dir, out, *args, "--resume")
    assert code == 0 and "up to date" in err
    # Another config over an unfinished run is refused, not silently restarted.
    (out / "manifest.json").unlink()
    (out / ".work").mkdir()
    (out / ".work" / "run.json").write_text(json.dumps({"config_hash": man["config_hash"],
                                                        "input_hash": man["input_hash"]}))
    code, _, err = pretrain(run_cli, vocab_dir, out, *args, "--set", "train.lr=0.001")
    assert code == 1 and "--force" in err


def test_resume_refuses_a_different_model(tmp_path, run_cli, vocab_dir):
    out = tmp_path / "run"
    assert pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=4", "--set", "checkpoint.save_every=2")[0] == 0
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "other", "--set", "train.max_steps=8",
                            "--set", "model.hidden_size=64", "--resume-from", out / "checkpoints" / "step-000004")
    assert code == 1 and "different settings" in err and "hidden_size" in err
    # the same model may continue for longer from another run's checkpoint
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "longer", "--set", "train.max_steps=6",
                            "--resume-from", out / "checkpoints" / "step-000004")
    assert code == 0, err
    assert [r["step"] for r in metrics(tmp_path / "longer") if "loss" in r] == [5, 6]
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "x", "--set", "train.max_steps=6",
                            "--resume-from", tmp_path / "nope")
    assert code == 1 and "not a complete checkpoint" in err


CRAFTED_STATES = {  # what a damaged or crafted trainer_state.pt may hold, loadable with weights_only=True
    "no optimizer": lambda s: {k: v for k, v in s.items() if k != "optimizer"},
    "optimizer of other shapes": lambda s: {**s, "optimizer": {"state": {}, "param_groups": []}},
    "step not a count": lambda s: {**s, "step": -4},
    "step a string": lambda s: {**s, "step": "four"},
    "not a dict": lambda s: [1, 2, 3],
}


@pytest.mark.parametrize("damage", list(CRAFTED_STATES))
def test_a_crafted_training_state_is_one_line_naming_the_checkpoint(tmp_path, run_cli, vocab_dir, damage):
    import shutil

    import torch

    out = tmp_path / "run"
    assert pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=2", "--set", "checkpoint.save_every=2")[0] == 0
    ckpt = tmp_path / "crafted"
    shutil.copytree(out / "checkpoints" / "step-000002", ckpt)
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    torch.save(CRAFTED_STATES[damage](state), ckpt / "trainer_state.pt")
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["files"]["trainer_state.pt"] = (ckpt / "trainer_state.pt").stat().st_size  # a complete checkpoint, as far as it says
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "next", "--set", "train.max_steps=4", "--resume-from", ckpt)
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"mlmctl: error: pretrain: checkpoint {ckpt} cannot be") and "delete" in last, err


@pytest.mark.parametrize("limit, steps", [("train.max_tokens=2000", 8), ("train.epochs=1", None)])
def test_token_and_epoch_limits(tmp_path, run_cli, vocab_dir, limit, steps):
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "r", "--set", "train.max_steps=null", "--set", limit,
                            "--set", "validation.every=0", "--set", "checkpoint.save_every=1000")
    assert code == 0, err
    if steps is None:  # one epoch: every full batch of the training sequences once
        from mlmctl.packing import FullSentences
        from mlmctl.stages.pretrain import _open_corpus

        steps = len(FullSentences(_open_corpus(vocab_dir, None)["train"], 32)) // 8
    assert [r["step"] for r in metrics(tmp_path / "r") if "loss" in r][-1] == steps
    assert (tmp_path / "r" / "checkpoints" / f"step-{steps:06d}").is_dir()  # the last step is always saved


def test_gradient_accumulation_gives_the_same_steps(tmp_path, run_cli, vocab_dir):
    nodrop = ["--set", "model.hidden_dropout_prob=0.0", "--set", "model.attention_probs_dropout_prob=0.0",
              "--set", "train.max_steps=5", "--set", "validation.every=0"]
    assert pretrain(run_cli, vocab_dir, tmp_path / "a", *nodrop)[0] == 0
    assert pretrain(run_cli, vocab_dir, tmp_path / "b", *nodrop, "--set", "train.micro_batch_size=3")[0] == 1
    assert pretrain(run_cli, vocab_dir, tmp_path / "b", *nodrop, "--set", "train.micro_batch_size=2", "--force")[0] == 0
    la = [r["loss"] for r in metrics(tmp_path / "a") if "loss" in r]
    lb = [r["loss"] for r in metrics(tmp_path / "b") if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)


def test_nsp_and_whole_word_masking(tmp_path, run_cli, vocab_dir):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "nsp"
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "data.packing=sentence-pair", "--set", "data.nsp=true",
                            "--set", "masking.whole_word=true", "--set", "train.max_steps=6")
    assert code == 0, err
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForPreTraining"]
    m = transformers.BertForPreTraining.from_pretrained(out / "final")
    assert m.cls.seq_relationship.weight.shape == (2, 32)


def test_bad_configs_and_inputs(tmp_path, run_cli, vocab_dir):
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "a", "--set", "data.nsp=true")
    assert code == 1 and "sentence-pair" in err and "Traceback" not in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "b", "--set", "model.vocab_size=999")
    assert code == 1 and "vocab_size" in err and "999" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "c", "--set", "train.batch_size=100000")
    assert code == 1 and "fewer than one batch" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "d", "--set", "data.max_seq_len=1024")
    assert code == 1 and "max_position_embeddings" in err
    code, _, err = pretrain(run_cli, tmp_path / "missing", tmp_path / "e")
    assert code == 1 and "Traceback" not in err


def test_modernbert_run_learns_packs_documents_and_loads_in_transformers(tmp_path, run_cli, vocab_dir):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "modern"
    code, stdout, err = pretrain(run_cli, vocab_dir, out, *MODERN, "--set", "train.max_steps=30",
                                 "--set", "validation.every=30", "--set", "train.decay=wsd",
                                 "--set", "train.decay_fraction=0.5", "--set", "train.decay_shape=linear",
                                 "--set", "masking.mask_prob=0.3")
    assert code == 0, err
    rows = metrics(out)
    train_rows = [r for r in rows if "loss" in r]
    # Whole documents of 2-6 short sentences in rows of 32: some padding, never none, never most.
    assert all(0.5 < r["packing_efficiency"] <= 1.0 for r in train_rows)
    assert any(r["packing_efficiency"] < 1.0 for r in train_rows)
    assert "packing efficiency" in stdout
    vals = [r for r in rows if "val_loss" in r]
    assert vals[-1]["val_ppl"] < 0.7 * vals[0]["val_ppl"]
    # warm-up (2 steps), stable through step 16, then linear decay over the last 15 steps
    lrs = [r["lr"] for r in train_rows]  # row i (step i + 1) has the lr of step i
    assert lrs[2:16] == [0.003] * 14 and lrs[16] < 0.003 and lrs[-1] == pytest.approx(0.003 / 15)
    man = json.loads((out / "manifest.json").read_text())["extra"]
    assert 0.5 < man["packing_efficiency"] <= 1.0 and man["architectures"] == ["ModernBertForMaskedLM"]

    from mlmctl.model_dir import load_model_dir
    from mlmctl.modernbert import ModernBertForMaskedLM

    ours, cfg, info = load_model_dir(out / "final", ModernBertForMaskedLM)
    assert info["missing"] == [] and info["unexpected"] == [] and cfg.local_attention == 8
    ids = torch.randint(5, cfg.vocab_size, (2, 24))  # longer than the local window
    with torch.no_grad():
        hf = transformers.AutoModelForMaskedLM.from_pretrained(out / "final").eval()
        assert type(hf).__name__ == "ModernBertForMaskedLM"
        assert (ours.eval()(ids)[0] - hf(input_ids=ids).logits).abs().max() < 1e-4
    transformers.AutoModelForMaskedLM.from_pretrained(out / "checkpoints" / "step-000030")


def test_resume_refuses_the_other_architecture(tmp_path, run_cli, vocab_dir):
    runs = {}
    for arch in ("bert", "modernbert"):
        runs[arch] = tmp_path / arch
        assert pretrain(run_cli, vocab_dir, runs[arch], *ARCH_ARGS[arch], "--set", "train.max_steps=2")[0] == 0
    for arch, other in (("bert", "modernbert"), ("modernbert", "bert")):
        out = tmp_path / f"{other}-from-{arch}"
        code, _, err = pretrain(run_cli, vocab_dir, out, *ARCH_ARGS[other], "--set", "train.max_steps=4",
                                "--resume-from", runs[arch] / "checkpoints" / "step-000002")
        assert code == 1 and "Traceback" not in err, err
        assert f"holds a {arch} model but `model.arch` is {other}" in err
        assert not (out / "manifest.json").exists() and not (out / "final").exists()


def test_modernbert_bad_configs(tmp_path, run_cli, vocab_dir):
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "a", *MODERN, "--set", "data.packing=sentence-pair",
                            "--set", "data.nsp=true")
    assert code == 1 and "data.nsp" in err and "modernbert" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "b", "--set", "data.packing=documents")
    assert code == 1 and "model.arch: modernbert" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "c", *MODERN, "--set", "data.max_seq_len=1024")
    assert code == 1 and "max_position_embeddings" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "d", *MODERN, "--set", "model.num_attention_heads=32")
    assert code == 1 and "head size" in err and "Traceback" not in err
    for path in ("a", "b", "c", "d"):
        assert not (tmp_path / path / "manifest.json").exists()


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, run_cli, vocab_dir):
    out = tmp_path / "nan"
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "train.lr=1.0e+30", "--set", "train.grad_clip=0",
                            "--set", "train.warmup_steps=0", "--set", "train.max_steps=20",
                            "--set", "checkpoint.save_every=1")
    assert code == 1 and "loss became" in err and "last good checkpoint" in err
    assert not (out / "manifest.json").exists()


def _cli_cmd(vocab: Path, out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "mlmctl", "pretrain", "-c", str(ROOT / "configs/smoke/pretrain.yaml"),
            "--input", str(vocab), "--output", str(out), *TINY, *args]


SLOW_STEPS = ["--set", "train.max_steps=40", "--set", "checkpoint.save_every=10", "--set", "validation.every=15",
              "--set", "model.hidden_size=128", "--set", "model.intermediate_size=512"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def reference_run(vocab_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of SLOW_STEPS, through the CLI in a subprocess."""
    ref = tmp_path_factory.mktemp("pretrain-ref") / "ref"
    subprocess.run(_cli_cmd(vocab_dir, ref, *SLOW_STEPS), check=True, capture_output=True, env=ENV, timeout=300)
    return ref


def _rerun_matches(reference: Path, cmd: list[str], out: Path) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr
    assert untimed(metrics(out)) == untimed(metrics(reference))
    assert file_sha256(out / "final" / "model.safetensors") == file_sha256(reference / "final" / "model.safetensors")


@pytest.mark.parametrize("sig, step", [
    # Quick-suite coverage of a signal is finetune's (same shared code); these run with the slow tests.
    pytest.param(signal.SIGTERM, 5, marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, 12, marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, 1, marks=pytest.mark.slow),
])
def test_signal_checkpoints_at_a_step_boundary_and_the_same_command_continues(
        tmp_path, vocab_dir, reference_run, sig, step):
    out = tmp_path / "run"
    cmd = _cli_cmd(vocab_dir, out, *SLOW_STEPS)
    r = stop_at_step(cmd, step, sig, env=ENV)
    name = signal.Signals(sig).name
    assert r.returncode == 128 + sig, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mlmctl: pretrain stopped by {name} after step ") and "rerun the same command" in last
    assert "Traceback" not in r.stderr and not (out / "manifest.json").exists()
    stopped = int(last.split("after step ")[1].split()[0])
    assert stopped == step and (out / "checkpoints" / f"step-{stopped:06d}").is_dir()
    _rerun_matches(reference_run, cmd, out)


def _tensorboard_matches_metrics(out: Path) -> None:
    """RUN/tensorboard/ holds exactly one train/loss and val/ppl value per metrics.jsonl row, equal
    to it: no gap and no duplicate, also after a kill and resume (tensorboard's own reader)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    rows = metrics(out)
    for key, tag in (("loss", "train/loss"), ("val_ppl", "val/ppl")):
        events = [(e.step, e.value) for e in acc.Scalars(tag)]
        expect = [(r["step"], r[key]) for r in rows if key in r]
        assert [s for s, _ in events] == [s for s, _ in expect], tag
        assert [v for _, v in events] == pytest.approx([v for _, v in expect], rel=1e-6), tag


def test_tensorboard_gets_every_metrics_row(tmp_path, run_cli, vocab_dir):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=6", "--set", "validation.every=3",
                            "--set", "tensorboard=true")
    assert code == 0, err
    _tensorboard_matches_metrics(out)
    # docs/monitoring.md's Python block, extracted from the doc, reads the same events
    doc = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    scope: dict = {}
    exec(compile(block.replace("runs/demo/pretrain", str(out)), "docs/monitoring.md", "exec"), scope)
    assert [e.step for e in scope["acc"].Scalars("val/ppl")] == [r["step"] for r in metrics(out) if "val_ppl" in r]
    # --force may delete it again: it is one of the files pretrain writes
    assert pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=5", "--set", "tensorboard=true",
                    "--force")[0] == 0


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_weights(tmp_path, vocab_dir, reference_run):
    out = tmp_path / "run"
    cmd = _cli_cmd(vocab_dir, out, *SLOW_STEPS, "--set", "tensorboard=true")
    # Killed three steps past the checkpoint of step 20: those steps are done again.
    assert stop_at_step(cmd, 23, signal.SIGKILL, env=ENV, stdout=subprocess.DEVNULL).returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    _rerun_matches(reference_run, cmd, out)
    _tensorboard_matches_metrics(out)


# A batch warm-up makes the batch, and so each rank's slice, change from step to step.
BATCH_WARMUP = ["--set", "train.batch_warmup_steps=5", "--set", "train.batch_warmup_start=2"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "modernbert", "bert-batch-warmup"])
def test_ddp_two_processes_match_one(tmp_path, vocab_dir, arch):
    args = ["--set", "model.hidden_dropout_prob=0.0", "--set", "model.attention_probs_dropout_prob=0.0",
            "--set", "train.max_steps=8", "--set", "validation.every=4", "--set", "checkpoint.save_every=4",
            *(ARCH_ARGS["bert"] + BATCH_WARMUP if arch == "bert-batch-warmup" else ARCH_ARGS[arch])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = tmp_path / "one"
    subprocess.run(_cli_cmd(vocab_dir, one, *args), check=True, capture_output=True, env=env, timeout=300)
    two = tmp_path / "two"
    # The runner's output check runs on every rank while rank 0 may be creating the directory;
    # until stage.py leaves that check to rank 0, start from the mark of an unfinished run of
    # this config so that every rank sees the same state.
    from mlmctl.config import config_hash, load_config
    from mlmctl.manifest import manifest_hash
    from mlmctl.stages.pretrain import PretrainConfig

    sets = [TINY[i + 1] for i in range(0, len(TINY), 2)] + [args[i + 1] for i in range(0, len(args), 2)]
    cfg = load_config(PretrainConfig, ROOT / "configs/smoke/pretrain.yaml", sets)
    (two / ".work").mkdir(parents=True)
    (two / ".work" / "run.json").write_text(json.dumps({"config_hash": config_hash(cfg),
                                                       "input_hash": manifest_hash(vocab_dir)}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_cli_cmd(vocab_dir, two, *args)[1:]]
    # Own session, so that a hang kills the workers too, not only the launcher.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=600)  # a bound on a hang, not on a slow machine
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    a, b = metrics(one), metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "val_loss", "grad_norm"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4), (ra["step"], k)
        assert ra["tokens"] == rb["tokens"]
    # only rank 0 wrote: one set of checkpoints, one manifest, a loadable final model
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-000004", "step-000008"]
    assert (two / "manifest.json").exists() and (two / "final" / "model.safetensors").exists()


def test_one_tokens_per_s_everywhere_and_timed_metrics(tmp_path, run_cli, vocab_dir):
    from mlmctl.progress import tokens_per_s

    out = tmp_path / "run"
    code, stdout, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=4", "--set", "validation.every=2")
    assert code == 0, err
    rows = metrics(out)
    assert all(isinstance(r["time"], float) and r["time"] > 1e9 and r["elapsed_s"] >= 0 for r in rows)
    last = [r for r in rows if "tokens_per_s" in r][-1]
    figure = tokens_per_s(last["tokens"], last["train_s"])
    assert last["tokens_per_s"] == figure > 0
    assert f"| tokens/s | {figure} |" in stdout  # the summary (not a terminal: Markdown-style rows)
    assert json.loads((out / "manifest.json").read_text())["extra"]["tokens_per_s"] == figure
    code, report, err = run_cli("report", "--runs", tmp_path)
    assert code == 0, err
    assert f"{figure} tokens/s" in report


def test_tensorboard_without_the_package_fails_before_any_work(tmp_path, run_cli, vocab_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "tb"
    code, _, err = pretrain(run_cli, vocab_dir, out, "--set", "train.max_steps=2", "--set", "tensorboard=true")
    assert code == 1 and err.count("\n") == 1 and 'pip install "mlmctl[tensorboard]"' in err
    assert not (out / "metrics.jsonl").exists() and not (out / "manifest.json").exists()


def _as_if_killed_after(out: Path, ref: Path, last_ckpt: str) -> None:
    """Leave `out` (a finished copy of the run) as a run killed after its `last_ckpt` checkpoint."""
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "final")
    for ckpt in (out / "checkpoints").iterdir():
        if ckpt.name > last_ckpt:
            shutil.rmtree(ckpt)
    man = json.loads((ref / "manifest.json").read_text())
    (out / ".work").mkdir()
    (out / ".work" / "run.json").write_text(json.dumps({"config_hash": man["config_hash"],
                                                        "input_hash": man["input_hash"]}))


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_batch_warmup_grows_the_batch_and_resumes_exactly(tmp_path, run_cli, vocab_dir, arch):
    args = ["--set", "train.max_steps=10", "--set", "train.batch_warmup_steps=6", "--set", "train.batch_warmup_start=2",
            "--set", "checkpoint.save_every=3", "--set", "checkpoint.keep_last=0", "--set", "validation.every=5",
            *ARCH_ARGS[arch]]
    ref = tmp_path / "ref"
    code, _, err = pretrain(run_cli, vocab_dir, ref, *args)
    assert code == 0, err
    rows = [r for r in metrics(ref) if "loss" in r]
    # 2 sequences at step 1, growing by one a step, rounded down to a multiple of 2; the full 8 from step 7
    assert [r["batch_size"] for r in rows] == [2, 2, 4, 4, 6, 6, 8, 8, 8, 8]
    prev = 0
    for r in rows:  # the tokens of each step are those of its own batch: tokens/s counts them
        assert 0 < r["tokens"] - prev <= r["batch_size"] * 32
        prev = r["tokens"]
    # the learning-rate schedule is the steps' own, whatever the batch (2 warm-up steps, then decay)
    assert rows[1]["lr"] == pytest.approx(3e-3) and rows[-1]["lr"] < rows[5]["lr"] < 3e-3
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    _as_if_killed_after(out, ref, "step-000003")  # mid warm-up: the data position is the schedule's
    code, _, err = pretrain(run_cli, vocab_dir, out, *args)
    assert code == 0, err
    assert "resuming from" in err and "step 3" in err
    assert untimed(metrics(out)) == untimed(metrics(ref))
    assert file_sha256(out / "final" / "model.safetensors") == file_sha256(ref / "final" / "model.safetensors")
    # A checkpoint of the run without warm-up sees other data at each step: refused, not mixed.
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "other", *args[:2], "--set", "checkpoint.save_every=3",
                            *ARCH_ARGS[arch], "--resume-from", ref / "checkpoints" / "step-000009")
    assert code == 1 and "batch_warmup" in err and "Traceback" not in err


def test_batch_warmup_bad_settings(tmp_path, run_cli, vocab_dir):
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "a", "--set", "train.batch_warmup_steps=4",
                            "--set", "train.batch_warmup_start=9")
    assert code == 1 and "train.batch_warmup_start" in err and "[1, train.batch_size = 8]" in err
    code, _, err = pretrain(run_cli, vocab_dir, tmp_path / "b", "--set", "train.batch_warmup_steps=-1")
    assert code == 1 and "batch_warmup_steps" in err
    assert not any((tmp_path / p / "manifest.json").exists() for p in "ab")


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_a_vocabulary_without_the_special_tokens_is_one_line(tmp_path, run_cli, vocab_dir, arch):
    """A build-vocab directory whose vocabulary lacks [MASK] (a hand-edited or foreign one): one
    line naming it, before any model is built, nothing written that looks finished."""
    bad = tmp_path / "vocab"
    shutil.copytree(vocab_dir, bad)
    man = json.loads((bad / "manifest.json").read_text())
    del man["extra"]["special_ids"]["[MASK]"]
    (bad / "manifest.json").write_text(json.dumps(man))
    out = tmp_path / "run"
    code, _, err = pretrain(run_cli, bad, out, *ARCH_ARGS[arch], "--set", "train.max_steps=2")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "[MASK]" in err and "build-vocab" in err
    assert not (out / "manifest.json").exists() and not (out / "final").exists()
