"""mlmctl.modernbert against transformers' ModernBERT classes: same layout, same logits both ways
(including sliding-window layers, rows longer than the window, padding), per-document attention
for packed rows, config checks and model directories."""

from __future__ import annotations

import json

import pytest
import torch

from mlmctl.errors import InputError
from mlmctl.modernbert import (
    PRESETS,
    ModernBertConfig,
    ModernBertForMaskedLM,
    ModernBertForSequenceClassification,
    check_sequence_length,
    doc_positions,
    from_hf_state_dict,
    special_token_config,
    to_hf_state_dict,
)

transformers = pytest.importorskip("transformers")

V, T = 97, 24  # T well beyond the local window below (8: each token sees 4 either side)


def tiny_cfg(**kw) -> ModernBertConfig:
    base = dict(vocab_size=V, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48,
                global_attn_every_n_layers=2, local_attention=8, global_rope_theta=1000.0, local_rope_theta=50.0)
    return ModernBertConfig(**{**base, **kw})


def hf_model(cls_name: str, cfg: ModernBertConfig, impl: str = "sdpa", **extra):
    hcfg = transformers.ModernBertConfig(**cfg.to_hf_config(cls_name, **extra))
    hcfg._attn_implementation = impl
    return getattr(transformers, cls_name)(hcfg).eval()


def batch(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = 2  # [CLS]
    am = torch.ones(B, T, dtype=torch.long)
    am[1, 15:] = 0  # padding longer than half a window: some padded queries see no real key
    am[2, 5:] = 0
    ids[am == 0] = 0
    return ids, am


def assert_close_at_real(a, b, am, tol=1e-4):
    diff = (a - b).abs()[am.bool()].max().item()
    assert diff < tol, diff


# --------------------------------------------------------------------------- HF equivalence


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_weights_into_ours_same_logits_and_loss(impl):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    hf = hf_model("ModernBertForMaskedLM", cfg, impl)
    ours = ModernBertForMaskedLM(cfg).eval()
    missing, unexpected = from_hf_state_dict(ours, hf.state_dict())
    assert missing == [] and unexpected == []
    ids, am = batch()
    labels = torch.full_like(ids, -100)
    labels[:, 3::4] = ids[:, 3::4]
    labels[am == 0] = -100
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=am, labels=labels)
        logits, _ = ours(ids, am)
        sparse, loss = ours(ids, am, labels)
    assert logits.shape == (3, T, V)
    assert_close_at_real(logits, ref.logits, am)
    sel = labels != -100
    assert torch.allclose(sparse, ref.logits[sel], atol=1e-4)  # only the labelled rows, in row-major order
    assert abs(loss.item() - ref.loss.item()) < 1e-5


def test_sliding_window_matters():
    """The equality above would hold trivially if no layer were local: check the window bites."""
    torch.manual_seed(0)
    narrow = ModernBertForMaskedLM(tiny_cfg()).eval()
    wide = ModernBertForMaskedLM(tiny_cfg(local_attention=1024)).eval()
    wide.load_state_dict(narrow.state_dict())
    ids, _ = batch()
    with torch.no_grad():
        assert (narrow(ids)[0] - wide(ids)[0]).abs().max() > 1e-3


def test_ours_saved_loads_in_transformers(tmp_path):
    from mlmctl.model_dir import save_model_dir

    torch.manual_seed(1)
    ours = ModernBertForMaskedLM(tiny_cfg(norm_bias=True, mlp_bias=True, attention_bias=True)).eval()
    with torch.no_grad():  # non-zero biases and gains, so a dropped key would show
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_model_dir(ours, tmp_path / "m", architectures="ModernBertForMaskedLM")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "modernbert" and cfg["architectures"] == ["ModernBertForMaskedLM"]
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "m", attn_implementation="sdpa").eval()
    assert type(hf).__name__ == "ModernBertForMaskedLM"
    assert hf.config.layer_types == ours.config.layer_types
    ids, am = batch(1)
    with torch.no_grad():
        assert_close_at_real(ours(ids, am)[0], hf(input_ids=ids, attention_mask=am).logits, am)


def test_transformers_saved_dir_loads_into_ours(tmp_path):
    from mlmctl.model_dir import load_model_dir

    torch.manual_seed(2)
    hf = hf_model("ModernBertForMaskedLM", tiny_cfg())
    hf.save_pretrained(tmp_path / "hf")
    ours, cfg, info = load_model_dir(tmp_path / "hf", ModernBertForMaskedLM)
    assert info["missing"] == [] and info["unexpected"] == []
    assert cfg == tiny_cfg()
    ids, am = batch(2)
    with torch.no_grad():
        assert_close_at_real(ours.eval()(ids, am)[0], hf(input_ids=ids, attention_mask=am).logits, am)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_classification_both_ways(tmp_path, pooling):
    from mlmctl.model_dir import load_model_dir, save_model_dir

    torch.manual_seed(3)
    cfg = tiny_cfg(classifier_pooling=pooling)
    hf = hf_model("ModernBertForSequenceClassification", cfg, num_labels=3)
    ours = ModernBertForSequenceClassification(cfg, num_labels=3).eval()
    assert from_hf_state_dict(ours, hf.state_dict()) == ([], [])
    ids, am = batch(3)
    with torch.no_grad():
        assert torch.allclose(ours(ids, am)[0], hf(input_ids=ids, attention_mask=am).logits, atol=1e-4)

    labels = {"id2label": {str(i): n for i, n in enumerate("abc")}, "label2id": {n: i for i, n in enumerate("abc")}}
    save_model_dir(ours, tmp_path / "c", architectures="ModernBertForSequenceClassification", extra_config=labels)
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "c").eval()
    assert type(back).__name__ == "ModernBertForSequenceClassification" and back.config.classifier_pooling == pooling
    again, _, info = load_model_dir(tmp_path / "c", ModernBertForSequenceClassification, num_labels=3)
    with torch.no_grad():
        ref = back(input_ids=ids, attention_mask=am).logits
        assert torch.allclose(ours(ids, am)[0], ref, atol=1e-4)
        assert torch.allclose(again.eval()(ids, am)[0], ref, atol=1e-4)
    assert info["missing"] == []


def test_key_map_names_every_hf_weight():
    cfg = tiny_cfg()
    hf = hf_model("ModernBertForMaskedLM", cfg)
    hf_keys = set(hf.state_dict()) - {"decoder.weight"}  # tied: HF does not store it either
    assert set(to_hf_state_dict(ModernBertForMaskedLM(cfg))) == hf_keys
    assert "model.layers.0.attn_norm.weight" not in hf_keys  # layer 0: identity, no weights


def test_bare_encoder_checkpoint_and_shape_mismatch():
    torch.manual_seed(4)
    cfg = tiny_cfg()
    src = ModernBertForMaskedLM(cfg)
    bare = {k.removeprefix("model."): v for k, v in to_hf_state_dict(src).items() if k.startswith("model.")}
    dst = ModernBertForMaskedLM(cfg)
    missing, _ = from_hf_state_dict(dst, bare)
    assert sorted(missing) == ["decoder.bias", "head.dense.weight", "head.norm.weight"]
    assert torch.equal(dst.model.layers[1].attn.Wqkv.weight, src.model.layers[1].attn.Wqkv.weight)
    bad = to_hf_state_dict(src)
    bad["model.layers.1.mlp.Wi.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.Wi\.weight has shape"):
        from_hf_state_dict(dst, bad)


# --------------------------------------------------------------------------- packed documents


def test_packed_documents_equal_separate_runs():
    """Two (and three) documents in one row give each document the logits it gets alone: no
    attention across the boundary, RoPE positions restarting, sliding windows clipped."""
    torch.manual_seed(5)
    model = ModernBertForMaskedLM(tiny_cfg()).eval()
    g = torch.Generator().manual_seed(5)
    docs = [torch.randint(5, V, (n,), generator=g) for n in (13, 11, 7, 17)]
    rows = [docs[:2], docs[2:]]  # 24 tokens each
    ids = torch.stack([torch.cat(r) for r in rows])
    doc_ids = torch.stack([torch.cat([torch.full((len(d),), j) for j, d in enumerate(r)]) for r in rows])
    with torch.no_grad():
        packed, _ = model(ids, doc_ids=doc_ids)
        for b, r in enumerate(rows):
            start = 0
            for d in r:
                alone, _ = model(d[None])
                assert torch.allclose(packed[b, start:start + len(d)], alone[0], atol=1e-5)
                start += len(d)
        # Without doc_ids the documents see each other: 10x the tolerance above, so the test can fail.
        assert (model(ids)[0][0, :13] - model(docs[0][None])[0][0]).abs().max() > 1e-4


def test_doc_positions_restart():
    d = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert doc_positions(d).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def test_padding_never_makes_nan_gradients():
    torch.manual_seed(6)
    model = ModernBertForMaskedLM(tiny_cfg())
    ids, am = batch()
    am[2, 1:] = 0  # a row with one real token: padded queries far from it see no real key
    labels = torch.full_like(ids, -100)
    labels[0, 4] = ids[0, 4]
    _, loss = model(ids, am, labels)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- configs and bad input


def test_parameter_count_is_exact_before_allocation():
    for kw in ({}, {"norm_bias": True, "attention_bias": True, "mlp_bias": True, "classifier_bias": True},
               {"decoder_bias": False, "num_hidden_layers": 1}):
        cfg = tiny_cfg(**kw)
        assert cfg.parameter_count() == sum(p.numel() for p in ModernBertForMaskedLM(cfg).parameters())


def test_presets_and_base_shape():
    assert PRESETS["base"] == (22, 768, 12, 1152)
    cfg = ModernBertConfig.from_preset("base", 50368)
    assert cfg.layer_types.count("full_attention") == 8  # layers 0, 3, ..., 21
    hcfg = transformers.ModernBertConfig(**cfg.to_hf_config("ModernBertForMaskedLM"))
    with torch.device("meta"):  # ModernBERT-base's published size, without allocating it
        n = sum(p.numel() for p in transformers.ModernBertForMaskedLM(hcfg).parameters())
    assert cfg.parameter_count() == n
    assert 148e6 < n < 151e6
    for name in PRESETS:
        assert ModernBertConfig.from_preset(name, 1000).hidden_size == PRESETS[name][1]


def test_reads_old_and_new_config_spellings():
    new = tiny_cfg().to_hf_config("ModernBertForMaskedLM")
    old = {k: v for k, v in new.items() if k not in ("layer_types", "rope_parameters")}
    assert ModernBertConfig.from_hf_config(new) == ModernBertConfig.from_hf_config(old) == tiny_cfg()
    only_new = {k: v for k, v in new.items() if k not in ("global_rope_theta", "local_rope_theta",
                                                          "global_attn_every_n_layers")}
    assert ModernBertConfig.from_hf_config(only_new) == tiny_cfg()


@pytest.mark.parametrize("change, match", [
    ({"hidden_size": 33}, "multiple of `num_attention_heads`"),
    ({"hidden_size": 6, "num_attention_heads": 2}, "must be even"),
    ({"local_attention": 0}, "`local_attention` must be a positive integer"),
    ({"norm_bias": "yes"}, "`norm_bias` must be true or false"),
    ({"pad_token_id": 500}, r"`pad_token_id` must be an id in \[0, vocab_size=97\)"),
    ({"classifier_pooling": "max"}, "classifier_pooling"),
    ({"hidden_activation": "swish2"}, "hidden_activation"),
    ({"mlp_dropout": 1.5}, "mlp_dropout"),
    ({"vocab_size": 10**9, "hidden_size": 4096}, "parameters"),
])
def test_bad_config_values_name_the_key(change, match):
    d = {**tiny_cfg().to_hf_config("ModernBertForMaskedLM"), **change}
    with pytest.raises(ValueError, match=match):
        ModernBertConfig.from_hf_config(d)


@pytest.mark.parametrize("change, match", [
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}}, "rope_type 'default'"),
    ({"layer_types": ["sliding_attention"] * 4}, "layer_types must be global every N"),
    ({"layer_types": ["full_attention"]}, "one kind per layer"),
    ({"tie_word_embeddings": False}, "untied"),
    ({"model_type": "bert"}, "model_type"),
])
def test_unrepresentable_configs_are_refused(change, match):
    d = {**tiny_cfg().to_hf_config("ModernBertForMaskedLM"), **change}
    with pytest.raises(ValueError, match=match):
        ModernBertConfig.from_hf_config(d)


def test_special_tokens_and_sequence_length_errors():
    ids = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert special_token_config(ids, "pretrain") == {"pad_token_id": 0, "cls_token_id": 2, "sep_token_id": 3,
                                                     "bos_token_id": 2, "eos_token_id": 3}
    with pytest.raises(InputError, match=r"^pretrain: the vocabulary has no \[CLS\] \[MASK\] token; .*build-vocab"):
        special_token_config({"[PAD]": 0, "[SEP]": 3, "[CLS]": None}, "pretrain")
    cfg = tiny_cfg(max_position_embeddings=16)
    check_sequence_length(16, cfg, "pretrain")
    with pytest.raises(InputError, match="`data.max_seq_len` 17 exceeds the model's max_position_embeddings 16"):
        check_sequence_length(17, cfg, "pretrain", key="`data.max_seq_len`")
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        ModernBertForMaskedLM(cfg)(torch.zeros(1, 17, dtype=torch.long))


def test_no_next_sentence_head():
    with pytest.raises(ValueError, match="no next-sentence head"):
        ModernBertForMaskedLM(tiny_cfg(), nsp=True)


def test_model_dir_refuses_the_other_architecture(tmp_path):
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import arch_of, load_model_dir, read_model_config, save_model_dir

    save_model_dir(ModernBertForMaskedLM(tiny_cfg()), tmp_path / "m", architectures="ModernBertForMaskedLM")
    assert arch_of(read_model_config(tmp_path / "m", arch=None)) == "modernbert"
    assert arch_of(read_model_config(tmp_path / "m", arch="modernbert")) == "modernbert"
    with pytest.raises(InputError, match="holds a modernbert model .* where a bert model is needed"):
        load_model_dir(tmp_path / "m", BertForPreTraining)
    with pytest.raises(InputError, match="where a bert model is needed"):
        read_model_config(tmp_path / "m")  # callers not yet wired for ModernBERT keep refusing it
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    with pytest.raises(InputError, match="model_type 'roberta' is not supported; mlmctl reads bert and modernbert"):
        load_model_dir(tmp_path / "m", ModernBertForMaskedLM)


def test_architecture_registry_selects_presets_and_classes():
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import architecture

    bert, modern = architecture("bert"), architecture("modernbert")
    assert bert.masked_lm is BertForPreTraining and modern.masked_lm is ModernBertForMaskedLM
    assert set(bert.presets) == set(modern.presets)  # the same preset names select either shape
    assert modern.config.from_preset("mini", 100).intermediate_size == 384
    assert bert.config.from_preset("mini", 100).intermediate_size == 1024
    with pytest.raises(ValueError, match="unknown architecture 'gpt'"):
        architecture("gpt")
