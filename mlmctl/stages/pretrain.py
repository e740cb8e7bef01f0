"""pretrain: masked-language-model pretraining of a BERT encoder on a build-vocab directory.

Reads a `build-vocab` directory (memory-mapped token ids per shard, sentence and document
offsets, `tokenizer.json`) and writes a run directory:

    checkpoints/step-NNNNNN/   model dir (config.json, model.safetensors, tokenizer files)
                               + trainer_state.pt + checkpoint.json; the last `keep_last` kept
    final/                     the trained model, loadable by transformers as it stands
    metrics.jsonl              one JSON line per logged step / validation
    manifest.json              written last

Sequences are packed from the memmaps (`mlmctl.packing`), masked dynamically as a pure function
of (seed, epoch, sequence index) (`mlmctl.masking`), and fed to `BertForPreTraining`
(`mlmctl.model`) or, with `model.arch: modernbert`, `ModernBertForMaskedLM` (`mlmctl.modernbert`,
whose `documents` packing keeps attention inside each document through `doc_ids`) with AdamW, warm-up then decay, gradient clipping and accumulation. The same
command runs under `torchrun` (DDP; gloo on CPU, NCCL on GPU): `train.batch_size` is global, each
rank trains on its own slice of every global batch, only rank 0 writes.

Example:
    mlmctl pretrain -c configs/demo/pretrain.yaml
    torchrun --nproc_per_node 8 -m mlmctl pretrain -c pretrain.yaml          # one node, 8 GPUs
    mlmctl pretrain -c pretrain.yaml     # again after Ctrl-C, SIGTERM or a kill: continues exactly

Stopping: SIGINT (Ctrl-C) or SIGTERM writes a checkpoint at the next step boundary and exits with
130 / 143; rerunning the same command continues from the newest valid checkpoint (also after a
SIGKILL), and the final weights are byte-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check, config_to_dict
from mlmctl.errors import InputError, MlmctlError
from mlmctl.layout import FINAL, METRICS_FILE, SPECIAL_TOKENS, SPLITS, TOKENIZER_FILE, TRAIN, VALIDATION
from mlmctl.masking import Masking
from mlmctl.training import OptimSettings, check_optimiser

STAGE = "pretrain"
INPUT_STAGE = "build-vocab"
INPUT_FILES = ("model.init_from",)  # config-named files whose content is input (mlmctl.input_files)


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class ModelSection:
    """Model shape: an architecture and a preset, optionally with individual fields overridden."""

    arch: Literal["bert", "modernbert"] = "bert"
    """bert: the 2018 BERT (HF BertForMaskedLM); modernbert: ModernBERT (RoPE, GeGLU, pre-LN, alternating local/global attention; HF ModernBertForMaskedLM, arXiv 2412.13663)."""
    preset: Literal["tiny", "mini", "small", "medium", "base"] = "tiny"
    """Shape preset (layers, hidden, heads, FF). bert: tiny 2/128/2/512, mini 4/256/4/1024, small 4/512/8/2048, medium 8/512/8/2048, base 12/768/12/3072; modernbert (GeGLU FF 1.5 x hidden): tiny 2/128/2/192, mini 4/256/4/384, small 4/512/8/768, medium 8/512/8/768, base 22/768/12/1152."""
    num_hidden_layers: int | None = None
    """Override the preset's number of layers."""
    hidden_size: int | None = None
    """Override the preset's hidden size (a multiple of num_attention_heads)."""
    num_attention_heads: int | None = None
    """Override the preset's number of attention heads."""
    intermediate_size: int | None = None
    """Override the preset's feed-forward size."""
    hidden_act: Literal["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"] = "gelu"
    """Activation of the feed-forward layers and the MLM head (HF names; gelu is the exact erf GELU)."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings and residual branches (modernbert: embedding_dropout and mlp_dropout)."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities (modernbert: attention_dropout)."""
    max_position_embeddings: int = 512
    """The longest sequence the model can ever take (>= data.max_seq_len): bert's position table; modernbert's config.json limit (RoPE has no table)."""
    local_attention: int = 128
    """modernbert only: the sliding window of the local attention layers, in tokens (each sees half of it either side)."""
    global_attn_every_n_layers: int = 3
    """modernbert only: every this-many-th layer (from layer 0) attends globally, the others locally."""
    vocab_size: int | None = None
    """Vocabulary size; null takes it from the build-vocab directory (a set value must equal it)."""
    init_from: str | None = None
    """Start from the weights of this model directory (continued pretraining); its tokenizer must be the input's."""

    def __post_init__(self) -> None:
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
            v = getattr(self, key)
            check(v is None or v > 0, key, f"must be positive, got {v}")
        check(self.max_position_embeddings >= 1, "max_position_embeddings", "must be >= 1")
        check(self.local_attention >= 2, "local_attention", f"must be >= 2, got {self.local_attention}")
        check(self.global_attn_every_n_layers >= 1, "global_attn_every_n_layers", "must be >= 1")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, key)
            check(0.0 <= v < 1.0, key, f"must be in [0, 1), got {v}")


@dataclass
class DataSection:
    """How sequences are built from the token ids."""

    packing: Literal["full-sentences", "sentence-pair", "documents"] = "full-sentences"
    """full-sentences: consecutive sentences fill every sequence, [SEP] between documents, no padding (RoBERTa); sentence-pair: BERT's [CLS] A [SEP] B [SEP] instances (needed for NSP); documents (modernbert only): whole [CLS] doc [SEP] pieces packed in order, attention never crossing a document, positions restarting at each (the rest of a row is padding; its share is logged as packing_efficiency)."""
    max_seq_len: int = 128
    """Tokens per sequence, [CLS] and [SEP]s included."""
    short_seq_prob: float = 0.1
    """sentence-pair only: probability of a shorter random target length (BERT's short_seq_prob)."""
    nsp: bool = False
    """Also train next-sentence prediction (requires packing: sentence-pair)."""
    seed: int = 0
    """Seed of the data order, the sentence pairs and the masks (model init uses train.seed)."""

    def __post_init__(self) -> None:
        check(self.max_seq_len >= 1, "max_seq_len", f"must be >= 1, got {self.max_seq_len}")
        check(0.0 <= self.short_seq_prob <= 1.0, "short_seq_prob", f"must be in [0, 1], got {self.short_seq_prob}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@dataclass
class TrainSection:
    """Optimisation and the length of training."""

    batch_size: int = 32
    """Sequences per optimizer step, over all ranks and accumulation steps together."""
    micro_batch_size: int | None = None
    """Sequences per forward pass per rank; null = batch_size / world size (no accumulation)."""
    batch_warmup_steps: int = 0
    """Batch-size warm-up: grow the global batch linearly from `batch_warmup_start` to `batch_size` over this many optimizer steps (0 = off; ModernBERT, arXiv 2412.13663). Each batch is rounded down to a multiple of `batch_warmup_start`, so the schedule is the same on any number of processes."""
    batch_warmup_start: int | None = None
    """The first step's global batch with batch warm-up (null = batch_size / 6, ModernBERT's 768 of 4,608); under torchrun a multiple of the world size."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    max_tokens: int | None = None
    """Stop after about this many training tokens (padding excluded)."""
    epochs: int | None = None
    """Stop after this many passes over the training sequences (the smallest of the three limits wins)."""
    lr: float = 5e-4
    """Peak learning rate."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to lr."""
    decay: Literal["linear", "cosine", "constant", "wsd"] = "linear"
    """Learning-rate decay after warm-up, down to lr * min_lr_ratio at the last step; wsd (warmup-stable-decay): lr held, then decayed over the last `decay_fraction` of the steps."""
    decay_shape: Literal["1-sqrt", "linear"] = "1-sqrt"
    """wsd only: the shape of the final decay (1-sqrt: lr x (1 - sqrt(progress)), as ModernBERT)."""
    decay_fraction: float = 0.2
    """wsd only: the fraction of all steps spent decaying (in (0, 1]; at most the steps after warm-up)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr."""
    weight_decay: float = 0.01
    """AdamW weight decay (never on biases and LayerNorm)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.98
    """AdamW beta2 (0.98 as RoBERTa; BERT used 0.999)."""
    adam_eps: float = 1e-6
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping; the norm is logged either way)."""
    seed: int = 0
    """Seed of the model initialisation and dropout."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on CUDA, fp32 on CPU."""
    compile: bool = False
    """Compile the model with torch.compile (faster on GPU after a warm-up; slower to start)."""
    threads: int | None = None
    """CPU threads for torch (null = torch's default)."""

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.micro_batch_size is None or self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1 or null")
        check(self.batch_warmup_steps >= 0, "batch_warmup_steps", f"must be >= 0, got {self.batch_warmup_steps}")
        check(self.batch_warmup_start is None or 1 <= self.batch_warmup_start <= self.batch_size,
              "batch_warmup_start", f"must be in [1, train.batch_size = {self.batch_size}] or null, "
              f"got {self.batch_warmup_start}")
        check(self.max_steps is not None or self.max_tokens is not None or self.epochs is not None,
              "max_steps", "set at least one of `train.max_steps`, `train.max_tokens`, `train.epochs`")
        for key in ("max_steps", "max_tokens", "epochs"):
            v = getattr(self, key)
            check(v is None or v >= 1, key, f"must be >= 1 or null, got {v}")
        check_optimiser(self)
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        check(0.0 < self.decay_fraction <= 1.0, "decay_fraction", f"must be in (0, 1], got {self.decay_fraction}")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        for key in ("adam_beta1", "adam_beta2"):
            v = getattr(self, key)
            check(0.0 <= v < 1.0, key, f"must be in [0, 1), got {v}")
        check(self.adam_eps > 0, "adam_eps", f"must be > 0, got {self.adam_eps}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")

    def warmup_start(self) -> int | None:
        """The first step's batch when batch warm-up is on, else None."""
        if not self.batch_warmup_steps:
            return None
        return self.batch_warmup_start or max(1, self.batch_size // 6)

    def optim(self, total_steps: int) -> OptimSettings:
        return OptimSettings(lr=self.lr, total_steps=total_steps, warmup_steps=self.warmup_steps, decay=self.decay,
                             min_lr_ratio=self.min_lr_ratio, decay_shape=self.decay_shape,
                             decay_fraction=self.decay_fraction, weight_decay=self.weight_decay,
                             betas=(self.adam_beta1, self.adam_beta2), eps=self.adam_eps, grad_clip=self.grad_clip)


@dataclass
class ValidationSection:
    """Periodic masked-LM loss and perplexity on the validation split (seeded, identical masks every time)."""

    every: int = 200
    """Validate every this many steps, and at the end (0 = only at the end)."""
    max_sequences: int = 256
    """Validate on (at most) the first this many validation sequences."""
    batch_size: int = 32
    """Sequences per validation forward pass per rank."""

    def __post_init__(self) -> None:
        check(self.every >= 0, "every", "must be >= 0")
        check(self.max_sequences >= 0, "max_sequences", "must be >= 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class CheckpointSection:
    """When to write checkpoints."""

    save_every: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    keep_last: int = 3
    """Keep only this many most recent checkpoints (0 = keep all)."""

    def __post_init__(self) -> None:
        check(self.save_every >= 1, "save_every", "must be >= 1")
        check(self.keep_last >= 0, "keep_last", "must be >= 0")


@dataclass
class PretrainConfig:
    """Masked-LM pretraining of a BERT encoder on a build-vocab directory."""

    input: str = "data/vocab"
    """The build-vocab directory to train on."""
    output: str = "runs/pretrain"
    """The run directory (checkpoints/, final/, metrics.jsonl)."""
    tensorboard: bool = False
    """Also write TensorBoard event files to `OUTPUT/tensorboard/` (needs the `tensorboard` extra)."""
    model: ModelSection = field(default_factory=ModelSection)
    """Model shape."""
    data: DataSection = field(default_factory=DataSection)
    """Sequence building."""
    masking: Masking = field(default_factory=Masking)
    """Masking."""
    train: TrainSection = field(default_factory=TrainSection)
    """Optimisation."""
    validation: ValidationSection = field(default_factory=ValidationSection)
    """Validation."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoints."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps (progress lines off a terminal follow MLMCTL_LOG_EVERY seconds)."""

    def __post_init__(self) -> None:
        check(not self.data.nsp or self.data.packing == "sentence-pair", "data.nsp",
              "next-sentence prediction needs `data.packing: sentence-pair`")
        check(self.data.max_seq_len <= self.model.max_position_embeddings, "data.max_seq_len",
              f"{self.data.max_seq_len} exceeds `model.max_position_embeddings` ({self.model.max_position_embeddings})")
        check(self.data.max_seq_len >= (5 if self.data.packing == "sentence-pair" else 3), "data.max_seq_len",
              "is too small")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        modern = self.model.arch == "modernbert"
        check(not (modern and self.data.nsp), "data.nsp",
              "ModernBERT has no next-sentence prediction; set `data.nsp: false` with `model.arch: modernbert`")
        check(modern or self.data.packing != "documents", "data.packing",
              "`documents` needs `model.arch: modernbert` (BERT's attention cannot keep documents apart)")


CONFIG = PretrainConfig
# What `mlmctl pretrain --print-config` (no -c) fills in: the length of training has no default.
STARTER = {"train.max_steps": 10000}


# ----------------------------------------------------------------------------------------------
# The run, top to bottom


def run(ctx) -> dict:
    from mlmctl.training import run_trainer

    return run_trainer(ctx, Pretrainer, STAGE)


@dataclass
class TrainState:
    """Everything the loop carries from step to step (a checkpoint holds it)."""

    step: int = 0
    tokens: int = 0
    train_s: float = 0.0  # training time so far, see progress.tokens_per_s
    losses: list = field(default_factory=list)
    first_val: dict | None = None
    last_val: dict | None = None


class Pretrainer:
    """The pretraining run in named steps: set up (here), open_data, build_model, resume, fit
    (train_step, validate, save), finish. Every rank runs all of them; only rank 0 writes."""

    def __init__(self, ctx):
        from mlmctl.training import Process

        self.ctx, self.cfg, self.out = ctx, ctx.cfg, ctx.output_dir
        tc = self.cfg.train
        self.proc = Process.setup(STAGE, rank=ctx.rank, world=ctx.world_size, device=tc.device, threads=tc.threads,
                                  precision=tc.precision, key="train.device")
        self.state = TrainState()
        self._order_cache: dict = {}
        self.modern = self.cfg.model.arch == "modernbert"

    # -- data ----------------------------------------------------------------------------------
    def open_data(self) -> None:
        """The packed train/validation sequences, the masking, the batch geometry and the length."""
        from mlmctl.packing import Documents, FullSentences, SentencePairs

        cfg, ctx = self.cfg, self.ctx
        corpus = _open_corpus(ctx.input_dir, ctx.input_manifest)
        self.vocab_size, self.tokenizer_sha256 = corpus["vocab_size"], corpus["tokenizer_sha256"]
        self.special_ids = corpus["special_ids"]
        if cfg.model.vocab_size is not None and cfg.model.vocab_size != self.vocab_size:
            raise MlmctlError(
                f"pretrain: `model.vocab_size` is {cfg.model.vocab_size} but {ctx.input_dir} has a vocabulary of "
                f"{self.vocab_size}; set model.vocab_size to null (or {self.vocab_size}) or use the matching "
                f"build-vocab output")
        T = cfg.data.max_seq_len
        if cfg.data.packing in ("full-sentences", "documents"):
            packer = FullSentences if cfg.data.packing == "full-sentences" else Documents
            self.train_ds = packer(corpus[TRAIN], T)
            self.val_ds = packer(corpus[VALIDATION], T)
        else:
            self.train_ds = SentencePairs(corpus[TRAIN], T, cfg.data.short_seq_prob, cfg.data.seed)
            self.val_ds = SentencePairs(corpus[VALIDATION], T, cfg.data.short_seq_prob, cfg.data.seed + 1)
            if self.train_ds.num_docs < 2:
                raise InputError(f"pretrain: sentence-pair packing needs at least 2 non-empty training documents, "
                                 f"{ctx.input_dir} has {self.train_ds.num_docs}")
        if cfg.masking.whole_word and not self.train_ds.has_word_starts:
            raise InputError(f"pretrain: `masking.whole_word` needs word-start flags, which {ctx.input_dir} does "
                             f"not have")
        self._batch_geometry()

    def _batch_geometry(self) -> None:
        from mlmctl.packing import BatchSchedule

        tc, world, ds = self.cfg.train, self.proc.world, self.train_ds
        B = self.batch_size = tc.batch_size
        micro = self.micro = tc.micro_batch_size or max(1, B // world)
        if B % (world * micro):
            raise MlmctlError(f"pretrain: `train.batch_size` {B} is not a multiple of world size {world} x "
                              f"`train.micro_batch_size` {micro}; change one of them")
        if tc.batch_warmup_steps and tc.warmup_start() % world:
            raise MlmctlError(f"pretrain: `train.batch_warmup_start` {tc.warmup_start()} is not a multiple of the world "
                              f"size {world} (every warm-up batch is a multiple of it, split evenly over the ranks); "
                              f"set it to a multiple of {world}")
        self.accum = B // (world * micro)
        self.steps_per_epoch = len(ds) // B  # the last incomplete global batch of an epoch is skipped
        self.schedule = BatchSchedule(full=B, epoch_len=self.steps_per_epoch * B, start=tc.warmup_start(),
                                      warmup_steps=tc.batch_warmup_steps, granule=tc.warmup_start() or 1)
        if self.steps_per_epoch == 0:
            raise InputError(
                f"pretrain: {self.ctx.input_dir} gives {len(ds)} training sequences of {self.cfg.data.max_seq_len} "
                f"tokens, fewer than one batch (`train.batch_size` {B}); lower train.batch_size or "
                f"data.max_seq_len, or add data")
        avg_len = ds.num_tokens / max(1, len(ds))
        limits = []  # in steps; the schedule counts the smaller batches of a batch warm-up
        if tc.max_steps:
            limits.append(tc.max_steps)
        if tc.max_tokens:
            limits.append(self.schedule.steps_for(math.ceil(tc.max_tokens / avg_len)))
        if tc.epochs:
            limits.append(self.schedule.steps_for(tc.epochs * self.schedule.epoch_len))
        self.total_steps = max(1, min(limits))
        self.optim = tc.optim(self.total_steps)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self) -> None:
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        self.raw_model = build_model(cfg, self.vocab_size, self.special_ids)
        if cfg.model.init_from:
            _init_from(self.raw_model, cfg.model.init_from, self.tokenizer_sha256)
        self.raw_model.to(self.proc.device)
        self.optimizer = self.optim.make_optimizer(self.raw_model, self.proc.device)
        if self.modern:
            self.architectures = "ModernBertForMaskedLM"
        else:
            self.architectures = "BertForPreTraining" if cfg.data.nsp else "BertForMaskedLM"
        # What a checkpoint must agree on to be resumed: the model and everything that decides which
        # tokens each step sees (schedule and limits may change, e.g. to train longer). `arch` is
        # written for modernbert only, so that BERT checkpoints stay as they were.
        arch = {"arch": cfg.model.arch} if self.modern else {}
        self.run_meta = {
            "model": arch | asdict(self.raw_model.config) | {"nsp": cfg.data.nsp},
            "data": {**asdict(cfg.data), **{f"masking.{k}": v for k, v in asdict(cfg.masking).items()},
                     "batch_size": self.batch_size, "tokenizer_sha256": self.tokenizer_sha256,
                     "vocab_size": self.vocab_size, "train_sequences": len(self.train_ds)},
        }
        if cfg.train.batch_warmup_steps:  # decides each step's sequences; absent when off (older checkpoints)
            self.run_meta["data"] |= {"batch_warmup_steps": cfg.train.batch_warmup_steps,
                                      "batch_warmup_start": cfg.train.warmup_start()}

    def resume(self) -> None:
        """Continue from the newest valid checkpoint (or --resume-from), then wrap the model."""
        import torch

        from mlmctl import checkpoint as ckpts
        from mlmctl.model import num_parameters
        from mlmctl.model_dir import load_model_dir
        from mlmctl.training import MetricsWriter

        ctx, cfg, proc, st = self.ctx, self.cfg, self.proc, self.state
        ckpt = ckpts.find_resume(STAGE, self.out, ctx.opts, ctx.log)
        if ckpt is not None:
            with ckpts.resuming(ckpt, STAGE):
                meta = ckpts.read_meta(ckpt)
                _check_same_arch(meta, cfg.model.arch, ckpt)
                ckpts.check_compatible(meta, self.run_meta, ckpt, STAGE)
                loaded, _, _ = load_model_dir(ckpt, type(self.raw_model), nsp=cfg.data.nsp)
                self.raw_model.load_state_dict(loaded.state_dict())
                saved = ckpts.load_trainer_state(ckpt, STAGE)
                self.optimizer.load_state_dict(saved["optimizer"])
                st.step, st.tokens = ckpts.count(saved["step"], "step"), ckpts.count(saved["tokens"], "tokens")
                st.train_s = float(saved.get("train_s", 0.0))
                ckpts.restore_rng(saved.get("rng") or [], proc.rank, proc.world, proc.device,
                                  cfg.train.seed + 1000003 * st.step, ctx.log)
            ctx.log(f"resuming from {ckpt} at step {st.step}")
        if st.step >= self.total_steps:
            ctx.log(f"the checkpoint is at step {st.step}, which already reaches the limit of {self.total_steps} steps")
        # keep the metric lines up to the resumed step; a fresh start keeps none
        self.metrics = MetricsWriter(self.out / METRICS_FILE, ctx.started, enabled=ctx.is_main,
                                     resume_step=st.step if ckpt is not None else -1,
                                     tensorboard_config=config_to_dict(cfg) if cfg.tensorboard else None)
        self.model = torch.compile(self.raw_model) if cfg.train.compile else self.raw_model
        self.model = proc.wrap(self.model)
        ctx.log(f"{num_parameters(self.raw_model) / 1e6:.2f}M parameters, {len(self.train_ds)} training sequences "
                f"of <= {cfg.data.max_seq_len} tokens, {self.steps_per_epoch} steps/epoch, {self.total_steps} steps, "
                f"{proc.world} process(es), {proc.device.type}{', bf16' if proc.use_bf16 else ''}, "
                f"accumulation {self.accum}")

    # -- batches -------------------------------------------------------------------------------
    def make_batch(self, ds, indices, epochs, stream: int):
        """(numpy arrays of one masked micro-batch, masked-token count, token count). `epochs`: one
        epoch for all, or one per sequence (a step that straddles two epochs)."""
        import numpy as np

        from mlmctl.masking import mask_batch
        from mlmctl.packing import collate, pad_doc_ids

        cfg, spec = self.cfg, self.cfg.masking
        exs = [ds.get(int(i)) for i in indices]
        epochs = np.broadcast_to(np.asarray(epochs, dtype=np.int64), (len(exs),))
        inputs, labels = [], []
        for j, e in enumerate(exs):  # masks are per sequence anyway: (seed, its epoch, its index)
            (inp,), (lab,) = mask_batch([e.ids], [int(indices[j])], int(epochs[j]), cfg.data.seed, spec,
                                        self.vocab_size, [e.word_starts] if spec.whole_word else None, stream=stream)
            inputs.append(inp)
            labels.append(lab)
        tt = [e.token_types for e in exs] if cfg.data.packing == "sentence-pair" else None
        ids, lab, am, tts = collate(inputs, labels, tt)
        nsl = np.array([e.next_sentence_label for e in exs]) if cfg.data.nsp else None
        n_tokens = sum(len(e.ids) for e in exs)
        if self.modern:  # no segments, no NSP; documents kept apart where the packing knows them
            doc_ids = pad_doc_ids([e.doc_ids for e in exs], ids.shape[1]) if exs[0].doc_ids is not None else None
            return dict(input_ids=ids, labels=lab, attention_mask=am, doc_ids=doc_ids), int((lab != -100).sum()), \
                n_tokens
        return dict(input_ids=ids, labels=lab, attention_mask=am, token_type_ids=tts,
                    next_sentence_label=nsl), int((lab != -100).sum()), n_tokens

    def to_device(self, arrays: dict) -> dict:
        import torch

        return {k: None if a is None else torch.from_numpy(a).to(self.proc.device, non_blocking=True)
                for k, a in arrays.items()}

    def step_batches(self, at_step: int) -> list:
        """This rank's micro-batches of optimizer step `at_step`: a pure function of the step."""
        import numpy as np

        from mlmctl.masking import STREAM_TRAIN_MASK
        from mlmctl.packing import epoch_order, rank_slice

        micro, seed = self.micro, self.cfg.data.seed
        epochs, within = self.schedule.positions(at_step)
        for epoch in set(epochs.tolist()) - set(self._order_cache):
            if len(self._order_cache) >= 2:  # a step spans at most two epochs
                self._order_cache.pop(min(self._order_cache))
            self._order_cache[epoch] = epoch_order(len(self.train_ds), seed, epoch)
        indices = np.array([self._order_cache[e][i] for e, i in zip(epochs.tolist(), within.tolist())], dtype=np.int64)
        mine = rank_slice(indices, self.proc.rank, self.proc.world)
        my_epochs = rank_slice(epochs, self.proc.rank, self.proc.world)
        return [self.make_batch(self.train_ds, mine[j:j + micro], my_epochs[j:j + micro], STREAM_TRAIN_MASK)
                for j in range(0, len(mine), micro)]

    # -- one step, validation, checkpoints -----------------------------------------------------
    def train_step(self, micro_batches: list) -> tuple[float, float, int]:
        """One optimizer step on the micro-batches of `step_batches`: (loss, grad norm, tokens).

        The loss is normalised by the masked tokens of the whole global batch, so that the gradient
        is the same however the batch is split over ranks and accumulation steps."""
        from mlmctl.training import train_step

        proc, B, world = self.proc, self.schedule.size(self.state.step), self.proc.world
        n_masked, n_tokens = (sum(m[k] for m in micro_batches) for k in (1, 2))
        n_masked, n_tokens = proc.all_sum([n_masked, n_tokens])

        nsp = {} if self.modern else {"nsp_denominator": B / world}

        def loss_fn(model, arrays):
            # DDP averages gradients over ranks, hence the factor `world` in the denominators.
            return model(**self.to_device(arrays), loss_denominator=max(n_masked, 1) / world, **nsp)[1]

        loss, norm = train_step(self.model, self.optimizer, [m[0] for m in micro_batches], loss_fn,
                                lr=self.optim.lr_at(self.state.step), grad_clip=self.optim.grad_clip, proc=proc)
        return loss, norm, int(n_tokens)

    def validate(self) -> dict | None:
        """`val_loss` / `val_ppl` leak-free (every chosen token [MASK], like eval's `mlm_ppl`);
        `val_loss_801010` / `val_ppl_801010` with the training replacement (comparable with the
        training loss, but flattered by the tokens left unchanged); `val_acc` / `val_top5_acc`."""
        import numpy as np
        import torch

        n_val = min(len(self.val_ds), self.cfg.validation.max_sequences)
        if n_val == 0:
            return None
        mine = np.arange(n_val)[self.proc.rank::self.proc.world]
        sums = [0.0] * 5  # leak-free NLL, 80/10/10 NLL, top-1 hits, top-5 hits, masked tokens
        self.raw_model.eval()
        with torch.no_grad():
            for j in range(0, len(mine), self.cfg.validation.batch_size):
                for k, v in enumerate(self._validation_sums(mine[j:j + self.cfg.validation.batch_size])):
                    sums[k] += v
        self.raw_model.train()
        sums = self.proc.all_sum(sums)
        if sums[4] == 0:
            return None
        val_loss, val_loss_801010 = sums[0] / sums[4], sums[1] / sums[4]
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0)),
                "val_loss_801010": val_loss_801010, "val_ppl_801010": math.exp(min(val_loss_801010, 700.0)),
                "val_acc": sums[2] / sums[4], "val_top5_acc": sums[3] / sums[4]}

    def _validation_sums(self, indices) -> list[float]:
        import torch

        from mlmctl.layout import MASK_ID
        from mlmctl.masking import STREAM_VAL_MASK
        from mlmctl.mlm_scoring import position_scores

        arrays, n_masked, _ = self.make_batch(self.val_ds, indices, 0, STREAM_VAL_MASK)
        batch = self.to_device(arrays)
        batch.pop("next_sentence_label", None)
        labels = batch["labels"]
        leak_free_ids = torch.where(labels != -100, MASK_ID, batch["input_ids"])  # same positions
        with self.proc.autocast():
            _, loss = self.raw_model(**batch, loss_denominator=1)  # sum over masked tokens
            logits, _ = self.raw_model(**{**batch, "input_ids": leak_free_ids})  # (N, V) at masked positions
        nll, top1, top5 = position_scores(logits, labels[labels != -100])
        return [float(nll.sum()), float(loss), float(top1.sum()), float(top5.sum()), n_masked]

    def checkpoint_dir(self, step: int) -> Path:
        from mlmctl.layout import CHECKPOINTS, step_dir_name

        return self.out / CHECKPOINTS / step_dir_name(step)

    def save(self) -> None:
        """A checkpoint of the current step (a collective: every rank calls it)."""
        from mlmctl import checkpoint as ckpts

        st = self.state
        epoch, epoch_pos = divmod(self.schedule.offset(st.step), self.schedule.epoch_len)
        epoch_step = epoch_pos // self.batch_size  # informational; the step number alone resumes
        states = ckpts.gather_rng(self.proc.device, self.proc.world)
        if self.ctx.is_main:
            state = {"step": st.step, "tokens": st.tokens, "epoch": epoch, "epoch_step": epoch_step,
                     "optimizer": self.optimizer.state_dict(), "scheduler": {"step": st.step}, "rng": states,
                     "world_size": self.proc.world, "train_s": st.train_s}
            ckpts.save_checkpoint(self.out, st.step, self.raw_model, state, self.run_meta,
                                  tokenizer_dir=self.ctx.input_dir, architectures=self.architectures,
                                  keep_last=self.cfg.checkpoint.keep_last)
        self.proc.barrier()

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train to `total_steps`; validate, log and save on schedule; stop cleanly on a signal."""
        from concurrent.futures import ThreadPoolExecutor

        from mlmctl.checkpoint import StopSignals
        from mlmctl.progress import progress

        st, ctx = self.state, self.ctx
        self.model.train()
        if st.step == 0:
            st.first_val = self.validate()
            if st.first_val is not None:
                self.metrics.write({"step": 0, "tokens": 0, **st.first_val})
                ctx.log(f"step 0: val_loss {st.first_val['val_loss']:.4f}, val_ppl {st.first_val['val_ppl']:.1f}")
        # The next step's batches are built (read, packed, masked) in a thread while this step
        # computes; they depend only on the step number, so this changes nothing but the speed.
        prefetch = ThreadPoolExecutor(1, thread_name_prefix="mlmctl-batches")
        pending = prefetch.submit(self.step_batches, st.step) if st.step < self.total_steps else None
        stop = StopSignals()
        with stop, prefetch, progress(self.total_steps, STAGE, "steps", enabled=ctx.is_main,
                                      initial=st.step) as bar:
            while st.step < self.total_steps:
                t0 = time.perf_counter()
                micro_batches = pending.result()
                if st.step + 1 < self.total_steps:
                    pending = prefetch.submit(self.step_batches, st.step + 1)
                if self.proc.any(stop.requested):  # every rank stops at the same step boundary
                    self._stop(stop)
                loss, norm, n_tokens = self._guarded_step(micro_batches)
                st.step += 1
                st.tokens += n_tokens
                st.train_s += time.perf_counter() - t0  # training time only: validation and saves come after
                st.losses.append(loss)
                bar.update(1, loss=loss, tok_s=self._tokens_per_s())
                self._after_step(loss, norm, n_tokens)

    def _stop(self, stop) -> None:
        step = self.state.step
        if step and not self.checkpoint_dir(step).is_dir():
            self.save()
        raise stop.interrupted(STAGE, step, self.checkpoint_dir(step) if step else None)

    def _guarded_step(self, micro_batches) -> tuple[float, float, int]:
        from mlmctl.checkpoint import latest_valid
        from mlmctl.training import NonFiniteLoss

        try:
            return self.train_step(micro_batches)
        except NonFiniteLoss as e:
            raise MlmctlError(
                f"pretrain: the loss became {e.loss} (grad norm {e.grad_norm}) at step {self.state.step + 1}; "
                f"stopped. The last good checkpoint is {latest_valid(self.out) or 'none'}; lower train.lr or "
                f"raise train.warmup_steps, then continue with --resume-from") from None

    def _tokens_per_s(self) -> int:
        from mlmctl.progress import tokens_per_s

        return tokens_per_s(self.state.tokens, self.state.train_s)

    def _after_step(self, loss: float, norm: float, n_tokens: int) -> None:
        """The metrics row, the validation and the checkpoint that fall on this step."""
        cfg, st, last = self.cfg, self.state, self.state.step == self.total_steps
        row = None
        if st.step % cfg.log_every == 0 or last:
            row = {"step": st.step, "tokens": st.tokens, "loss": loss, "lr": self.optim.lr_at(st.step - 1),
                   "grad_norm": norm, "tokens_per_s": self._tokens_per_s(), "train_s": st.train_s}
            if self.cfg.data.packing == "documents":  # this step's real tokens / slots
                row["packing_efficiency"] = n_tokens / (self.schedule.size(st.step - 1) * cfg.data.max_seq_len)
            if cfg.train.batch_warmup_steps:
                row["batch_size"] = self.schedule.size(st.step - 1)
        if (cfg.validation.every and st.step % cfg.validation.every == 0) or last:
            st.last_val = self.validate()
            if st.last_val is not None:
                row = {**(row or {"step": st.step, "tokens": st.tokens}), **st.last_val}
                self.ctx.log(f"step {st.step}: val_loss {st.last_val['val_loss']:.4f}, "
                             f"val_ppl {st.last_val['val_ppl']:.1f}")
        if row is not None:
            self.metrics.write(row)
        if st.step % cfg.checkpoint.save_every == 0 or last:
            self.save()

    # -- the final model and the manifest ------------------------------------------------------
    def finish(self) -> dict:
        from mlmctl.model import num_parameters
        from mlmctl.model_dir import save_model_dir

        ctx, st, out = self.ctx, self.state, self.out
        files = []
        if ctx.is_main:
            final = save_model_dir(self.raw_model, out / FINAL, tokenizer_dir=ctx.input_dir,
                                   architectures=self.architectures)
            files = [ctx.describe(f"{FINAL}/{p.name}") for p in sorted(final.iterdir()) if p.is_file()]
            if (out / METRICS_FILE).exists():
                files.append(ctx.describe(METRICS_FILE))
        summary = {"steps": st.step, "tokens": st.tokens,
                   "parameters": f"{num_parameters(self.raw_model) / 1e6:.2f}M"}
        if st.losses:
            summary["final loss"] = f"{st.losses[-1]:.4f}"
            summary["tokens/s"] = self._tokens_per_s()
        if self.cfg.data.packing == "documents":
            summary["packing efficiency"] = f"{self.train_ds.efficiency:.3f}"
        if st.first_val:
            summary["val ppl (start)"] = f"{st.first_val['val_ppl']:.1f}"
        if st.last_val:
            summary["val loss"] = f"{st.last_val['val_loss']:.4f}"
            summary["val ppl"] = f"{st.last_val['val_ppl']:.1f}"
        extra = {"steps": st.step, "tokens": st.tokens, "vocab_size": self.vocab_size,
                 "tokens_per_s": self._tokens_per_s(), "train_s": st.train_s,
                 "tokenizer_sha256": self.tokenizer_sha256, "architectures": [self.architectures],
                 "final_loss": st.losses[-1] if st.losses else None, **(st.last_val or {})}
        if self.cfg.data.packing == "documents":
            extra["packing_efficiency"] = self.train_ds.efficiency
        ctx.finish([], files, extra)
        self.proc.close()
        summary["model"] = str(out / FINAL)
        return summary


# ----------------------------------------------------------------------------------------------
# Helpers


def build_model(cfg: PretrainConfig, vocab_size: int, special_ids: dict | None = None):
    """The model a pretrain config describes, freshly initialised (seed the RNG first). The one
    place that picks the architecture (`model.arch`). `special_ids` (token -> id) gives
    ModernBERT's pad/cls/sep ids; None takes mlmctl's fixed layout."""
    if cfg.model.arch == "modernbert":
        from mlmctl.modernbert import ModernBertForMaskedLM

        return ModernBertForMaskedLM(_modern_config(cfg.model, vocab_size, special_ids))
    from mlmctl.model import BertForPreTraining

    return BertForPreTraining(_model_config(cfg.model, vocab_size), nsp=cfg.data.nsp)


def _modern_config(m: ModelSection, vocab_size: int, special_ids: dict | None):
    from mlmctl.modernbert import ModernBertConfig, special_token_config

    ids = special_token_config(special_ids or {t: i for i, t in enumerate(SPECIAL_TOKENS)}, STAGE)
    over = {k: getattr(m, k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
            if getattr(m, k) is not None}
    try:
        return ModernBertConfig.from_preset(
            m.preset, vocab_size, hidden_activation=m.hidden_act, embedding_dropout=m.hidden_dropout_prob,
            mlp_dropout=m.hidden_dropout_prob, attention_dropout=m.attention_probs_dropout_prob,
            max_position_embeddings=m.max_position_embeddings, local_attention=m.local_attention,
            global_attn_every_n_layers=m.global_attn_every_n_layers, **ids, **over)
    except ValueError as e:
        raise MlmctlError(f"pretrain: `model`: {e}") from None


def _check_same_arch(meta: dict | None, arch: str, ckpt: Path) -> None:
    """A checkpoint of the other architecture: one line naming `model.arch` (the generic
    comparison would list a dozen unrelated shape keys first)."""
    saved = ((meta or {}).get("model") or {}).get("arch", "bert")
    if saved != arch:
        raise MlmctlError(f"pretrain: checkpoint {ckpt} holds a {saved} model but `model.arch` is {arch}; "
                          f"set model.arch: {saved} to continue it, or start over with --force")


def _model_config(m: ModelSection, vocab_size: int):
    from mlmctl.model import ModelConfig

    over = {k: getattr(m, k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
            if getattr(m, k) is not None}
    try:
        return ModelConfig.from_preset(
            m.preset, vocab_size, hidden_act=m.hidden_act, hidden_dropout_prob=m.hidden_dropout_prob,
            attention_probs_dropout_prob=m.attention_probs_dropout_prob,
            max_position_embeddings=m.max_position_embeddings, **over)
    except ValueError as e:
        raise MlmctlError(f"pretrain: `model`: {e}") from None


def _init_from(model, path: str, tokenizer_sha256: str) -> None:
    from mlmctl.model_dir import load_model_dir
    from mlmctl.shards import file_sha256

    src, src_cfg, info = load_model_dir(path, type(model), nsp=model.nsp)
    tok = Path(path) / TOKENIZER_FILE
    if tok.is_file() and file_sha256(tok) != tokenizer_sha256:
        raise MlmctlError(f"pretrain: `model.init_from` {path} was trained with a different tokenizer than the input's; "
                          f"use the build-vocab directory it came from")
    if asdict(src_cfg) != asdict(model.config):
        raise MlmctlError(f"pretrain: `model.init_from` {path} has a different shape or vocabulary than `model`; "
                          f"set model.preset and the overrides to match its config.json")
    model.load_state_dict(src.state_dict())


def _open_corpus(input_dir: Path, manifest) -> dict:
    """Train/validation CorpusParts, vocabulary size and tokenizer hash of a build-vocab directory."""
    from mlmctl.packing import CorpusPart
    from mlmctl.token_ids import open_vocab_dir

    # The runner has already verified the manifest and every file's sha256; sizes suffice here.
    vd = open_vocab_dir(input_dir, full_verify=False, reader=STAGE)
    expect = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    if any(vd.special_ids.get(k) != v for k, v in expect.items()):
        raise InputError(f"pretrain: {input_dir} has special token ids {vd.special_ids}, expected {expect}; "
                         f"rebuild it with `mlmctl build-vocab --force`")
    parts = {}
    for split in SPLITS:
        have = {s.split for s in vd.manifest.shards}
        if split not in have:
            if split == TRAIN:
                raise InputError(f"pretrain: {input_dir} has no training data (split 'train' is empty)")
            parts[split] = []
            continue
        ts = vd.split(split)
        parts[split] = [CorpusPart(_Slicer(ts.tokens), ts.sent_offsets, ts.doc_sent_offsets, _Slicer(ts.word_starts))]
    return {TRAIN: parts[TRAIN], VALIDATION: parts[VALIDATION], "vocab_size": vd.vocab_size,
            "tokenizer_sha256": vd.tokenizer_sha256, "special_ids": dict(vd.special_ids)}


class _Slicer:
    """Presents `fn(start, stop)` as an array that can be sliced, `x[a:b]` -> fn(a, b): the one
    operation packing.CorpusPart asks of its `ids` and `word_starts`, here served by
    token_ids.TokenSplit's `tokens(a, b)` / `word_starts(a, b)` across a split's shards."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, sl: slice):
        return self.fn(sl.start, sl.stop)
