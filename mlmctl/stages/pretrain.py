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
(`mlmctl.model`) with AdamW, warm-up then decay, gradient clipping and accumulation. The same
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

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check
from mlmctl.errors import InputError, MlmctlError

STAGE = "pretrain"
INPUT_STAGE = "build-vocab"
METRICS = "metrics.jsonl"
FINAL = "final"


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class ModelSection:
    """Model shape: a preset, optionally with individual fields overridden."""

    preset: Literal["tiny", "mini", "small", "medium", "base"] = "tiny"
    """Shape preset (layers, hidden, heads, FF): tiny 2/128/2/512, mini 4/256/4/1024, small 4/512/8/2048, medium 8/512/8/2048, base 12/768/12/3072."""
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
    """Dropout on embeddings and residual branches."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities."""
    max_position_embeddings: int = 512
    """Size of the position table: the longest sequence the model can ever take (>= data.max_seq_len)."""
    vocab_size: int | None = None
    """Vocabulary size; null takes it from the build-vocab directory (a set value must equal it)."""
    init_from: str | None = None
    """Start from the weights of this model directory (continued pretraining); its tokenizer must be the input's."""

    def __post_init__(self) -> None:
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
            v = getattr(self, key)
            check(v is None or v > 0, key, f"must be positive, got {v}")
        check(self.max_position_embeddings >= 1, "max_position_embeddings", "must be >= 1")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, key)
            check(0.0 <= v < 1.0, key, f"must be in [0, 1), got {v}")


@dataclass
class DataSection:
    """How sequences are built from the token ids."""

    packing: Literal["full-sentences", "sentence-pair"] = "full-sentences"
    """full-sentences: consecutive sentences fill every sequence, [SEP] between documents, no padding (RoBERTa); sentence-pair: BERT's [CLS] A [SEP] B [SEP] instances (needed for NSP)."""
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
class MaskingSection:
    """Dynamic masking (new masks every epoch, reproducible from the seed)."""

    mask_prob: float = 0.15
    """Fraction of the non-special tokens of a sequence chosen for prediction."""
    mask_token_prob: float = 0.8
    """Of the chosen tokens, the fraction replaced by [MASK]."""
    random_token_prob: float = 0.1
    """Of the chosen tokens, the fraction replaced by a random token (the rest stay unchanged)."""
    whole_word: bool = False
    """Choose whole words (all sub-word pieces of a word together)."""
    max_predictions: int | None = None
    """Upper bound on chosen tokens per sequence (BERT's max_predictions_per_seq); null = no bound."""

    def __post_init__(self) -> None:
        check(0.0 < self.mask_prob < 1.0, "mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        check(0.0 <= self.mask_token_prob <= 1.0, "mask_token_prob", "must be in [0, 1]")
        check(0.0 <= self.random_token_prob <= 1.0 - self.mask_token_prob, "random_token_prob",
              f"must be in [0, 1 - mask_token_prob] = [0, {1.0 - self.mask_token_prob:g}]")
        check(self.max_predictions is None or self.max_predictions >= 1, "max_predictions", "must be >= 1 or null")


@dataclass
class TrainSection:
    """Optimisation and the length of training."""

    batch_size: int = 32
    """Sequences per optimizer step, over all ranks and accumulation steps together."""
    micro_batch_size: int | None = None
    """Sequences per forward pass per rank; null = batch_size / world size (no accumulation)."""
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
    decay: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warm-up, down to lr * min_lr_ratio at the last step."""
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
        check(self.max_steps is not None or self.max_tokens is not None or self.epochs is not None,
              "max_steps", "set at least one of `train.max_steps`, `train.max_tokens`, `train.epochs`")
        for key in ("max_steps", "max_tokens", "epochs"):
            v = getattr(self, key)
            check(v is None or v >= 1, key, f"must be >= 1 or null, got {v}")
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for key in ("adam_beta1", "adam_beta2"):
            v = getattr(self, key)
            check(0.0 <= v < 1.0, key, f"must be in [0, 1), got {v}")
        check(self.adam_eps > 0, "adam_eps", f"must be > 0, got {self.adam_eps}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


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
    model: ModelSection = field(default_factory=ModelSection)
    """Model shape."""
    data: DataSection = field(default_factory=DataSection)
    """Sequence building."""
    masking: MaskingSection = field(default_factory=MaskingSection)
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


CONFIG = PretrainConfig
# What `mlmctl pretrain --print-config` (no -c) fills in: the length of training has no default.
STARTER = {"train.max_steps": 10000}


# ----------------------------------------------------------------------------------------------
# The run, top to bottom


def run(ctx) -> dict:
    import numpy as np
    import torch
    import torch.distributed as dist

    from mlmctl import checkpoint as ckpts
    from mlmctl.devices import pick_device
    from mlmctl.masking import MASK_ID, STREAM_TRAIN_MASK, STREAM_VAL_MASK, MaskSpec, mask_batch
    from mlmctl.model import BertForPreTraining, num_parameters
    from mlmctl.optim import lr_at, make_adamw, set_lr
    from mlmctl.packing import FullSentences, SentencePairs, collate, epoch_order, rank_slice
    from mlmctl.progress import progress, timed_row, tokens_per_s

    cfg: PretrainConfig = ctx.cfg
    out: Path = ctx.output_dir
    tc = cfg.train

    # -- processes and device ------------------------------------------------------------------
    rank, world = ctx.rank, ctx.world_size
    device = pick_device(tc.device, "pretrain", "train.device")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    if use_bf16 and device.type != "cuda":
        raise MlmctlError("pretrain: `train.precision: bf16` needs a CUDA device; use fp32 (or auto) on CPU")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else _nullcontext())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # -- data ----------------------------------------------------------------------------------
    corpus = _open_corpus(ctx.input_dir, ctx.input_manifest)
    vocab_size = corpus["vocab_size"]
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != vocab_size:
        raise MlmctlError(
            f"pretrain: `model.vocab_size` is {cfg.model.vocab_size} but {ctx.input_dir} has a vocabulary of "
            f"{vocab_size}; set model.vocab_size to null (or {vocab_size}) or use the matching build-vocab output"
        )
    T = cfg.data.max_seq_len
    if cfg.data.packing == "full-sentences":
        train_ds = FullSentences(corpus["train"], T)
        val_ds = FullSentences(corpus["validation"], T)
    else:
        train_ds = SentencePairs(corpus["train"], T, cfg.data.short_seq_prob, cfg.data.seed)
        val_ds = SentencePairs(corpus["validation"], T, cfg.data.short_seq_prob, cfg.data.seed + 1)
        if train_ds.num_docs < 2:
            raise InputError(f"pretrain: sentence-pair packing needs at least 2 non-empty training documents, "
                             f"{ctx.input_dir} has {train_ds.num_docs}")
    word_starts_ok = train_ds.has_word_starts
    if cfg.masking.whole_word and not word_starts_ok:
        raise InputError(f"pretrain: `masking.whole_word` needs word-start flags, which {ctx.input_dir} does not have")
    spec = MaskSpec(vocab_size=vocab_size, mask_prob=cfg.masking.mask_prob,
                    mask_token_prob=cfg.masking.mask_token_prob, random_token_prob=cfg.masking.random_token_prob,
                    max_predictions=cfg.masking.max_predictions, whole_word=cfg.masking.whole_word)
    B = tc.batch_size
    micro = tc.micro_batch_size or max(1, B // world)
    if B % (world * micro):
        raise MlmctlError(
            f"pretrain: `train.batch_size` {B} is not a multiple of world size {world} x "
            f"`train.micro_batch_size` {micro}; change one of them"
        )
    accum = B // (world * micro)
    steps_per_epoch = len(train_ds) // B  # the last incomplete global batch of an epoch is skipped
    if steps_per_epoch == 0:
        raise InputError(
            f"pretrain: {ctx.input_dir} gives {len(train_ds)} training sequences of {T} tokens, fewer than one "
            f"batch (`train.batch_size` {B}); lower train.batch_size or data.max_seq_len, or add data"
        )
    avg_len = train_ds.num_tokens / max(1, len(train_ds))
    limits = []
    if tc.max_steps:
        limits.append(tc.max_steps)
    if tc.max_tokens:
        limits.append(math.ceil(tc.max_tokens / (B * avg_len)))
    if tc.epochs:
        limits.append(tc.epochs * steps_per_epoch)
    total_steps = max(1, min(limits))

    # -- model ---------------------------------------------------------------------------------
    torch.manual_seed(tc.seed)
    mcfg = _model_config(cfg.model, vocab_size)
    model = BertForPreTraining(mcfg, nsp=cfg.data.nsp)
    if cfg.model.init_from:
        _init_from(model, cfg.model.init_from, corpus["tokenizer_sha256"])
    model.to(device)
    optimizer = make_adamw(model, tc.lr, tc.weight_decay, (tc.adam_beta1, tc.adam_beta2), tc.adam_eps, device.type)
    architectures = "BertForPreTraining" if cfg.data.nsp else "BertForMaskedLM"
    # What a checkpoint must agree on to be resumed: the model and everything that decides which
    # tokens each step sees (schedule and limits may change, e.g. to train longer).
    run_meta = {
        "model": asdict(mcfg) | {"nsp": cfg.data.nsp},
        "data": {**asdict(cfg.data), **{f"masking.{k}": v for k, v in asdict(cfg.masking).items()},
                 "batch_size": B, "tokenizer_sha256": corpus["tokenizer_sha256"], "vocab_size": vocab_size,
                 "train_sequences": len(train_ds)},
    }

    # -- resume --------------------------------------------------------------------------------
    step, tokens_seen, train_s = 0, 0, 0.0  # train_s: training time so far, see progress.tokens_per_s
    resume_ckpt = ckpts.find_resume(STAGE, out, ctx.opts, ctx.log)
    if resume_ckpt is not None:
        meta = ckpts.read_meta(resume_ckpt)
        ckpts.check_compatible(meta, run_meta, resume_ckpt, STAGE)
        from mlmctl.model_dir import load_model_dir

        loaded, _, _ = load_model_dir(resume_ckpt, BertForPreTraining, nsp=cfg.data.nsp)
        model.load_state_dict(loaded.state_dict())
        state = ckpts.load_trainer_state(resume_ckpt)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens_seen = int(state["step"]), int(state["tokens"])
        train_s = float(state.get("train_s", 0.0))
        ckpts.restore_rng(state.get("rng") or [], rank, world, device, tc.seed + 1000003 * step, ctx.log)
        ctx.log(f"resuming from {resume_ckpt} at step {step}")
    if step >= total_steps:
        ctx.log(f"the checkpoint is at step {step}, which already reaches the limit of {total_steps} steps")

    raw_model = model
    if cfg.train.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    ctx.log(f"{num_parameters(raw_model) / 1e6:.2f}M parameters, {len(train_ds)} training sequences of <= {T} "
            f"tokens, {steps_per_epoch} steps/epoch, {total_steps} steps, {world} process(es), {device.type}"
            f"{', bf16' if use_bf16 else ''}, accumulation {accum}")

    # -- helpers over the data -----------------------------------------------------------------
    def make_batch(ds, indices, epoch, stream):
        """(numpy arrays of one masked micro-batch, masked-token count, token count)."""
        exs = [ds.get(int(i)) for i in indices]
        inputs, labels = mask_batch([e.ids for e in exs], [int(i) for i in indices], epoch, cfg.data.seed, spec,
                                    [e.word_starts for e in exs] if spec.whole_word else None, stream=stream)
        tt = [e.token_types for e in exs] if cfg.data.packing == "sentence-pair" else None
        ids, lab, am, tts = collate(inputs, labels, tt)
        nsl = np.array([e.next_sentence_label for e in exs]) if cfg.data.nsp else None
        n_tokens = sum(len(e.ids) for e in exs)
        return dict(input_ids=ids, labels=lab, attention_mask=am, token_type_ids=tts,
                    next_sentence_label=nsl), int((lab != -100).sum()), n_tokens

    def to_device(arrays):
        return {k: None if a is None else torch.from_numpy(a).to(device, non_blocking=True)
                for k, a in arrays.items()}

    order_cache = {}

    def step_batches(at_step):
        """This rank's micro-batches of optimizer step `at_step`: a pure function of the step."""
        epoch, epoch_step = divmod(at_step, steps_per_epoch)
        if epoch not in order_cache:
            order_cache.clear()
            order_cache[epoch] = epoch_order(len(train_ds), cfg.data.seed, epoch)
        mine = rank_slice(order_cache[epoch][epoch_step * B:(epoch_step + 1) * B], rank, world)
        return [make_batch(train_ds, mine[j:j + micro], epoch, STREAM_TRAIN_MASK) for j in range(0, len(mine), micro)]

    def all_sum(values):
        if world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def validate():
        """`val_loss` / `val_ppl` leak-free (every chosen token [MASK], like eval's `mlm_ppl`);
        `val_loss_801010` / `val_ppl_801010` with the training replacement (comparable with the
        training loss, but flattered by the tokens left unchanged); `val_acc` / `val_top5_acc`."""
        from mlmctl.mlm_scoring import position_scores

        n_val = min(len(val_ds), cfg.validation.max_sequences)
        if n_val == 0:
            return None
        mine = np.arange(n_val)[rank::world]
        sums = [0.0] * 5  # leak-free NLL, 80/10/10 NLL, top-1 hits, top-5 hits, masked tokens
        raw_model.eval()
        with torch.no_grad():
            for j in range(0, len(mine), cfg.validation.batch_size):
                arrays, n_masked, _ = make_batch(val_ds, mine[j:j + cfg.validation.batch_size], 0, STREAM_VAL_MASK)
                batch = to_device(arrays)
                batch.pop("next_sentence_label")
                labels = batch["labels"]
                leak_free_ids = torch.where(labels != -100, MASK_ID, batch["input_ids"])  # same positions
                with autocast:
                    _, loss = raw_model(**batch, loss_denominator=1)  # sum over masked tokens
                    logits, _ = raw_model(**{**batch, "input_ids": leak_free_ids})  # (N, V) at masked positions
                nll, top1, top5 = position_scores(logits, labels[labels != -100])
                for k, v in enumerate((nll.sum(), loss, top1.sum(), top5.sum())):
                    sums[k] += float(v)
                sums[4] += n_masked
        raw_model.train()
        sums = all_sum(sums)
        if sums[4] == 0:
            return None
        val_loss, val_loss_801010 = sums[0] / sums[4], sums[1] / sums[4]
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0)),
                "val_loss_801010": val_loss_801010, "val_ppl_801010": math.exp(min(val_loss_801010, 700.0)),
                "val_acc": sums[2] / sums[4], "val_top5_acc": sums[3] / sums[4]}

    metrics_path = out / METRICS
    if ctx.is_main:  # keep the lines up to the resumed step; a fresh start keeps none
        ckpts.trim_metrics(metrics_path, step if resume_ckpt is not None else -1)

    def write_metrics(row):
        if ctx.is_main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(timed_row(row, ctx.started)) + "\n")

    def save(step_now, epoch_now, epoch_step_now):
        states = ckpts.gather_rng(device, world)
        if ctx.is_main:
            state = {"step": step_now, "tokens": tokens_seen, "epoch": epoch_now, "epoch_step": epoch_step_now,
                     "optimizer": optimizer.state_dict(), "scheduler": {"step": step_now}, "rng": states,
                     "world_size": world, "train_s": train_s}
            ckpts.save_checkpoint(out, step_now, raw_model, state, run_meta, tokenizer_dir=ctx.input_dir,
                                  architectures=architectures, keep_last=cfg.checkpoint.keep_last)
        if world > 1:
            dist.barrier()

    # -- the training loop ---------------------------------------------------------------------
    model.train()
    first_val = last_val = None
    if step == 0:
        first_val = validate()
        if first_val is not None:
            write_metrics({"step": 0, "tokens": 0, **first_val})
            ctx.log(f"step 0: val_loss {first_val['val_loss']:.4f}, val_ppl {first_val['val_ppl']:.1f}")
    losses = []
    # The next step's batches are built (read, packed, masked) in a thread while this step
    # computes; they depend only on the step number, so this changes nothing but the speed.
    from concurrent.futures import ThreadPoolExecutor

    prefetch = ThreadPoolExecutor(1, thread_name_prefix="mlmctl-batches")
    pending = prefetch.submit(step_batches, step) if step < total_steps else None
    stop = ckpts.StopSignals()
    with stop, prefetch, progress(total_steps, STAGE, "steps", enabled=ctx.is_main and not ctx.opts.quiet,
                                  initial=step) as bar:
        while step < total_steps:
            t0 = time.perf_counter()
            micro_batches = pending.result()
            if step + 1 < total_steps:
                pending = prefetch.submit(step_batches, step + 1)
            # Normalise by the masked tokens of the whole global batch, so that the gradient is the
            # same however the batch is split over ranks and accumulation steps. The stop votes
            # ride along, so that every rank stops at the same step boundary.
            n_masked, n_tokens, stop_votes = all_sum([sum(m[1] for m in micro_batches),
                                                      sum(m[2] for m in micro_batches), float(stop.requested)])
            if stop_votes:
                if step and not (out / ckpts.CHECKPOINTS / ckpts.step_dir_name(step)).is_dir():
                    save(step, *divmod(step, steps_per_epoch))
                saved = out / ckpts.CHECKPOINTS / ckpts.step_dir_name(step) if step else None
                raise stop.interrupted(STAGE, step, saved)
            lr = lr_at(step, lr=tc.lr, warmup_steps=tc.warmup_steps, total_steps=total_steps, decay=tc.decay,
                       min_lr_ratio=tc.min_lr_ratio)
            set_lr(optimizer, lr)
            step_loss = torch.zeros((), device=device)
            for k, (arrays, _, _) in enumerate(micro_batches):
                sync = k == len(micro_batches) - 1
                with (_nullcontext() if sync or world == 1 else model.no_sync()), autocast:
                    # DDP averages gradients over ranks, hence the factor `world` in the denominators.
                    _, loss = model(**to_device(arrays), loss_denominator=max(n_masked, 1) / world,
                                    nsp_denominator=B / world)
                loss.backward()
                step_loss += loss.detach().float()  # stays on the device: no sync per micro-batch
            max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")  # inf: measure, do not clip
            norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
            if world > 1:
                dist.all_reduce(step_loss)
            # One host sync per step, for the log and the non-finite check.
            step_loss, norm = torch.stack([step_loss / world, norm.float()]).tolist()
            if not (math.isfinite(step_loss) and math.isfinite(norm)):
                last = ckpts.latest_valid(out)
                raise MlmctlError(
                    f"pretrain: the loss became {step_loss} (grad norm {norm}) at step {step + 1}; stopped. "
                    f"The last good checkpoint is {last or 'none'}; lower train.lr or raise train.warmup_steps, "
                    f"then continue with --resume-from"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(n_tokens)
            train_s += time.perf_counter() - t0  # training time only: validation and saves come after
            losses.append(step_loss)
            bar.update(1, loss=step_loss, tok_s=tokens_per_s(tokens_seen, train_s))
            row = None
            if step % cfg.log_every == 0 or step == total_steps:
                row = {"step": step, "tokens": tokens_seen, "loss": step_loss, "lr": lr, "grad_norm": norm,
                       "tokens_per_s": tokens_per_s(tokens_seen, train_s), "train_s": train_s}
            if (cfg.validation.every and step % cfg.validation.every == 0) or step == total_steps:
                last_val = validate()
                if last_val is not None:
                    row = {**(row or {"step": step, "tokens": tokens_seen}), **last_val}
                    ctx.log(f"step {step}: val_loss {last_val['val_loss']:.4f}, val_ppl {last_val['val_ppl']:.1f}")
            if row is not None:
                write_metrics(row)
            if step % cfg.checkpoint.save_every == 0 or step == total_steps:
                save(step, *divmod(step, steps_per_epoch))

    # -- the final model and the manifest ------------------------------------------------------
    files = []
    if ctx.is_main:
        from mlmctl.model_dir import save_model_dir

        final = save_model_dir(raw_model, out / FINAL, tokenizer_dir=ctx.input_dir, architectures=architectures)
        files = [ctx.describe(f"{FINAL}/{p.name}") for p in sorted(final.iterdir()) if p.is_file()]
        if metrics_path.exists():
            files.append(ctx.describe(METRICS))
    summary = {"steps": step, "tokens": tokens_seen, "parameters": f"{num_parameters(raw_model) / 1e6:.2f}M"}
    if losses:
        summary["final loss"] = f"{losses[-1]:.4f}"
        summary["tokens/s"] = tokens_per_s(tokens_seen, train_s)
    if first_val:
        summary["val ppl (start)"] = f"{first_val['val_ppl']:.1f}"
    if last_val:
        summary["val loss"] = f"{last_val['val_loss']:.4f}"
        summary["val ppl"] = f"{last_val['val_ppl']:.1f}"
    extra = {"steps": step, "tokens": tokens_seen, "vocab_size": vocab_size,
             "tokens_per_s": tokens_per_s(tokens_seen, train_s), "train_s": train_s,
             "tokenizer_sha256": corpus["tokenizer_sha256"], "architectures": [architectures],
             "final_loss": losses[-1] if losses else None, **(last_val or {})}
    ctx.finish([], files, extra)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary["model"] = str(out / FINAL)
    return summary


# ----------------------------------------------------------------------------------------------
# Helpers


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False



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
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import load_model_dir
    from mlmctl.shards import file_sha256

    src, src_cfg, info = load_model_dir(path, BertForPreTraining, nsp=model.nsp)
    tok = Path(path) / "tokenizer.json"
    if tok.is_file() and file_sha256(tok) != tokenizer_sha256:
        raise MlmctlError(f"pretrain: `model.init_from` {path} was trained with a different tokenizer than the input's; "
                          f"use the build-vocab directory it came from")
    if asdict(src_cfg) != asdict(model.config):
        raise MlmctlError(f"pretrain: `model.init_from` {path} has a different shape or vocabulary than `model`; "
                          f"set model.preset and the overrides to match its config.json")
    model.load_state_dict(src.state_dict())


def _open_corpus(input_dir: Path, manifest) -> dict:
    """Train/validation CorpusParts, vocabulary size and tokenizer hash of a build-vocab directory."""
    from mlmctl.masking import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
    from mlmctl.packing import CorpusPart
    from mlmctl.token_ids import open_vocab_dir

    # The runner has already verified the manifest and every file's sha256; sizes suffice here.
    vd = open_vocab_dir(input_dir, full_verify=False, reader=STAGE)
    expect = {"[PAD]": PAD_ID, "[UNK]": UNK_ID, "[CLS]": CLS_ID, "[SEP]": SEP_ID, "[MASK]": MASK_ID}
    if any(vd.special_ids.get(k) != v for k, v in expect.items()):
        raise InputError(f"pretrain: {input_dir} has special token ids {vd.special_ids}, expected {expect}; "
                         f"rebuild it with `mlmctl build-vocab --force`")
    parts = {}
    for split in ("train", "validation"):
        have = {s.split for s in vd.manifest.shards}
        if split not in have:
            if split == "train":
                raise InputError(f"pretrain: {input_dir} has no training data (split 'train' is empty)")
            parts[split] = []
            continue
        ts = vd.split(split)
        parts[split] = [CorpusPart(_Slicer(ts.tokens), ts.sent_offsets, ts.doc_sent_offsets, _Slicer(ts.word_starts))]
    return {"train": parts["train"], "validation": parts["validation"], "vocab_size": vd.vocab_size,
            "tokenizer_sha256": vd.tokenizer_sha256}


class _Slicer:
    """Presents `fn(start, stop)` as an array that can be sliced: `x[a:b]` -> fn(a, b)."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, sl: slice):
        return self.fn(sl.start, sl.stop)
