"""Checkpoints (atomic, keep-last-K, validity, weights-only state) and the optimizer/schedule helpers."""

import math

import pytest
import torch

from mlmctl import checkpoint as ck
from mlmctl.errors import MlmctlError
from mlmctl.model import BertForPreTraining, ModelConfig
from mlmctl.optim import lr_at, make_adamw, param_groups


def small_model():
    torch.manual_seed(0)
    return BertForPreTraining(ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=16))


def test_save_keep_last_and_latest_valid(tmp_path):
    m = small_model()
    opt = make_adamw(m, 1e-3, 0.01, (0.9, 0.98), 1e-6, "cpu")
    m(torch.randint(5, 50, (2, 8)), labels=torch.randint(5, 50, (2, 8)))[1].backward()
    opt.step()
    meta = {"model": {"hidden_size": 16}, "data": {"seed": 0}}
    rng = torch.get_rng_state()
    for step in (10, 20, 30):
        state = {"step": step, "tokens": step * 100, "optimizer": opt.state_dict(),
                 "rng": [{"cpu": rng, "cuda": None}]}
        ck.save_checkpoint(tmp_path, step, m, state, meta, tokenizer_dir=None, architectures="BertForMaskedLM",
                           keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000020", "step-000030"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    latest = ck.latest_valid(tmp_path)
    assert latest.name == "step-000030"
    state = ck.load_trainer_state(latest)  # weights_only=True load
    assert state["step"] == 30 and state["tokens"] == 3000
    opt2 = make_adamw(small_model(), 1e-3, 0.01, (0.9, 0.98), 1e-6, "cpu")
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(state["rng"][0]["cpu"], rng)

    # A damaged newest checkpoint (a file cut short) is skipped; a temporary dir is never listed.
    w = latest / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    assert ck.read_meta(latest) is None
    assert ck.latest_valid(tmp_path).name == "step-000020"
    (tmp_path / "checkpoints" / ".step-000040.tmp-1").mkdir()
    assert ck.latest_valid(tmp_path).name == "step-000020"


def test_compatibility_check_names_the_differences(tmp_path):
    ck.check_compatible({"model": {"a": 1}, "data": {"b": 2}}, {"model": {"a": 1}, "data": {"b": 2}}, tmp_path)
    with pytest.raises(MlmctlError, match=r"model\.a: checkpoint 1, config 2"):
        ck.check_compatible({"model": {"a": 1}, "data": {}}, {"model": {"a": 2}, "data": {}}, tmp_path)


def test_trainer_state_with_code_is_refused(tmp_path):
    d = tmp_path / "c"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, d / ck.STATE_FILE)
    with pytest.raises(MlmctlError, match="cannot read"):
        ck.load_trainer_state(d)


def test_param_groups_exclude_biases_and_layernorm():
    m = small_model()
    decay, no_decay = param_groups(m, 0.01)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_lr_schedule():
    kw = dict(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, decay="linear", **kw) == pytest.approx(0.1)
    assert lr_at(9, decay="linear", **kw) == pytest.approx(1.0)
    assert lr_at(60, decay="linear", **kw) == pytest.approx(0.55)
    assert lr_at(110, decay="linear", **kw) == pytest.approx(0.1)
    assert lr_at(60, decay="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, decay="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(100, decay="constant", **kw) == 1.0


def test_stop_signals_set_a_flag_and_say_what_to_run(tmp_path):
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with ck.StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once in the main thread: only a flag
        assert stop.requested
        e = stop.interrupted("finetune", 7, tmp_path / "step-000007")
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert e.exit_code == 143
    assert str(e) == (f"finetune stopped by SIGTERM after step 7 (saved checkpoint {tmp_path / 'step-000007'}); "
                      f"rerun the same command to continue from there")
    with ck.StopSignals() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C stops at once


def test_find_resume_takes_the_newest_valid_checkpoint(tmp_path):
    from types import SimpleNamespace

    logged = []
    opts = SimpleNamespace(resume=False, resume_from=None)
    assert ck.find_resume("pretrain", tmp_path, opts, logged.append) is None and not logged
    (tmp_path / "checkpoints" / "step-000004").mkdir(parents=True)  # cut short: no checkpoint.json
    assert ck.find_resume("pretrain", tmp_path, opts, logged.append) is None
    assert "starting from step 0" in logged[-1]
    with pytest.raises(MlmctlError, match="not a complete checkpoint"):
        ck.find_resume("pretrain", tmp_path, SimpleNamespace(resume=True, resume_from=str(tmp_path / "x")), print)


@pytest.mark.parametrize("damage, value", [("step", -1), ("step", "3"), ("epoch", 1.5), ("best_value", float("nan")),
                                           ("best_report", [1]), ("loss_count", None)])
def test_a_crafted_finetune_loop_state_is_one_line_naming_the_checkpoint(tmp_path, damage, value):
    """finetune's resume reads its loop state through _saved_loop_state under `resuming`: a value
    of the wrong kind is one MlmctlError naming the checkpoint (pretrain's end-to-end twin:
    tests/stages/test_pretrain.py::test_a_crafted_training_state_is_one_line_naming_the_checkpoint)."""
    from mlmctl.checkpoint import resuming
    from mlmctl.errors import MlmctlError
    from mlmctl.stages.finetune import _fresh_loop_state, _saved_loop_state

    fresh = _fresh_loop_state()
    good = {**fresh, "step": 12, "best_report": {"accuracy": 0.5}, "best_value": 0.5}
    assert _saved_loop_state(good, fresh) == good
    with pytest.raises(MlmctlError, match=rf"^finetune: checkpoint {tmp_path} cannot be resumed: .*{damage}"):
        with resuming(tmp_path, "finetune"):
            _saved_loop_state({**good, damage: value}, fresh)
    with pytest.raises(MlmctlError, match="KeyError"):
        with resuming(tmp_path, "finetune"):
            _saved_loop_state({k: v for k, v in good.items() if k != "pos"}, fresh)
