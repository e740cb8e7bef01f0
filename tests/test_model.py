"""The BERT model: loss at masked positions, init, and HF compatibility both ways."""

import json

import pytest
import torch
import torch.nn.functional as F

from mlmctl.errors import InputError
from mlmctl.model import (
    IGNORE_INDEX,
    PRESETS,
    BertForPreTraining,
    BertForSequenceClassification,
    ModelConfig,
    from_hf_state_dict,
    to_hf_state_dict,
)
from mlmctl.model_dir import load_model_dir, save_model_dir

V = 97


def tiny_cfg(**kw):
    base = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)
    base.update(kw)
    return ModelConfig(**base)


def batch(B=3, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = 2
    labels = torch.full((B, T), IGNORE_INDEX)
    pos = torch.rand(B, T, generator=g) < 0.3
    pos[:, 0] = False
    pos[0, 3] = True
    labels[pos] = ids[pos]
    am = torch.ones(B, T, dtype=torch.long)
    am[1, T - 5:] = 0
    labels[1, T - 5:] = IGNORE_INDEX
    tt = torch.zeros(B, T, dtype=torch.long)
    tt[:, T // 2:] = 1
    return ids, am, tt, labels


def train_a_little(model, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for s in range(steps):
        ids, am, tt, labels = batch(seed=s + 10)
        _, loss = model(ids, am, tt, labels=labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_masked_only_loss_equals_full_vocab_loss():
    torch.manual_seed(0)
    m = BertForPreTraining(tiny_cfg(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    ids, am, tt, labels = batch()
    logits, loss = m(ids, am, tt, labels=labels)
    full, none = m(ids, am, tt)
    assert none is None and full.shape == (3, 16, V)
    n = int((labels != IGNORE_INDEX).sum())
    assert logits.shape == (n, V)
    ref = F.cross_entropy(full.reshape(-1, V), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(logits, full[labels != IGNORE_INDEX])
    # loss_denominator: sum over masked tokens divided by the given count
    _, loss_d = m(ids, am, tt, labels=labels, loss_denominator=4 * n)
    torch.testing.assert_close(loss_d, ref / 4)


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    m = BertForPreTraining(tiny_cfg(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    ids = torch.randint(5, V, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    am = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], 1).long()
    a, _ = m(ids)
    b, _ = m(padded, am)
    torch.testing.assert_close(a, b[:, :10], atol=1e-5, rtol=1e-5)


def test_init_is_truncated_normal_and_decoder_tied():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=1000)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == PRESETS["tiny"]
    m = BertForPreTraining(cfg)
    w = m.bert.embeddings.word_embeddings.weight
    assert w.abs().max() <= 0.04 + 1e-6
    assert 0.015 < float(w.detach().std()) < 0.02
    assert not m.bert.layers[0].attn.qkv.bias.any()
    assert float(m.bert.layers[0].attn_norm.weight.detach().min()) == 1.0
    # The decoder is the embedding matrix: a gradient through the MLM head reaches it.
    ids, am, tt, labels = batch()
    ids = ids.clamp(max=999)
    labels[labels != IGNORE_INDEX] = 7
    _, loss = m(ids, labels=labels)
    loss.backward()
    assert w.grad[7].abs().sum() > 0


def test_bad_config_values():
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(vocab_size=10, hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        ModelConfig(vocab_size=10, hidden_act="swish")
    with pytest.raises(ValueError, match="model_type"):
        ModelConfig.from_hf_config({"model_type": "roberta", "vocab_size": 10})


def test_state_dict_round_trip_is_exact():
    torch.manual_seed(0)
    a = BertForPreTraining(tiny_cfg(), nsp=True)
    b = BertForPreTraining(tiny_cfg(), nsp=True)
    missing, unexpected = from_hf_state_dict(b, to_hf_state_dict(a))
    assert missing == [] and unexpected == []
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    bad = to_hf_state_dict(a)
    bad["bert.pooler.dense.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="pooler"):
        from_hf_state_dict(b, bad)


def _write_tokenizer(d):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for w in "the cat sat on mat a dog ran".split():
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    return tok


def test_saved_dir_loads_in_transformers_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    _write_tokenizer(tmp_path / "vocab")
    for trained in (False, True):
        m = BertForPreTraining(tiny_cfg(), nsp=True).eval()
        if trained:
            m = train_a_little(m)
        out = save_model_dir(m, tmp_path / "model", tokenizer_dir=tmp_path / "vocab", architectures="BertForPreTraining")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
        ids, am, tt, _ = batch()
        with torch.no_grad():
            ours, _ = m(ids, am, tt)
            hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
            theirs = hf(input_ids=ids, attention_mask=am, token_type_ids=tt).logits
            assert (ours - theirs).abs().max() < 1e-4
            pt = transformers.BertForPreTraining.from_pretrained(out).eval()
            r = pt(input_ids=ids, attention_mask=am, token_type_ids=tt)
            ours_nsp = m.cls.seq_relationship(m.bert.pooler(m.bert(ids, am, tt)))
            assert (r.seq_relationship_logits - ours_nsp).abs().max() < 1e-4
            assert (r.prediction_logits - ours).abs().max() < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("the cat sat")["input_ids"] == [2, 5, 6, 7, 3]
    assert tok.mask_token_id == 4 and tok.pad_token_id == 0


def test_loads_hf_written_dirs(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hcfg = transformers.BertConfig(**tiny_cfg().to_hf_config("BertForMaskedLM"))
    hf = transformers.BertForMaskedLM(hcfg).eval()
    hf.save_pretrained(tmp_path / "mlm")
    m, cfg, info = load_model_dir(tmp_path / "mlm", BertForPreTraining)
    assert cfg == tiny_cfg()
    assert info["missing"] == [] and info["unexpected"] == []
    _, _, info = load_model_dir(tmp_path / "mlm", BertForPreTraining, nsp=True)
    assert set(info["missing"]) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                    "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    ids, am, tt, _ = batch()
    with torch.no_grad():
        assert (m.eval()(ids, am, tt)[0] - hf(input_ids=ids, attention_mask=am, token_type_ids=tt).logits).abs().max() < 1e-4
    # A bare BertModel checkpoint (keys without "bert.") warm-starts a classifier.
    base = transformers.BertModel(hcfg).eval()
    base.save_pretrained(tmp_path / "base")
    clf, _, info = load_model_dir(tmp_path / "base", BertForSequenceClassification, num_labels=3)
    assert set(info["missing"]) == {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        torch.testing.assert_close(clf.eval().bert(ids, am, tt), base(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state, atol=1e-4, rtol=1e-4)


def test_classifier_dir_round_trip_and_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    clf = BertForSequenceClassification(tiny_cfg(), num_labels=3).eval()
    extra = {"id2label": {"0": "neg", "1": "neu", "2": "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}}
    save_model_dir(clf, tmp_path / "clf", architectures="BertForSequenceClassification", extra_config=extra)
    back, _, info = load_model_dir(tmp_path / "clf", BertForSequenceClassification, num_labels=3)
    assert info["missing"] == [] and info["unexpected"] == []
    assert info["config"]["id2label"]["2"] == "pos"
    ids, am, tt, _ = batch()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        a, la = clf(ids, am, tt, labels=labels)
        b, lb = back.eval()(ids, am, tt, labels=labels)
        torch.testing.assert_close(a, b)
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
        assert (hf(input_ids=ids, attention_mask=am, token_type_ids=tt).logits - a).abs().max() < 1e-4
        _, lw = clf(ids, am, tt, labels=labels, class_weights=[1.0, 2.0, 3.0])
        torch.testing.assert_close(lw, F.cross_entropy(a, labels, weight=torch.tensor([1.0, 2.0, 3.0])))


def test_save_replaces_existing_dir_and_bad_dirs_are_refused(tmp_path):
    torch.manual_seed(0)
    m = BertForPreTraining(tiny_cfg())
    save_model_dir(m, tmp_path / "m", architectures="BertForMaskedLM")
    (tmp_path / "m" / "stale.txt").write_text("x")
    save_model_dir(m, tmp_path / "m", architectures="BertForMaskedLM")
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    with pytest.raises(InputError, match="does not exist"):
        load_model_dir(tmp_path / "nope", BertForPreTraining)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.json"):
        load_model_dir(tmp_path / "empty", BertForPreTraining)
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(InputError, match="damaged"):
        load_model_dir(tmp_path / "m", BertForPreTraining)
    with pytest.raises(InputError, match="tokenizer.json"):
        save_model_dir(m, tmp_path / "m2", tokenizer_dir=tmp_path / "empty", architectures="BertForMaskedLM")
