"""From labelled examples to model inputs, shared by finetune, eval and fill-mask.

    enc = TextEncoder(model_dir, max_seq_len=128, reader="eval")    # the model's own tokenizer.json
    batch = enc.encode(labelled_data, label2id)                      # Encoded: ids, token types, labels
    input_ids, attention_mask, token_types = pad_batch(batch, rows, pad_id)
    preds, probs = predict(model, batch, batch_size, pad_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlmctl.errors import InputError
from mlmctl.labelled import LabelledData, encode_labels
from mlmctl.layout import TOKENIZER_FILE


@dataclass
class Encoded:
    """Token ids of a labelled file, ready for batching."""

    ids: list[list[int]]
    token_types: list[list[int]]
    labels: list[int] | None
    truncated: int = 0


class TextEncoder:
    """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with the model's own `tokenizer.json`.

    Special tokens are added here rather than by the tokenizer's post-processor, so the layout
    is the same for every tokenizer (ours, or a local HF BERT directory's). Pairs are truncated
    longest-first, as HF's default `truncation=True` does."""

    def __init__(self, model_dir: Path, max_seq_len: int, reader: str):
        from tokenizers import Tokenizer

        tok_file = Path(model_dir) / TOKENIZER_FILE
        if not tok_file.is_file():
            raise InputError(f"{reader}: {model_dir} has no tokenizer.json (a fast tokenizer is needed)")
        try:
            self.tok = Tokenizer.from_file(str(tok_file))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise InputError(f"{reader}: {tok_file} is not a valid tokenizer file ({e})") from None
        self.tok.no_truncation()
        self.tok.no_padding()
        ids = {t: self.tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
        missing = [t for t, i in ids.items() if i is None and t != "[MASK]"]
        if missing:
            raise InputError(f"{reader}: {tok_file} has no {', '.join(missing)} token; it is not a BERT tokenizer")
        self.pad_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]"))
        self.max_seq_len = max_seq_len

    def check_fits(self, cfg, model_dir: Path, reader: str, pairs: bool = False) -> None:
        """Refuse a tokenizer whose ids the model cannot embed (an IndexError deep in torch
        otherwise), and text pairs for a model with a single token type."""
        size = self.tok.get_vocab_size(with_added_tokens=True)
        if size > cfg.vocab_size:
            raise InputError(
                f"{reader}: {model_dir}/tokenizer.json has {size:,} tokens but the model's vocab_size is "
                f"{cfg.vocab_size:,} ({model_dir}/config.json); use the tokenizer the model was trained with"
            )
        if pairs and cfg.type_vocab_size < 2:
            raise InputError(f"{reader}: {model_dir}/config.json has type_vocab_size {cfg.type_vocab_size}; "
                             "text pairs need 2 token types")

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def encode(self, data: LabelledData, label2id: dict[str, int] | None) -> Encoded:
        labels = encode_labels(data, label2id) if label2id is not None else None
        a_ids = self.token_ids(data.texts)
        b_ids = self.token_ids(data.pairs) if data.pairs is not None else None
        out = Encoded([], [], labels)
        for i, a in enumerate(a_ids):
            if b_ids is None:
                room = self.max_seq_len - 2
                out.truncated += len(a) > room
                seq = [self.cls_id, *a[:room], self.sep_id]
                types = [0] * len(seq)
            else:
                b = b_ids[i]
                room = self.max_seq_len - 3
                out.truncated += len(a) + len(b) > room
                na, nb = len(a), len(b)
                while na + nb > room:  # longest first
                    if na > nb:
                        na -= 1
                    else:
                        nb -= 1
                seq = [self.cls_id, *a[:na], self.sep_id, *b[:nb], self.sep_id]
                types = [0] * (na + 2) + [1] * (nb + 1)
            out.ids.append(seq)
            out.token_types.append(types)
        return out


def pad_batch(enc: Encoded, rows, pad_id: int):
    """Tensors (input_ids, attention_mask, token_type_ids) of the given rows, padded on the
    right to the longest row of this batch only (dynamic padding)."""
    import torch

    T = max(len(enc.ids[r]) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    types = torch.zeros((len(rows), T), dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(enc.ids[r])
        ids[j, :n] = torch.tensor(enc.ids[r])
        mask[j, :n] = 1
        types[j, :n] = torch.tensor(enc.token_types[r])
    return ids, mask, types


def predict(model, enc: Encoded, batch_size: int, pad_id: int, device="cpu", raw: bool = False):
    """Class probabilities (N, K) as a float32 tensor on the CPU, in example order (`raw`: the
    logits, e.g. a regression model's outputs). Rows are processed sorted by length so each batch
    pads little; the result is put back in order."""
    import torch

    model.eval()
    order = sorted(range(len(enc.ids)), key=lambda r: len(enc.ids[r]))
    out = [None] * len(order)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            ids, mask, types = (t.to(device) for t in pad_batch(enc, rows, pad_id))
            logits, _ = model(ids, attention_mask=mask, token_type_ids=types)
            probs = (logits.float() if raw else torch.softmax(logits.float(), dim=-1)).cpu()
            for j, r in enumerate(rows):
                out[r] = probs[j]
    return torch.stack(out) if out else torch.zeros(0, 0)
