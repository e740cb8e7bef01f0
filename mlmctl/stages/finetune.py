"""finetune: train a sequence classifier (single text or text pair) from labelled files.

Reads a model directory (`--input`: a pretrain run, whose `final/` is used, or any model
directory: an mlmctl checkpoint or a local HF BERT directory with `tokenizer.json`), and the
labelled `train_file` / `dev_file` (/ `test_file`) (TSV, CSV or JSONL, see mlmctl/labelled.py).
`init: random` keeps the architecture and tokenizer of the input but not its weights, to measure
what pretraining gives.

Writes:
    RUN/best/          HF `BertForSequenceClassification` directory (config.json with id2label /
                       label2id, model.safetensors, tokenizer files): the best dev checkpoint
    RUN/metrics.jsonl  one JSON line per logged step and per dev evaluation
    RUN/manifest.json  written last; `extra` holds the labels, best step and dev/test metrics

    mlmctl finetune -c configs/demo/finetune.yaml --input runs/demo/pretrain --output runs/demo/ft \\
        --set train_file=data/demo/task/train.tsv --set dev_file=data/demo/task/dev.tsv

Training: the label set (and order) comes from the train file; dev/test labels outside it are an
error. Examples are truncated to `max_seq_len` tokens and padded per batch only to the batch's
longest example (optionally batching examples of similar length together). AdamW, linear warm-up
then decay, for `epochs` or `max_steps`; dev evaluation every epoch or every `eval_every` steps;
the best checkpoint by `metric` is kept and training stops after `patience` evaluations without
improvement. Seeded: the same config gives the same model on CPU.

Under `torchrun` every process trains on its slice of each global batch (DDP, gloo on CPU);
every process evaluates the whole (small) dev set, so all take the same best/stop decisions,
and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check
from mlmctl.errors import InputError, MlmctlError
from mlmctl.metrics import METRIC_NAMES

MetricName = Literal["accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall"]


@dataclass
class FinetuneConfig:
    """Fine-tune an encoder for sequence classification."""

    input: str = "runs/pretrain"
    """Model to start from: a pretrain run directory (uses final/) or a model directory."""
    output: str = "runs/finetune"
    """Run directory (best/, metrics.jsonl, manifest.json)."""
    train_file: str = "data/task/train.tsv"
    """Labelled training file (.tsv, .csv or .jsonl, optionally .gz)."""
    dev_file: str | None = "data/task/dev.tsv"
    """Labelled dev file for model selection (null = keep the last model)."""
    test_file: str | None = None
    """Optional labelled test file scored once with the best model (also see `mlmctl eval`)."""
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    """File format; auto = from the file name."""
    has_header: bool = True
    """TSV/CSV: the first row names the columns (else columns are named "0", "1", ...)."""
    text_field: str = "text"
    """Column / JSON field holding the text."""
    text_pair_field: str | None = None
    """Column / field of the second text for pair tasks (null = single text)."""
    label_field: str = "label"
    """Column / field holding the label (string or integer)."""
    max_field_chars: int = 10_000_000
    """TSV/CSV: longest field accepted, in characters (a longer one is an error naming its line)."""
    labels: list[str] = field(default_factory=list)
    """Label order (id i = labels[i]); empty = sorted labels of the train file."""
    init: Literal["pretrained", "random"] = "pretrained"
    """pretrained = the input's weights; random = same architecture, fresh weights."""
    max_seq_len: int = 128
    """Tokens per example including [CLS]/[SEP]; longer examples are truncated."""
    length_bucketing: bool = False
    """Batch examples of similar length together (less padding; order still seeded)."""
    batch_size: int = 32
    """Examples per optimizer step (global across torchrun processes)."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating."""
    epochs: int = 3
    """Passes over the training file (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = use epochs)."""
    lr: float = 5e-5
    """Peak learning rate."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming the learning rate up linearly from 0."""
    decay: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warm-up (to 0 at the last step)."""
    weight_decay: float = 0.01
    """AdamW weight decay (never on biases and LayerNorm)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    classifier_dropout: float | None = None
    """Dropout before the classifier (null = the model's hidden_dropout_prob)."""
    class_weights: Literal["none", "balanced"] = "none"
    """balanced = weight the loss of class c by n / (K * count_c), as scikit-learn does."""
    eval_every: int = 0
    """Evaluate on dev every this many steps (0 = at the end of every epoch)."""
    metric: MetricName = "macro_f1"
    """Dev metric that picks the best checkpoint and drives early stopping."""
    patience: int = 0
    """Stop after this many dev evaluations without improvement (0 = never stop early)."""
    log_every: int = 10
    """Write a training line to metrics.jsonl every this many steps."""
    seed: int = 0
    """Seed of the classifier initialisation (the whole model with init: random), the data
    order and dropout."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    threads: int | None = None
    """CPU threads for torch (null = torch's default)."""

    def __post_init__(self):
        check(self.max_seq_len >= 3, "max_seq_len", "must be at least 3 ([CLS] text [SEP])")
        check(self.max_field_chars >= 1, "max_field_chars", "must be >= 1")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = use epochs)")
        check(self.lr > 0, "lr", "must be positive")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check(self.classifier_dropout is None or 0 <= self.classifier_dropout < 1, "classifier_dropout",
              "must be in [0, 1) or null")
        check(self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.patience >= 0, "patience", "must be >= 0")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(len(set(self.labels)) == len(self.labels), "labels", "has duplicates")
        check(self.metric in METRIC_NAMES, "metric", f"one of {', '.join(METRIC_NAMES)}")


CONFIG = FinetuneConfig
STAGE = "finetune"
INPUT_STAGE = None

BEST = "best"
METRICS = "metrics.jsonl"


def input_fingerprint(cfg: FinetuneConfig) -> str:
    """Identity of everything read: the model directory's files and the labelled files' bytes."""
    from mlmctl.labelled import resolve_model_dir

    model_dir = resolve_model_dir(cfg.input, STAGE)
    return fingerprint_files(STAGE, model_dir, [("train_file", cfg.train_file), ("dev_file", cfg.dev_file),
                                                ("test_file", cfg.test_file)])


def fingerprint_files(reader: str, model_dir: Path, named_files: list[tuple[str, str | None]]) -> str:
    from mlmctl.manifest import digest
    from mlmctl.shards import file_sha256

    parts = []
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.name.endswith((".json", ".safetensors", ".txt", ".bin")):
            parts.append(f"model/{p.name}:{file_sha256(p)}")
    for key, path in named_files:
        if path is None:
            continue
        if not Path(path).is_file():
            raise InputError(f"{reader}: `{key}` {path} does not exist")
        parts.append(f"{key}:{file_sha256(path)}")
    return digest(*parts)


def run(ctx) -> dict:
    import torch

    from mlmctl.devices import pick_device
    from mlmctl.labelled import TextEncoder, label_list, read_labelled, resolve_model_dir
    from mlmctl.model import BertForSequenceClassification, ModelConfig, num_parameters
    from mlmctl.model_dir import load_model_dir, read_model_config, save_model_dir
    from mlmctl.optim import lr_at, make_adamw, set_lr

    cfg: FinetuneConfig = ctx.cfg
    out: Path = ctx.output_dir
    rank, world = ctx.rank, ctx.world_size
    started = time.monotonic()

    # -- processes and device ------------------------------------------------------------------
    device = pick_device(cfg.device, "finetune")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if world > 1:
        import torch.distributed as dist

        if cfg.batch_size % world:
            raise MlmctlError(f"finetune: `batch_size` {cfg.batch_size} is not divisible by the {world} processes")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    # -- data ----------------------------------------------------------------------------------
    model_dir = resolve_model_dir(ctx.input_dir or cfg.input, STAGE)
    read = dict(text_field=cfg.text_field, text_pair_field=cfg.text_pair_field, label_field=cfg.label_field,
                fmt=cfg.format, has_header=cfg.has_header, max_field_chars=cfg.max_field_chars)
    train = read_labelled(cfg.train_file, **read)
    labels = label_list(train.labels, cfg.labels or None)
    if len(labels) < 2:
        raise InputError(f"finetune: {cfg.train_file} has a single label ({labels[0]!r}); need at least 2 classes")
    label2id = {name: i for i, name in enumerate(labels)}
    encoder = TextEncoder(model_dir, cfg.max_seq_len, STAGE)
    train_enc = encoder.encode(train, label2id)
    dev = read_labelled(cfg.dev_file, **read) if cfg.dev_file else None
    dev_enc = encoder.encode(dev, label2id) if dev else None  # unseen label -> error, before training
    test = read_labelled(cfg.test_file, **read) if cfg.test_file else None
    test_enc = encoder.encode(test, label2id) if test else None
    dropped = {f"{k} ({Path(d.path).name})": v for d in (train, dev, test) if d for k, v in d.dropped.items()}
    for what, n in dropped.items():
        ctx.log(f"dropped {n} examples: {what}")

    # -- model ---------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    if cfg.init == "pretrained":
        model, mcfg, info = load_model_dir(model_dir, BertForSequenceClassification, num_labels=len(labels),
                                           classifier_dropout=cfg.classifier_dropout)
        fresh = sorted({k.split(".")[0] if not k.startswith("bert.") else ".".join(k.split(".")[:2])
                        for k in info["missing"]})
        ctx.log(f"loaded {model_dir}; freshly initialised: {', '.join(fresh) or 'nothing'}")
    else:
        mcfg = read_model_config(model_dir, STAGE)
        model = BertForSequenceClassification(mcfg, len(labels), classifier_dropout=cfg.classifier_dropout)
        ctx.log(f"random init with the architecture of {model_dir}")
    encoder.check_fits(mcfg, model_dir, STAGE, pairs=cfg.text_pair_field is not None)
    if cfg.max_seq_len > mcfg.max_position_embeddings:
        raise MlmctlError(f"finetune: `max_seq_len` {cfg.max_seq_len} exceeds the model's "
                          f"max_position_embeddings {mcfg.max_position_embeddings}")
    model.to(device)
    raw_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_adamw(raw_model, cfg.lr, cfg.weight_decay, (0.9, 0.999), 1e-8, device.type)
    class_weights = None
    if cfg.class_weights == "balanced":
        counts = [0] * len(labels)
        for y in train_enc.labels:
            counts[y] += 1
        class_weights = torch.tensor([len(train_enc.labels) / (len(labels) * c) for c in counts],
                                     dtype=torch.float32, device=device)

    n = len(train_enc.ids)
    steps_per_epoch = sum(len(b) >= world for b in _epoch_batches(train_enc, cfg, 0))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_ratio * total_steps)
    eval_every = cfg.eval_every or steps_per_epoch
    ctx.log(f"{n} train examples, {len(labels)} labels, {steps_per_epoch} steps/epoch, {total_steps} steps, "
            f"{num_parameters(raw_model) / 1e6:.2f}M parameters, {world} process(es), {device.type}"
            + (f", {train_enc.truncated} truncated to {cfg.max_seq_len} tokens" if train_enc.truncated else ""))

    # -- training ------------------------------------------------------------------------------
    work_best = ctx.work_dir / BEST
    metrics_path = out / METRICS
    log_file = open(metrics_path, "w", encoding="utf-8") if ctx.is_main else None
    extra_config = {"id2label": {str(i): x for i, x in enumerate(labels)}, "label2id": label2id,
                    "problem_type": "single_label_classification",
                    "mlmctl_finetune": {"max_seq_len": cfg.max_seq_len, "text_field": cfg.text_field,
                                        "text_pair_field": cfg.text_pair_field, "label_field": cfg.label_field,
                                        "init": cfg.init}}

    def save_best():
        if ctx.is_main:
            save_model_dir(raw_model, work_best, tokenizer_dir=model_dir,
                           architectures=["BertForSequenceClassification"], extra_config=extra_config)

    def write(record: dict):
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    best_value, best_step, best_report, best_state = -math.inf, 0, None, None
    evals_since_best, step, epoch, stop = 0, 0, 0, False
    from mlmctl.progress import progress

    bar = progress(total_steps, STAGE, "steps", enabled=ctx.is_main and not ctx.opts.quiet)
    loss_sum, loss_count = 0.0, 0
    try:
        while not stop and step < total_steps:
            for batch in _epoch_batches(train_enc, cfg, epoch):
                if len(batch) < world:
                    continue  # a last batch too small to give every process an example
                mine = batch[rank * len(batch) // world:(rank + 1) * len(batch) // world]
                model.train()
                lr = lr_at(step, lr=cfg.lr, warmup_steps=warmup, total_steps=total_steps, decay=cfg.decay,
                           min_lr_ratio=0.0)
                set_lr(optimizer, lr)
                ids, mask, types = (t.to(device) for t in _pad(encoder, train_enc, mine))
                y = torch.tensor([train_enc.labels[r] for r in mine], dtype=torch.long, device=device)
                _, loss = model(ids, attention_mask=mask, token_type_ids=types, labels=y,
                                class_weights=class_weights)
                if not torch.isfinite(loss):
                    raise MlmctlError(f"finetune: the loss became {loss.item()} at step {step}; lower `lr`")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(),
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                optimizer.step()
                step += 1
                loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
                bar.update(1, loss=loss.item())
                if step % cfg.log_every == 0 or step == total_steps:
                    write({"step": step, "epoch": epoch, "loss": loss_sum / loss_count, "lr": lr,
                           "grad_norm": float(gnorm)})
                    loss_sum, loss_count = 0.0, 0
                if dev_enc is not None and (step % eval_every == 0 or step == total_steps):
                    report = _evaluate(raw_model, encoder, dev_enc, labels, cfg.eval_batch_size, device)
                    value = report[cfg.metric]
                    improved = value > best_value
                    write({"step": step, "epoch": epoch, **{f"dev_{k}": report[k] for k in METRIC_NAMES},
                           "best": improved})
                    ctx.log(f"step {step}: dev {cfg.metric} {value:.4f}" + (" (best)" if improved else ""))
                    if improved:
                        best_value, best_step, best_report, evals_since_best = value, step, report, 0
                        best_state = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
                        save_best()
                    else:
                        evals_since_best += 1
                        if cfg.patience and evals_since_best >= cfg.patience:
                            ctx.log(f"early stop at step {step}: no better dev {cfg.metric} "
                                    f"for {evals_since_best} evaluations")
                            stop = True
                if stop or step >= total_steps:
                    break
            epoch += 1
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()

    if dev_enc is None:  # no model selection: the last model is the result
        best_step = step
        best_state = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
        save_best()
    raw_model.load_state_dict(best_state)

    test_report = None
    if test_enc is not None:
        test_report = _evaluate(raw_model, encoder, test_enc, labels, cfg.eval_batch_size, device)

    summary = {"labels": ", ".join(labels), "train examples": n, "steps": step, "best step": best_step}
    extra = {"labels": labels, "best_step": best_step, "steps": step, "epochs_started": epoch,
             "train_examples": n, "init": cfg.init, "model_dir": str(model_dir),
             "seconds": round(time.monotonic() - started, 2), "dropped": dropped}
    if best_report is not None:
        extra["dev"] = _brief(best_report)
        summary[f"dev {cfg.metric}"] = f"{best_report[cfg.metric]:.4f}"
        summary["dev accuracy"] = f"{best_report['accuracy']:.4f}"
    if test_report is not None:
        extra["test"] = _brief(test_report)
        summary["test accuracy"] = f"{test_report['accuracy']:.4f}"
        summary["test macro_f1"] = f"{test_report['macro_f1']:.4f}"

    if ctx.is_main:
        dst = out / BEST
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(work_best, dst)
        files = [ctx.describe(f"{BEST}/{p.name}") for p in sorted(dst.iterdir()) if p.is_file()]
        files.append(ctx.describe(METRICS))
        ctx.finish([], files, extra)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    summary["model"] = str(out / BEST)
    return summary


# ----------------------------------------------------------------------------------------------
# Helpers

def _brief(report: dict) -> dict:
    keys = (*METRIC_NAMES, "n")
    return {k: report[k] for k in keys} | {"per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()}}


def _pad(encoder, enc, rows):
    from mlmctl.labelled import pad_batch

    return pad_batch(enc, rows, encoder.pad_id)


def _evaluate(model, encoder, enc, labels, batch_size, device) -> dict:
    from mlmctl.labelled import predict
    from mlmctl.metrics import classification_report

    probs = predict(model, enc, batch_size, encoder.pad_id, device)
    return classification_report(enc.labels, probs.argmax(-1).tolist(), labels)


def _epoch_batches(enc, cfg: FinetuneConfig, epoch: int) -> list[list[int]]:
    """Row indices of each global batch of one epoch: a pure function of (seed, epoch).

    With `length_bucketing`, the shuffled rows are cut into windows of 50 batches, each window
    is sorted by length and cut into batches, and the batches are shuffled again: batches hold
    examples of similar length (less padding) but their order stays random."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(enc.ids)).tolist()
    B = cfg.batch_size
    if not cfg.length_bucketing:
        return [order[i:i + B] for i in range(0, len(order), B)]
    window = 50 * B
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda r: len(enc.ids[r]))
        batches += [chunk[i:i + B] for i in range(0, len(chunk), B)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]

