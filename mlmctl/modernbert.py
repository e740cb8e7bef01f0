"""A ModernBERT encoder with masked-LM and classification heads, in one file.

The layout is exactly that of `transformers`' `ModernBertForMaskedLM` /
`ModernBertForSequenceClassification` (arXiv 2412.13663), so a directory mlmctl writes loads
with `AutoModelForMaskedLM.from_pretrained(dir)` (no `trust_remote_code`) and gives the same
logits. Notable features:
- `ModernBertConfig` uses HF `ModernBertConfig` field names (the Hub's spelling:
  `global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`); `to_hf_config()`
  also writes transformers 5's `layer_types` / `rope_parameters`, so old and new readers agree.
- Token embeddings + LayerNorm, no absolute positions: RoPE in every attention layer, with
  its own theta for global (160k) and local (10k) layers.
- Pre-LN layers (layer 0's `attn_norm` is the identity: the embedding norm precedes it), a
  fused `Wqkv`, a GeGLU MLP (`Wi` projects to 2 x intermediate: value and gate), no biases
  unless the config asks (`attention_bias`, `mlp_bias`, `norm_bias`; the decoder's is on).
- Alternating attention: every `global_attn_every_n_layers`-th layer (from layer 0) is global,
  the others see only tokens within `local_attention // 2` positions (a band mask, the same
  inclusive window as HF's `sliding_window_bidirectional_overlay`).
- Per-document attention for packed rows: `doc_ids` (B, T) makes the attention mask
  block-diagonal (combined with the band) and restarts RoPE positions at each document, so a
  packed row gives each document exactly the logits it would get alone.
- `F.scaled_dot_product_attention` with one boolean mask per layer kind, built once per
  forward; without padding, documents or a window shorter than the row, SDPA gets no mask.
- The MLM loss is computed only at masked positions: hidden states are gathered before the
  head and the vocabulary projection (as `mlmctl.model` and cramming's `_forward_sparse`).
  The decoder is tied to the token embeddings and has its own bias.
- HF compatibility is one explicit key map at the bottom (`to_hf_state_dict`/`from_hf_state_dict`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlmctl.errors import InputError
from mlmctl.model import ACTIVATIONS, IGNORE_INDEX, check_allocatable, sequence_loss, token_loss

# name -> (num_hidden_layers, hidden_size, num_attention_heads, intermediate_size). The GeGLU
# width is 1.5 x hidden, ModernBERT-base's ratio (its Wi holds 2 x intermediate rows).
PRESETS = {
    "tiny": (2, 128, 2, 192),
    "mini": (4, 256, 4, 384),
    "small": (4, 512, 8, 768),
    "medium": (8, 512, 8, 768),
    "base": (22, 768, 12, 1152),
}

MODEL_TYPE = "modernbert"
ENCODER_PREFIX = "model."  # HF's `base_model_prefix`: every encoder weight starts with it
# Special tokens the architecture needs, and the config field each id goes to. [UNK] is the
# tokenizer's business (WordPiece needs it, byte-level BPE does not), not the model's.
SPECIAL_TOKEN_FIELDS = {"[PAD]": "pad_token_id", "[CLS]": "cls_token_id", "[SEP]": "sep_token_id",
                        "[MASK]": None}


@dataclass
class ModernBertConfig:
    """Shape of a ModernBERT model; field names and meanings are those of HF `ModernBertConfig`."""

    model_type: ClassVar[str] = MODEL_TYPE

    vocab_size: int
    hidden_size: int = 128
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 0
    cls_token_id: int = 2
    sep_token_id: int = 3
    bos_token_id: int | None = 2
    eos_token_id: int | None = 3
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    global_attn_every_n_layers: int = 3
    local_attention: int = 128
    attention_bias: bool = False
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"

    def __post_init__(self):
        # config.json may come from anywhere: check every value before anything is allocated.
        for key in _SIZE_KEYS:
            v = getattr(self, key)
            if type(v) is not int or v < 1:
                raise ValueError(f"`{key}` must be a positive integer, got {v!r}")
        for key in ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"):
            v = getattr(self, key)
            if type(v) not in (int, float) or not 0.0 <= v < 1.0:
                raise ValueError(f"`{key}` must be a number in [0, 1), got {v!r}")
        for key in ("initializer_range", "norm_eps"):
            v = getattr(self, key)
            if type(v) not in (int, float) or not 0.0 < v < 1.0:
                raise ValueError(f"`{key}` must be a number in (0, 1), got {v!r}")
        for key in ("initializer_cutoff_factor", "global_rope_theta", "local_rope_theta"):
            v = getattr(self, key)
            if type(v) not in (int, float) or not 0.0 < v < 1e12:
                raise ValueError(f"`{key}` must be a positive number, got {v!r}")
        for key in ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "classifier_bias"):
            if type(getattr(self, key)) is not bool:
                raise ValueError(f"`{key}` must be true or false, got {getattr(self, key)!r}")
        for key in ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id"):
            v = getattr(self, key)
            optional = key in ("bos_token_id", "eos_token_id")
            if not (optional and v is None) and (type(v) is not int or not 0 <= v < self.vocab_size):
                raise ValueError(f"`{key}` must be an id in [0, vocab_size={self.vocab_size}), got {v!r}")
        for key in ("hidden_activation", "classifier_activation"):
            v = getattr(self, key)
            if not isinstance(v, str) or v not in ACTIVATIONS:
                raise ValueError(f"`{key}` {v!r} is not one of {sorted(ACTIVATIONS)}")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"`classifier_pooling` must be 'cls' or 'mean', got {self.classifier_pooling!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` {self.hidden_size} is not a multiple of `num_attention_heads` {self.num_attention_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"the head size `hidden_size / num_attention_heads` = "
                             f"{self.hidden_size // self.num_attention_heads} must be even (RoPE rotates pairs)")
        check_allocatable(self)

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides) -> "ModernBertConfig":
        layers, hidden, heads, inter = PRESETS[name]
        shape = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                     intermediate_size=inter)
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    @property
    def layer_types(self) -> list[str]:
        """HF's per-layer attention kinds: layer i is global when i % global_attn_every_n_layers == 0."""
        n = self.global_attn_every_n_layers
        return ["full_attention" if i % n == 0 else "sliding_attention" for i in range(self.num_hidden_layers)]

    def to_hf_config(self, architectures: list[str] | str, **extra) -> dict:
        """The `config.json` dict HF `ModernBertConfig` reads (transformers 4.48+ and 5.x);
        `extra` adds keys (e.g. `id2label`)."""
        if isinstance(architectures, str):
            architectures = [architectures]
        d = {"architectures": list(architectures), "model_type": MODEL_TYPE, **asdict(self),
             "layer_types": self.layer_types,
             "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": self.local_rope_theta}},
             "tie_word_embeddings": True, "sparse_prediction": False, "torch_dtype": "float32"}
        d.update(extra)
        return d

    @classmethod
    def from_hf_config(cls, d: dict) -> "ModernBertConfig":
        """Read a ModernBERT `config.json` dict (old or new spelling); refuses what this model
        cannot represent."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object of settings, got {type(d).__name__}")
        if d.get("model_type") != MODEL_TYPE:
            raise ValueError(f"model_type is {d.get('model_type')!r}, not {MODEL_TYPE!r}")
        if "vocab_size" not in d:
            raise ValueError("config.json has no vocab_size")
        if d.get("tie_word_embeddings", True) is not True:
            raise ValueError("tie_word_embeddings false (an untied decoder) is not supported")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None and k not in ("bos_token_id", "eos_token_id")}
        for k in ("bos_token_id", "eos_token_id"):  # optional in HF: None is a value, not "use the default"
            if k in d:
                kw[k] = d[k]
        kw.update(_read_rope(d))
        if d.get("layer_types") is not None:
            kw["global_attn_every_n_layers"] = _every_n(d["layer_types"], d.get("num_hidden_layers"),
                                                        d.get("global_attn_every_n_layers", 3))
        return cls(**kw)

    def parameter_count(self) -> int:
        """Parameters of the encoder with the MLM head (the decoder is tied), from the shape
        alone: computed before anything is allocated."""
        V, H, L, F_ = self.vocab_size, self.hidden_size, self.num_hidden_layers, self.intermediate_size
        norm = H * (2 if self.norm_bias else 1)
        emb = V * H + norm
        layer = (3 * H * H + (3 * H if self.attention_bias else 0) + H * H + (H if self.attention_bias else 0)
                 + 2 * H * F_ + (2 * F_ if self.mlp_bias else 0) + F_ * H + (H if self.mlp_bias else 0) + 2 * norm)
        head = H * H + (H if self.classifier_bias else 0) + norm + (V if self.decoder_bias else 0)
        # Layer 0 has no attn_norm; the final norm has the same size, so L * layer counts both.
        return emb + L * layer + head


def special_token_config(special_ids: dict, where: str) -> dict:
    """The config's token-id fields from a vocabulary's special tokens (`{"[PAD]": 0, ...}`,
    as `VocabDir.special_ids` or `tokenizer.token_to_id` give them); one InputError naming
    every token the architecture needs and the vocabulary lacks."""
    missing = [t for t in SPECIAL_TOKEN_FIELDS if not isinstance(special_ids.get(t), int)]
    if missing:
        raise InputError(
            f"{where}: the vocabulary has no {' '.join(missing)} token; a {MODEL_TYPE} model needs "
            f"{' '.join(SPECIAL_TOKEN_FIELDS)} (padding, [CLS] pooling, separators, masking); rebuild it "
            "with `mlmctl build-vocab`, which always adds them"
        )
    out = {f: special_ids[t] for t, f in SPECIAL_TOKEN_FIELDS.items() if f}
    out.update(bos_token_id=out["cls_token_id"], eos_token_id=out["sep_token_id"])  # ModernBERT's own convention
    return out


def check_sequence_length(seq_len: int, cfg: ModernBertConfig, where: str, key: str = "the sequence length") -> None:
    """One InputError when `seq_len` is longer than the model accepts (before any work starts)."""
    if seq_len > cfg.max_position_embeddings:
        raise InputError(
            f"{where}: {key} {seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings}; "
            "use shorter sequences or a model with a larger max_position_embeddings"
        )


_SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "max_position_embeddings", "global_attn_every_n_layers", "local_attention")


def _read_rope(d: dict) -> dict:
    """The two thetas from transformers 5's `rope_parameters` or the Hub's older top-level keys."""
    out = {}
    for key in ("global_rope_theta", "local_rope_theta"):
        if d.get(key) is not None:
            out[key] = d[key]
    if d.get("rope_scaling") is not None:
        raise ValueError("rope_scaling is not supported (plain RoPE only)")
    rp = d.get("rope_parameters")
    if rp is None:
        return out
    if not isinstance(rp, dict):
        raise ValueError(f"rope_parameters must be an object, got {rp!r}")
    for kind, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
        p = rp.get(kind)
        if p is None:
            continue
        if not isinstance(p, dict) or p.get("rope_type", "default") != "default":
            raise ValueError(f"rope_parameters.{kind} {p!r} is not supported (plain RoPE, rope_type 'default', only)")
        if p.get("rope_theta") is not None:
            out[key] = p["rope_theta"]
    return out


def _every_n(layer_types, num_layers, hint) -> int:
    """The `global_attn_every_n_layers` that produces `layer_types`; refuses other patterns."""
    if not isinstance(layer_types, list) or len(layer_types) != num_layers:
        raise ValueError(f"layer_types must list one kind per layer ({num_layers}), got {layer_types!r}")
    candidates = ([hint] if type(hint) is int and hint > 0 else []) + list(range(1, max(num_layers, 1) + 1))
    for n in candidates:
        if layer_types == ["full_attention" if i % n == 0 else "sliding_attention" for i in range(num_layers)]:
            return n
    raise ValueError("layer_types must be global every N layers from layer 0 (full_attention, then N-1 "
                     f"sliding_attention, repeated); got {layer_types!r}")


# --------------------------------------------------------------------------------------------
# Positions and masks


def doc_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token within its document: (B, T) document ids (equal ids for a
    contiguous run of tokens) -> (B, T) positions restarting at 0 where the id changes."""
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # start of each token's run
    return idx - first


def attention_masks(T: int, local_attention: int, attention_mask=None, doc_ids=None, device=None):
    """Boolean SDPA masks (True = may attend) for global and local layers, or None where no
    restriction applies. Shapes broadcast to (B, H, T, T).

    Every query may always attend to itself: a padding query (or one whose whole window is
    padding) then gets a finite output instead of a NaN that would poison the gradient.
    The outputs at real positions are unchanged, since no real query sees a padding key."""
    allowed = None
    if doc_ids is not None:
        allowed = (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]  # (B, 1, T, T): block-diagonal
    if attention_mask is not None:
        eye = torch.eye(T, dtype=torch.bool, device=device)
        keys = attention_mask.bool()[:, None, None, :] | eye  # (B, 1, T, T)
        allowed = keys if allowed is None else allowed & keys
    half = local_attention // 2
    band = None
    if T - 1 > half:  # the window covers the whole row otherwise
        pos = torch.arange(T, device=device)
        band = (pos[:, None] - pos[None, :]).abs() <= half  # (T, T)
    if band is None:
        local = allowed
    else:
        local = band if allowed is None else allowed & band
    return allowed, local


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float):
    """cos and sin (B or 1, T, D) for `position_ids` (B or 1, T), in fp32 (as HF computes them)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=position_ids.device) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D): HF's half-split layout, not interleaved pairs
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys; computed in fp32 like HF, then cast back."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos[:, None] + rotated * sin[:, None]).to(x.dtype)  # cos (B, T, D) -> (B, 1, T, D)


# --------------------------------------------------------------------------------------------
# The encoder


class Embeddings(nn.Module):
    """Token embeddings, LayerNorm, dropout: no positions (RoPE adds them inside attention)."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)
        self.drop = nn.Dropout(cfg.embedding_dropout)

    def forward(self, input_ids):
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class Attention(nn.Module):
    def __init__(self, cfg: ModernBertConfig, is_global: bool):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.is_global = is_global
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)  # rows: Q, K, V
        self.Wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.attention_bias)
        self.dropout = cfg.attention_dropout
        self.out_drop = nn.Dropout(cfg.attention_dropout)

    def forward(self, x, cos, sin, attn_mask=None):
        B, T, C = x.shape
        # (B, T, 3C) -> (B, T, 3, H, D) -> (3, B, H, T, D)
        q, k, v = self.Wqkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)
        return self.out_drop(self.Wo(y))


class MLP(nn.Module):
    """GeGLU: Wi projects to (value, gate), each `intermediate_size` wide; out = Wo(act(value) * gate)."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.hidden_activation]
        self.drop = nn.Dropout(cfg.mlp_dropout)
        self.Wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):
        value, gate = self.Wi(x).chunk(2, dim=-1)  # (B, T, 2I) -> 2 x (B, T, I)
        return self.Wo(self.drop(self.act(value) * gate))


class Layer(nn.Module):
    """One pre-LN layer: x = x + attn(LN(x)); x = x + mlp(LN(x)). Layer 0 skips the first LN,
    since the embeddings end with one (HF: `nn.Identity`)."""

    def __init__(self, cfg: ModernBertConfig, index: int):
        super().__init__()
        norm = lambda: nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)  # noqa: E731
        self.attn_norm = nn.Identity() if index == 0 else norm()
        self.attn = Attention(cfg, is_global=index % cfg.global_attn_every_n_layers == 0)
        self.mlp_norm = norm()
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attn_mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nn.Module):
    """Embeddings + N pre-LN layers (global and local) + final LayerNorm."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)

    def forward(self, input_ids, attention_mask=None, *, doc_ids=None, position_ids=None):
        """Last hidden states (B, T, C). `attention_mask` (B, T) is 1 for real tokens, 0 for
        padding; `doc_ids` (B, T) marks the documents of a packed row (attention stays inside
        each, positions restart in each unless `position_ids` are given)."""
        cfg = self.config
        B, T = input_ids.shape
        if T > cfg.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {cfg.max_position_embeddings}")
        if position_ids is None:
            position_ids = doc_positions(doc_ids) if doc_ids is not None else torch.arange(T, device=input_ids.device)[None]
        mask_global, mask_local = attention_masks(T, cfg.local_attention, attention_mask, doc_ids, input_ids.device)
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        rope = {True: rope_cos_sin(position_ids, head_dim, cfg.global_rope_theta),
                False: rope_cos_sin(position_ids, head_dim, cfg.local_rope_theta)}
        x = self.embeddings(input_ids)
        for layer in self.layers:
            g = layer.attn.is_global
            x = layer(x, *rope[g], mask_global if g else mask_local)
        return self.final_norm(x)


class PredictionHead(nn.Module):
    """norm(act(dense(h))): shared by the MLM decoder and the classifier (HF `head`)."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.classifier_bias)
        self.act = ACTIVATIONS[cfg.classifier_activation]
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)

    def forward(self, h):
        return self.norm(self.act(self.dense(h)))


class TiedDecoder(nn.Module):
    """The vocabulary projection: the token-embedding matrix (passed in, so it is registered
    once) plus this module's own bias (HF `decoder.bias`)."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.decoder_bias else None

    def forward(self, h, weight):
        return F.linear(h, weight, self.bias)


class ModernBertForMaskedLM(nn.Module):
    """ModernBERT with the MLM head: HF `ModernBertForMaskedLM` (`model`, `head`, `decoder`)."""

    config_class = ModernBertConfig

    def __init__(self, cfg: ModernBertConfig, nsp: bool = False):
        super().__init__()
        if nsp:
            raise ValueError("ModernBERT has no next-sentence head; set `nsp` off for model.arch modernbert")
        self.config = cfg
        self.nsp = False
        self.model = ModernBertModel(cfg)
        self.head = PredictionHead(cfg)
        self.decoder = TiedDecoder(cfg)
        init_weights(self, cfg)

    def forward(self, input_ids, attention_mask=None, labels=None, *, doc_ids=None, position_ids=None,
                token_type_ids=None, loss_denominator=None, return_parts=False):
        """Returns (logits, loss). With `labels`, logits are (N, V) at the N positions where
        labels != -100 (row-major order) and loss is their cross-entropy: the mean, or the sum /
        `loss_denominator` when given. Without labels, logits are (B, T, V).
        `token_type_ids` is accepted and ignored (ModernBERT has no segment embeddings, as in HF),
        so callers can drive both architectures alike."""
        h = self.model(input_ids, attention_mask, doc_ids=doc_ids, position_ids=position_ids)  # (B, T, C)
        weight = self.model.embeddings.tok_embeddings.weight
        parts = {}
        if labels is None:
            logits, loss = self.decoder(self.head(h), weight), None
        else:
            sel = labels.reshape(-1) != IGNORE_INDEX
            h_masked = h.reshape(-1, h.shape[-1])[sel]  # (N, C): only the masked positions
            targets = labels.reshape(-1)[sel]
            logits = self.decoder(self.head(h_masked), weight)  # (N, V)
            loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
            denom = loss_denominator if loss_denominator is not None else targets.numel()
            loss = loss_sum / max(denom, 1)
            parts["mlm_loss"] = loss.detach()
        return (logits, loss, parts) if return_parts else (logits, loss)


class ModernBertForSequenceClassification(nn.Module):
    """ModernBERT + pooling (`[CLS]` or mean over real tokens) + head + dropout + classifier, as HF
    `ModernBertForSequenceClassification`. `num_labels == 1` is regression (MSE), otherwise
    cross-entropy, optionally class-weighted."""

    config_class = ModernBertConfig

    def __init__(self, cfg: ModernBertConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.config = cfg
        self.num_labels = num_labels
        self.model = ModernBertModel(cfg)
        self.head = PredictionHead(cfg)
        self.drop = nn.Dropout(cfg.classifier_dropout if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)  # HF: always with a bias
        init_weights(self, cfg)

    def forward(self, input_ids, attention_mask=None, labels=None, *, token_type_ids=None, class_weights=None):
        h = self.model(input_ids, attention_mask)  # (B, T, C)
        if self.config.classifier_pooling == "cls":
            pooled = h[:, 0]
        else:
            m = torch.ones(h.shape[:2], device=h.device) if attention_mask is None else attention_mask
            m = m.to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1)
        logits = self.classifier(self.drop(self.head(pooled)))  # (B, num_labels)
        loss = None if labels is None else sequence_loss(logits, labels, class_weights)
        return logits, loss


class ModernBertForTokenClassification(nn.Module):
    """ModernBERT + head + dropout + classifier on every token, as HF `ModernBertForTokenClassification`.
    Labels -100 are ignored by the loss."""

    config_class = ModernBertConfig

    def __init__(self, cfg: ModernBertConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.config = cfg
        self.num_labels = num_labels
        self.model = ModernBertModel(cfg)
        self.head = PredictionHead(cfg)
        self.drop = nn.Dropout(cfg.classifier_dropout if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)

    def forward(self, input_ids, attention_mask=None, labels=None, *, token_type_ids=None, class_weights=None):
        h = self.model(input_ids, attention_mask)  # (B, T, C)
        logits = self.classifier(self.drop(self.head(h)))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels, class_weights)
        return logits, loss


def init_weights(model: nn.Module, cfg: ModernBertConfig) -> None:
    """ModernBERT's init (HF `_init_weights`): truncated normal cut at `initializer_cutoff_factor`
    std; std `initializer_range` for embeddings and input projections, scaled down by
    sqrt(2 * layers) for the projections that write into the residual stream (and the head's
    dense), hidden_size^-0.5 for a classifier; zero biases, unit LayerNorm gains."""
    std_in = cfg.initializer_range
    std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)

    def trunc(weight, std):
        a = cfg.initializer_cutoff_factor * std
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-a, b=a)

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
        elif isinstance(m, Embeddings):
            trunc(m.tok_embeddings.weight, std_in)
        elif isinstance(m, (Attention, MLP)):
            trunc((m.Wqkv if isinstance(m, Attention) else m.Wi).weight, std_in)
            trunc(m.Wo.weight, std_out)
        elif isinstance(m, PredictionHead):
            trunc(m.dense.weight, std_out)
        elif isinstance(m, TiedDecoder) and m.bias is not None:
            nn.init.zeros_(m.bias)
    if isinstance(model, (ModernBertForSequenceClassification, ModernBertForTokenClassification)):
        trunc(model.classifier.weight, cfg.hidden_size ** -0.5)
        nn.init.zeros_(model.classifier.bias)


# --------------------------------------------------------------------------------------------
# HF key map. Our module names are HF's own (`model.layers.N.attn.Wqkv`, `head.dense`,
# `decoder.bias`, ...), so the map is the identity except for the tied decoder weight, which is
# not stored (HF re-ties it on load, as its own save_pretrained does) and is ignored on read.
# Explicit anyway, so that a renamed module breaks the round-trip test, not a user's directory.

_HF_KEY = re.compile(
    r"^(model\.embeddings\.(tok_embeddings\.weight|norm\.(weight|bias))"
    r"|model\.layers\.\d+\.(attn_norm|mlp_norm)\.(weight|bias)"
    r"|model\.layers\.\d+\.(attn\.Wqkv|attn\.Wo|mlp\.Wi|mlp\.Wo)\.(weight|bias)"
    r"|model\.final_norm\.(weight|bias)"
    r"|head\.(dense|norm)\.(weight|bias)"
    r"|decoder\.bias|classifier\.(weight|bias))$"
)
_IGNORED_HF_KEYS = re.compile(r"^decoder\.weight$|inv_freq$")


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under HF names (contiguous tensors, ready for safetensors)."""
    out = {}
    for key, t in model.state_dict().items():
        if not _HF_KEY.match(key):
            raise AssertionError(f"no HF name for parameter {key}; extend the key map")
        out[key] = t.contiguous()
    return out


def from_hf_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load HF-named weights into `model`. Parameters absent from `sd` keep their current
    (fresh) values. Returns (missing, unexpected) as HF key names. Raises ValueError on a
    shape mismatch."""
    template = to_hf_state_dict(model)
    # A bare ModernBertModel checkpoint has no `model.` prefix.
    if not any(k.startswith(ENCODER_PREFIX) for k in sd):
        sd = {(ENCODER_PREFIX + k if k.split(".")[0] in ("embeddings", "layers", "final_norm") else k): v
              for k, v in sd.items()}
    missing = [k for k in template if k not in sd]
    unexpected = [k for k in sd if k not in template and not _IGNORED_HF_KEYS.search(k)]
    own = {}
    for k, t in template.items():
        src = sd.get(k, t)
        if tuple(src.shape) != tuple(t.shape):
            raise ValueError(f"weight {k} has shape {tuple(src.shape)}, the model expects {tuple(t.shape)}")
        own[k] = src
    with torch.no_grad():
        model.load_state_dict(own, strict=True)
    return missing, unexpected
