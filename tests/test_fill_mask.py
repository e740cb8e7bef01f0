"""fill-mask: top-k tokens with probabilities from a real (tiny, briefly trained) model."""

from __future__ import annotations

import pytest

from test_labelled import make_tiny_model_dir


@pytest.fixture(scope="module")
def trained_mlm(tmp_path_factory):
    """A tiny MLM trained for a few hundred steps on one repeated pattern, so its top-1 is known."""
    import torch

    from mlmctl.text_encoder import TextEncoder
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import load_model_dir, save_model_dir

    root = tmp_path_factory.mktemp("fm")
    texts = ["the cat sat on the mat", "a dog ran in the park"] * 20
    path = make_tiny_model_dir(root, texts, hidden=32)
    model, _, _ = load_model_dir(path, BertForPreTraining)
    enc = TextEncoder(path, 16, "test")
    seq = [enc.cls_id, *enc.token_ids(["the cat sat on the mat"])[0], enc.sep_id]
    target = enc.tok.token_to_id("mat")
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.tensor([seq])
    ids[0, len(seq) - 2] = enc.mask_id
    labels = torch.full_like(ids, -100)
    labels[0, len(seq) - 2] = target
    model.train()
    for _ in range(60):
        _, loss = model(ids, labels=labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model_dir(model, root / "trained", tokenizer_dir=path, architectures=["BertForMaskedLM"])


def test_fill_mask_top_k(trained_mlm, capsys):
    from mlmctl.fill_mask import fill_mask, run

    res = fill_mask(trained_mlm, "the cat sat on the [MASK]", top_k=3)
    assert len(res["masks"]) == 1 and len(res["masks"][0]) == 3
    (tok, p), *rest = res["masks"][0]
    assert tok == "mat" and p > 0.5
    probs = [p] + [q for _, q in rest]
    assert probs == sorted(probs, reverse=True) and all(0 < q < 1 for q in probs)
    assert res["filled"].endswith("mat")

    run(trained_mlm, "[MASK] cat sat on the [MASK]", 2)
    out = capsys.readouterr().out
    assert out.count(" of 2 (token") == 2 and "[MASK]  0." not in out and "top-1:" in out and "mat" in out


def test_fill_mask_errors(trained_mlm, tmp_path, run_cli):
    code, _, err = run_cli("fill-mask", trained_mlm, "no mask here")
    assert code == 1 and "no [MASK] token" in err
    code, _, err = run_cli("fill-mask", trained_mlm, "a [MASK]", "--top-k", "0")
    assert code == 1 and "--top-k" in err
    code, _, err = run_cli("fill-mask", trained_mlm, " ".join(["cat"] * 100) + " [MASK]")
    assert code == 1 and "at most 64" in err
    code, _, err = run_cli("fill-mask", tmp_path / "missing", "a [MASK]")
    assert code == 1 and "does not exist" in err and "Traceback" not in err


def test_fill_mask_on_a_modernbert_directory(tmp_path):
    """fill-mask dispatches on config.json's model_type: a ModernBERT dir gives the logits of its own model."""
    import torch

    from mlmctl.fill_mask import fill_mask
    from mlmctl.model_dir import save_model_dir
    from mlmctl.modernbert import ModernBertConfig, ModernBertForMaskedLM

    bert_dir = make_tiny_model_dir(tmp_path / "b", ["the cat sat on the mat"] * 4)
    vocab_size = len((bert_dir / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(ModernBertConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48,
                                                   max_position_embeddings=64))
    d = save_model_dir(model, tmp_path / "modern", tokenizer_dir=bert_dir, architectures=["ModernBertForMaskedLM"])
    res = fill_mask(d, "the cat sat on the [MASK]", top_k=2)
    with torch.no_grad():
        from mlmctl.text_encoder import TextEncoder

        enc = TextEncoder(d, 64, "test")
        ids = [enc.cls_id, *enc.tok.encode("the cat sat on the [MASK]", add_special_tokens=False).ids, enc.sep_id]
        probs = torch.softmax(model.eval()(torch.tensor([ids]))[0][0, ids.index(enc.mask_id)], -1)
    for tok, p in res["masks"][0]:  # the model's own probabilities (specials are never ranked)
        assert p == pytest.approx(float(probs[enc.tok.token_to_id(tok)]), rel=1e-5)
