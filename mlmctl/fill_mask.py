"""`mlmctl fill-mask MODEL_DIR "text with [MASK]"`: the most likely tokens for each [MASK].

MODEL_DIR is a model directory with a masked-LM head (pretrain's `final/` or a checkpoint, or a
local HF BERT directory with tokenizer.json), or a pretrain run directory (its final/ is used).
The text is tokenised with the model's own tokenizer; `[MASK]` is recognised as a special
token wherever it appears, also inside Chinese text with no spaces around it ("北京是中国的[MASK]都").
Output: one block per mask with the top-k tokens and probabilities,
then the text with every mask replaced by its most likely token. Special tokens ([PAD]
[CLS] [SEP] [MASK]) are never candidates; the probabilities shown are the model's own.
"""

from __future__ import annotations

from pathlib import Path

from mlmctl.errors import InputError, MlmctlError
from mlmctl.scripts import join_unspaced


def run(model_dir: Path, text: str, top_k: int = 5) -> None:
    for line in fill_mask(model_dir, text, top_k)["lines"]:
        print(line)


def fill_mask(model_dir: Path, text: str, top_k: int = 5) -> dict:
    """Returns {"masks": [[(token, probability), ...] per mask], "filled": str, "lines": [...]}."""
    import torch

    from mlmctl.model_dir import resolve_model_dir
    from mlmctl.text_encoder import TextEncoder
    from mlmctl.model_dir import MLM_HEAD_PREFIXES, load_own_arch

    if top_k < 1:
        raise MlmctlError(f"fill-mask: --top-k must be at least 1, got {top_k}")
    model_dir = resolve_model_dir(model_dir, "fill-mask")
    model, cfg, info = load_own_arch(model_dir, "masked_lm", "fill-mask")
    if any(k.startswith(MLM_HEAD_PREFIXES) for k in info["missing"]):
        raise InputError(f"fill-mask: {model_dir} has no masked-LM head (a fine-tuned classifier?); "
                         "use a pretrain output such as RUN/final")
    enc = TextEncoder(model_dir, cfg.max_position_embeddings, "fill-mask")
    enc.check_fits(cfg, model_dir, "fill-mask")
    if enc.mask_id is None:
        raise InputError(f"fill-mask: {model_dir}/tokenizer.json has no [MASK] token")
    pieces = enc.tok.encode(text, add_special_tokens=False)
    ids = [enc.cls_id, *pieces.ids, enc.sep_id]
    positions = [i for i, t in enumerate(ids) if t == enc.mask_id]
    if not positions:
        raise MlmctlError('fill-mask: the text has no [MASK] token; write [MASK] where a word is to be predicted, '
                          'e.g. "the capital of france is [MASK] ."')
    if len(ids) > cfg.max_position_embeddings:
        raise MlmctlError(f"fill-mask: the text is {len(ids)} tokens long; the model takes at most "
                          f"{cfg.max_position_embeddings} (including [CLS] and [SEP])")
    model.eval()
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))  # (1, T, V)
    probs = torch.softmax(logits[0, positions].float(), dim=-1)  # (M, V)
    # Rank only real tokens: [PAD] [CLS] [SEP] [MASK] are never an answer. The probabilities
    # shown stay the model's own (not renormalised).
    ranked = probs.clone()
    for special in (enc.pad_id, enc.cls_id, enc.sep_id, enc.mask_id):
        ranked[:, special] = -1.0
    k = min(top_k, probs.shape[-1] - 4)
    top_i = ranked.topk(k, dim=-1).indices
    top_p = probs.gather(-1, top_i)

    masks, lines = [], []
    filled = list(ids)
    for m, pos in enumerate(positions):
        cands = [(enc.tok.id_to_token(int(i)), float(p)) for p, i in zip(top_p[m], top_i[m])]
        masks.append(cands)
        filled[pos] = int(top_i[m, 0])
        lines.append(f"[MASK] {m + 1} of {len(positions)} (token {pos}):")
        width = max(len(t) for t, _ in cands)
        lines += [f"  {t:<{width}}  {p:.4f}" for t, p in cands]
    # The WordPiece decoder puts a space between every two tokens; Chinese reads without them.
    filled_text = join_unspaced(enc.tok.decode(filled[1:-1], skip_special_tokens=False))
    lines.append(f"top-1: {filled_text}")
    return {"masks": masks, "filled": filled_text, "lines": lines}
