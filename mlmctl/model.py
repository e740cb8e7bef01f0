"""A BERT encoder with masked-LM, next-sentence and classification heads, in one file.

Notable features:
- `ModelConfig` uses HF `BertConfig` field names, so `to_hf_config()` is most of `config.json`
  and every model directory mlmctl writes loads with `transformers.AutoModelForMaskedLM`.
- Post-LN layers exactly as in the original BERT (and HF), with a fused QKV projection and
  `F.scaled_dot_product_attention`. With no attention mask (packed sequences have no padding)
  SDPA gets `attn_mask=None` and may take its fastest kernel.
- The MLM loss is computed only at masked positions: the hidden states of those positions are
  gathered BEFORE the head's transform and the vocabulary projection (as cramming's
  `_forward_sparse`), so ~85% of the most expensive matmul and of the softmax is never done.
- The decoder is tied to the word embeddings and has its own bias (`cls.predictions.bias`).
- `loss_denominator` lets the trainer normalise by the number of masked tokens in the whole
  global batch (all micro-batches, all ranks), so gradient accumulation and DDP give the same
  gradient as one big batch.
- Weights: truncated normal (std `initializer_range`, cut at 2 std), zero biases, unit LayerNorm.
- HF compatibility is one explicit key map at the bottom (`to_hf_state_dict`/`from_hf_state_dict`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (num_hidden_layers, hidden_size, num_attention_heads, intermediate_size)
PRESETS = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}

IGNORE_INDEX = -100  # label value meaning "no prediction here" (PyTorch and HF convention)


@dataclass
class ModelConfig:
    """Shape of a BERT model; field names and meanings are those of HF `BertConfig`."""

    vocab_size: int
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 512
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        # config.json may come from anywhere: check every value before anything is allocated.
        # Messages name the key as config.json spells it.
        for key in _SIZE_KEYS:
            v = getattr(self, key)
            if type(v) is not int or v < 1:
                raise ValueError(f"`{key}` must be a positive integer, got {v!r}")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, key)
            if type(v) not in (int, float) or not 0.0 <= v < 1.0:
                raise ValueError(f"`{key}` must be a number in [0, 1), got {v!r}")
        for key in ("initializer_range", "layer_norm_eps"):
            v = getattr(self, key)
            if type(v) not in (int, float) or not 0.0 < v < 1.0:
                raise ValueError(f"`{key}` must be a number in (0, 1), got {v!r}")
        if type(self.pad_token_id) is not int or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"`pad_token_id` must be an id in [0, vocab_size), got {self.pad_token_id!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` {self.hidden_size} is not a multiple of `num_attention_heads` {self.num_attention_heads}"
            )
        check_allocatable(self)

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides) -> "ModelConfig":
        layers, hidden, heads, inter = PRESETS[name]
        shape = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                     intermediate_size=inter)
        return cls(vocab_size=vocab_size, **{**shape, **overrides})

    def to_hf_config(self, architectures: list[str] | str, **extra) -> dict:
        """The `config.json` dict HF `BertConfig` reads; `extra` adds keys (e.g. `id2label`)."""
        if isinstance(architectures, str):
            architectures = [architectures]
        d = {"architectures": list(architectures), "model_type": "bert", **asdict(self),
             "position_embedding_type": "absolute", "tie_word_embeddings": True,
             "classifier_dropout": None, "torch_dtype": "float32"}
        d.update(extra)
        return d

    def parameter_count(self) -> int:
        """Parameters of the encoder with MLM and NSP heads (the decoder is tied), from the
        shape alone: computed before anything is allocated."""
        V, H, L, F = self.vocab_size, self.hidden_size, self.num_hidden_layers, self.intermediate_size
        emb = (V + self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
        layer = 4 * H * H + 4 * H + 2 * H * F + F + H + 4 * H
        heads = H * H + H + 2 * H + V + H * H + H + 2 * H + 2
        return emb + L * layer + heads

    @classmethod
    def from_hf_config(cls, d: dict) -> "ModelConfig":
        """Read a BERT `config.json` dict; refuses what this model cannot represent."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object of settings, got {type(d).__name__}")
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"model_type is {d.get('model_type')!r}; only 'bert' models are supported")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only position_embedding_type 'absolute' is supported")
        if "vocab_size" not in d:
            raise ValueError("config.json has no vocab_size")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None}
        return cls(**kw)


_SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size")
# Never build a model whose fp32 weights alone would take more than this share of the memory
# available now (training needs ~4x more for gradients and AdamW state on top).
MAX_MEMORY_SHARE = 0.5


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else physical memory; None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_allocatable(cfg: "ModelConfig") -> None:
    """Refuse a shape whose weights would not fit (a crafted config.json must not make
    mlmctl try to allocate terabytes): one ValueError that gives the size."""
    need = 4 * cfg.parameter_count()
    avail = available_memory_bytes()
    if avail is not None and need > MAX_MEMORY_SHARE * avail:
        raise ValueError(
            f"the model would have {cfg.parameter_count():,} parameters ({need / 2**30:,.1f} GiB of fp32 weights), "
            f"more than {MAX_MEMORY_SHARE:.0%} of the {avail / 2**30:,.1f} GiB of memory available; "
            "check vocab_size, hidden_size, num_hidden_layers and intermediate_size"
        )


# HF "gelu" is the exact erf GELU; "gelu_new"/"gelu_pytorch_tanh" are the tanh approximation.
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


# --------------------------------------------------------------------------------------------
# The encoder


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        pos = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)  # (B, T, C) + (T, C)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # all segment A: skip the gather
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # query, key, value stacked on dim 0
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attn_dropout = cfg.attention_probs_dropout_prob
        self.resid_dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, attn_mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)
        return self.resid_dropout(self.proj(y))


class Layer(nn.Module):
    """One post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, attn_mask=None):
        x = self.attn_norm(x + self.attn(x, attn_mask))
        x = self.ffn_norm(x + self.dropout(self.ffn_down(self.act(self.ffn_up(x)))))
        return x


class Pooler(nn.Module):
    """tanh(dense(hidden state of [CLS])): the sentence vector the NSP and classifier heads use."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(nn.Module):
    """Embeddings + N post-LN layers (+ pooler)."""

    def __init__(self, cfg: ModelConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = Pooler(cfg) if add_pooling_layer else None
        self.apply(lambda m: _init_weights(m, cfg.initializer_range))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Returns the last hidden states (B, T, C); `attention_mask` is 1 for real tokens, 0 for padding."""
        T = input_ids.shape[1]
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.config.max_position_embeddings}")
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (B, T) -> (B, 1, 1, T): key mask, True = attend
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class MLMHead(nn.Module):
    """transform (dense + act + LN), then the decoder tied to the word embeddings, plus a bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.transform.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h, word_embeddings: torch.Tensor):
        # The tied matrix is passed in rather than stored, so it is registered once (in bert.embeddings).
        h = self.transform.norm(self.act(self.transform.dense(h)))
        return F.linear(h, word_embeddings, self.bias)


class BertForPreTraining(nn.Module):
    """BERT with the MLM head and, when `nsp=True`, the next-sentence head (`cls.seq_relationship`)."""

    def __init__(self, cfg: ModelConfig, nsp: bool = False):
        super().__init__()
        self.config = cfg
        self.nsp = nsp
        # The pooler is trained only by NSP; without it, it would stay random and, under DDP, be
        # a parameter without gradient. Fine-tuning then starts it fresh (HF BertForMaskedLM too).
        self.bert = BertModel(cfg, add_pooling_layer=nsp)
        self.cls = nn.Module()
        self.cls.predictions = MLMHead(cfg)
        if nsp:
            self.cls.seq_relationship = nn.Linear(cfg.hidden_size, 2)
        self.cls.apply(lambda m: _init_weights(m, cfg.initializer_range))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, loss_denominator=None, nsp_denominator=None):
        """Returns (logits, loss). With `labels`, logits are (N, V) at the N positions where
        labels != -100 (in row-major order) and loss is the MLM cross-entropy over them: their
        mean, or their sum / `loss_denominator` when given. Without labels, logits are (B, T, V).
        With `next_sentence_label` the NSP loss is added: the batch mean, or the batch sum /
        `nsp_denominator` when given."""
        h = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if labels is None:
            logits, loss = self.cls.predictions(h, self.bert.embeddings.word_embeddings.weight), None
        else:
            sel = labels.reshape(-1) != IGNORE_INDEX
            h_masked = h.reshape(-1, h.shape[-1])[sel]  # (N, C): only the masked positions
            targets = labels.reshape(-1)[sel]
            logits = self.cls.predictions(h_masked, self.bert.embeddings.word_embeddings.weight)  # (N, V)
            loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
            denom = loss_denominator if loss_denominator is not None else targets.numel()
            loss = loss_sum / max(denom, 1)
        if next_sentence_label is not None:
            if not self.nsp:
                raise ValueError("next_sentence_label given but the model was built with nsp=False")
            nsp_logits = self.cls.seq_relationship(self.bert.pooler(h))  # (B, 2)
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label, reduction="sum")
            nsp_loss = nsp_loss / (nsp_denominator if nsp_denominator is not None else next_sentence_label.numel())
            loss = nsp_loss if loss is None else loss + nsp_loss
        return logits, loss


class _BertWithClassifier(nn.Module):
    """BERT + dropout + a linear classifier (HF names `bert`, `dropout`, `classifier`); the subclass
    says what the classifier reads and which loss applies."""

    pooled: bool  # whether the encoder carries the pooler ([CLS] -> dense -> tanh)

    def __init__(self, cfg: ModelConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.config = cfg
        self.num_labels = num_labels
        self.bert = BertModel(cfg, add_pooling_layer=self.pooled)
        p = cfg.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        _init_weights(self.classifier, cfg.initializer_range)


class BertForSequenceClassification(_BertWithClassifier):
    """The classifier on the pooled [CLS] vector. `num_labels == 1` is regression (MSE), otherwise
    cross-entropy, optionally class-weighted."""

    pooled = True

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, class_weights=None):
        h = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(self.bert.pooler(h)))  # (B, num_labels)
        loss = None if labels is None else sequence_loss(logits, labels, class_weights)
        return logits, loss


class BertForTokenClassification(_BertWithClassifier):
    """The classifier on every token (HF `BertForTokenClassification`: no pooler). Labels -100
    (sub-words after a word's first, special tokens, padding) are ignored by the loss."""

    pooled = False

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, class_weights=None):
        h = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(h))  # (B, T, num_labels)
        loss = None if labels is None else token_loss(logits, labels, class_weights)
        return logits, loss


def sequence_loss(logits, labels, class_weights=None):
    """One output: regression (MSE, as HF's `problem_type: regression`); else cross-entropy,
    optionally class-weighted. Shared by both architectures' sequence classifiers."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    if class_weights is not None and not torch.is_tensor(class_weights):
        class_weights = torch.tensor(class_weights, dtype=torch.float32, device=logits.device)
    return F.cross_entropy(logits.float(), labels, weight=class_weights)


def token_loss(logits, labels, class_weights=None):
    """Cross-entropy over every token whose label is not IGNORE_INDEX (-100: sub-words after a
    word's first, special tokens, padding). Shared by both architectures' token classifiers."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           weight=class_weights, ignore_index=IGNORE_INDEX)


def _init_weights(module: nn.Module, std: float) -> None:
    # BERT's init: truncated normal for every matrix, zeros for biases, ones for LayerNorm gains.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# HF key map. Our names are short; HF's are those of `transformers.BertForPreTraining` /
# `BertForMaskedLM` / `BertForSequenceClassification`. The tied decoder weight is not stored
# (HF re-ties it on load, as its own save_pretrained does).

_RENAMES = [  # (our regex, HF replacement); applied to every key that is not the fused qkv
    (r"^bert\.embeddings\.norm\.", "bert.embeddings.LayerNorm."),
    (r"^bert\.layers\.(\d+)\.attn\.proj\.", r"bert.encoder.layer.\1.attention.output.dense."),
    (r"^bert\.layers\.(\d+)\.attn_norm\.", r"bert.encoder.layer.\1.attention.output.LayerNorm."),
    (r"^bert\.layers\.(\d+)\.ffn_up\.", r"bert.encoder.layer.\1.intermediate.dense."),
    (r"^bert\.layers\.(\d+)\.ffn_down\.", r"bert.encoder.layer.\1.output.dense."),
    (r"^bert\.layers\.(\d+)\.ffn_norm\.", r"bert.encoder.layer.\1.output.LayerNorm."),
    (r"^cls\.predictions\.transform\.norm\.", "cls.predictions.transform.LayerNorm."),
]
_QKV = re.compile(r"^bert\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")


def _hf_name(key: str) -> str:
    for pat, rep in _RENAMES:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return key


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under HF names (contiguous tensors, ready for safetensors)."""
    out = {}
    for key, t in model.state_dict().items():
        m = _QKV.match(key)
        if m:
            layer, kind = m.groups()
            for name, part in zip(("query", "key", "value"), t.chunk(3, dim=0)):
                out[f"bert.encoder.layer.{layer}.attention.self.{name}.{kind}"] = part.contiguous()
        else:
            out[_hf_name(key)] = t.contiguous()
    return out


_IGNORED_HF_KEYS = re.compile(
    r"(position_ids|token_type_ids)$|^cls\.predictions\.decoder\.(weight|bias)$"
)


def _normalise_hf_keys(sd: dict, want_bert_prefix: bool) -> dict:
    """Accept the spellings found in the wild: TF-era `gamma`/`beta`, and BertModel checkpoints
    saved without the `bert.` prefix."""
    out = {}
    has_prefix = any(k.startswith("bert.") for k in sd)
    for k, v in sd.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        if want_bert_prefix and not has_prefix and k.split(".")[0] in ("embeddings", "encoder", "pooler"):
            k = "bert." + k
        out[k] = v
    return out


def from_hf_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load HF-named weights into `model`. Parameters absent from `sd` keep their current
    (fresh) values. Returns (missing, unexpected) as HF key names. Raises ValueError on a
    shape mismatch."""
    template = to_hf_state_dict(model)
    sd = _normalise_hf_keys(sd, want_bert_prefix=any(k.startswith("bert.") for k in template))
    # An old checkpoint may carry the MLM bias only as the decoder's bias.
    if "cls.predictions.bias" in template and "cls.predictions.bias" not in sd and "cls.predictions.decoder.bias" in sd:
        sd["cls.predictions.bias"] = sd["cls.predictions.decoder.bias"]
    missing = [k for k in template if k not in sd]
    unexpected = [k for k in sd if k not in template and not _IGNORED_HF_KEYS.search(k)]
    merged = {}
    for k, t in template.items():
        src = sd.get(k, t)
        if tuple(src.shape) != tuple(t.shape):
            raise ValueError(f"weight {k} has shape {tuple(src.shape)}, the model expects {tuple(t.shape)}")
        merged[k] = src
    own = {}
    for key, t in model.state_dict().items():
        m = _QKV.match(key)
        if m:
            layer, kind = m.groups()
            own[key] = torch.cat([merged[f"bert.encoder.layer.{layer}.attention.self.{n}.{kind}"]
                                  for n in ("query", "key", "value")], dim=0)
        else:
            own[key] = merged[_hf_name(key)]
    with torch.no_grad():
        model.load_state_dict(own, strict=True)
    return missing, unexpected
