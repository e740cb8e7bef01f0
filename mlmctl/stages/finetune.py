"""finetune: train a sequence classifier or regressor (single text or text pair) from labelled files.

Reads a model directory (`--input`: a pretrain run, whose `final/` is used, or any model
directory: an mlmctl checkpoint or a local HF BERT directory with `tokenizer.json`), and the
labelled `train_file` / `dev_file` (/ `test_file`) (TSV, CSV or JSONL, see mlmctl/labelled.py).
`init: random` keeps the architecture and tokenizer of the input but not its weights, to measure
what pretraining gives.

Writes:
    RUN/best/          HF `BertForSequenceClassification` (or `ModernBertForSequenceClassification`) directory (config.json with id2label /
                       label2id, model.safetensors, tokenizer files): the best dev checkpoint
    RUN/metrics.jsonl  one JSON line per logged step and per dev evaluation
    RUN/manifest.json  written last; `extra` holds the labels, best step and dev/test metrics

    mlmctl finetune -c configs/demo/finetune.yaml --input runs/demo/pretrain --output runs/demo/ft \\
        --set train_file=data/demo/task/train.tsv --set dev_file=data/demo/task/dev.tsv

Tasks (`task`): classification (one label per example; the label set and order come from the
train file, dev/test labels outside it are an error) and regression (one float per example, one
output, MSE loss, scored by Pearson / Spearman correlation and MSE; saved with num_labels 1 and
`problem_type: "regression"`, as transformers does). Each task is a `Finetuner` class (TRAINERS;
token-classification, a tag per word of CoNLL / JSONL files: mlmctl/token_finetune.py);
what differs between tasks lives in its few task methods (labels, targets, evaluation, head config).
config.json's `mlmctl_finetune` records the train file and its sha256, for eval's baseline.

Training: examples are truncated to `max_seq_len` tokens and padded per batch only to the batch's
longest example (optionally batching examples of similar length together). AdamW, linear warm-up
then decay, for `epochs` or `max_steps`; dev evaluation every epoch or every `eval_every` steps;
the best checkpoint by `metric` is kept and training stops after `patience` evaluations without
improvement. Seeded: the same config gives the same model on CPU.

Under `torchrun` every process trains on its slice of each global batch (DDP, gloo on CPU);
every process evaluates the whole (small) dev set, so all take the same best/stop decisions,
and only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check, config_to_dict
from mlmctl.errors import InputError, MlmctlError
from mlmctl.layout import BEST, METRICS_FILE
from mlmctl.metrics import METRIC_NAMES, metric_for
from mlmctl.training import OptimSettings, check_optimiser

MetricName = Literal["auto", "accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall",
                     "mcc", "f1", "pearson", "spearman", "entity_f1", "token_accuracy"]
Task = Literal["classification", "regression", "token-classification"]


@dataclass
class FinetuneConfig:
    """Fine-tune an encoder for sequence classification or regression."""

    input: str = "runs/pretrain"
    """Model to start from: a pretrain run directory (uses final/) or a model directory."""
    output: str = "runs/finetune"
    """Run directory (best/, metrics.jsonl, manifest.json)."""
    tensorboard: bool = False
    """Also write TensorBoard event files to `OUTPUT/tensorboard/` (needs the `tensorboard` extra)."""
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
    """Column / field holding the label (classification: string or integer; regression: a number)."""
    max_field_chars: int = 10_000_000
    """TSV/CSV: longest field accepted, in characters (a longer one is an error naming its line)."""
    labels: list[str] = field(default_factory=list)
    """Classification: label order (id i = labels[i]); empty = sorted labels of the train file."""
    init: Literal["pretrained", "random"] = "pretrained"
    """pretrained = the input's weights; random = same architecture, fresh weights."""
    task: Task = "classification"
    """classification = one label per example (cross-entropy); regression = one float per example (one
    output, MSE loss; saved with `problem_type: regression`); token-classification = a tag per word."""
    tag_format: Literal["auto", "conll", "jsonl"] = "auto"
    """token-classification: file layout; auto = JSONL for .jsonl/.json names, else CoNLL (a token and its tag(s) per line, a blank line between sentences)."""
    tag_column: int = -1
    """token-classification, CoNLL: column of the tag (0 is the token; -1 = the last column)."""
    tokens_field: str = "tokens"
    """token-classification, JSONL: field holding the list of words."""
    tags_field: str = "tags"
    """token-classification, JSONL: field holding the list of tags (one per word)."""
    tag_scheme: Literal["iob1", "iob2", "iobes", "none"] = "iob2"
    """token-classification: tag scheme; iob1 files are converted to IOB2; none = any tags (POS): token accuracy only, no entities."""
    ill_formed: Literal["repair", "error"] = "repair"
    """token-classification: an I-/E- tag that continues no entity (I-PER after O): repair = rewrite as seqeval's non-strict mode reads it (I-PER -> B-PER) and count it; error = stop, naming file and line."""
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
    """Dropout before the classifier (null = the model's hidden_dropout_prob; modernbert: its classifier_dropout)."""
    classifier_pooling: Literal["cls", "mean"] | None = None
    """modernbert only: classify the [CLS] vector or the mean over real tokens (HF `classifier_pooling`; null = the model's config.json, itself cls by default)."""
    class_weights: Literal["none", "balanced"] = "none"
    """Classification: balanced = weight the loss of class c by n / (K * count_c), as scikit-learn does."""
    eval_every: int = 0
    """Evaluate on dev every this many steps (0 = at the end of every epoch)."""
    metric: MetricName = "auto"
    """Dev metric that picks the best checkpoint and drives early stopping (higher is better). auto =
    macro_f1 (classification), pearson (regression), entity_f1 (token-classification; token_accuracy
    with `tag_scheme: none`). Classification:
    accuracy, macro_f1, micro_f1, weighted_f1, macro_precision, macro_recall, mcc (Matthews correlation),
    f1 (F1 of the positive class = the second label; binary tasks only); regression: pearson, spearman; token-classification: entity_f1, token_accuracy."""
    patience: int = 0
    """Stop after this many dev evaluations without improvement (0 = never stop early)."""
    log_every: int = 10
    """Write a training line to metrics.jsonl every this many steps."""
    save_every: int = 0
    """Write a resumable checkpoint every this many steps (0 = after every dev evaluation); it lives in
    .work/ and is removed when the run finishes. Ctrl-C / SIGTERM also write one before stopping."""
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
        check_optimiser(self)
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.classifier_dropout is None or 0 <= self.classifier_dropout < 1, "classifier_dropout",
              "must be in [0, 1) or null")
        check(self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.patience >= 0, "patience", "must be >= 0")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        check(self.save_every >= 0, "save_every", "must be >= 0 (0 = after every dev evaluation)")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(len(set(self.labels)) == len(self.labels), "labels", "has duplicates")
        check(self.tag_column != 0 and -100 <= self.tag_column <= 100, "tag_column",
              "must be a column index in [-100, 100] other than 0, the token (-1 = the last column)")
        check(self.metric == "auto" or self.metric in METRIC_NAMES, "metric", f"one of auto, {', '.join(METRIC_NAMES)}")
        try:
            metric_for(self.task, self.metric)
        except ValueError as e:
            check(False, "metric", f"{e} (task is {self.task})")
        check(self.metric != "f1" or not self.labels or len(self.labels) == 2, "metric",
              f"`f1` is the F1 of the positive class of a binary task, but `labels` has {len(self.labels)}; "
              "use macro_f1")
        if self.task == "regression":
            check(not self.labels, "labels", "is for classification; a regression label is a number (remove the key)")
            check(self.class_weights == "none", "class_weights", "is for classification; use none with task regression")

    @property
    def selection_metric(self) -> str:
        """The dev metric that picks the best checkpoint (`metric`, with auto resolved for the task)."""
        if self.task == "token-classification" and self.tag_scheme == "none" and self.metric == "auto":
            return "token_accuracy"  # tags without a scheme have no entities
        return metric_for(self.task, self.metric)

    def optim(self, total_steps: int) -> OptimSettings:
        """AdamW with BERT's fine-tuning betas and epsilon, decaying to 0 at the last step."""
        return OptimSettings(lr=self.lr, total_steps=total_steps, warmup_steps=int(self.warmup_ratio * total_steps),
                             decay=self.decay, min_lr_ratio=0.0, weight_decay=self.weight_decay, betas=(0.9, 0.999),
                             eps=1e-8, grad_clip=self.grad_clip)


CONFIG = FinetuneConfig
STAGE = "finetune"
INPUT_STAGE = None


def input_fingerprint(cfg: FinetuneConfig) -> dict[str, dict]:
    """Identity of everything read: the model directory's files and the labelled files' bytes."""
    from mlmctl.model_dir import resolve_model_dir
    from mlmctl.manifest import fingerprint_parts

    model_dir = resolve_model_dir(cfg.input, STAGE)
    return fingerprint_parts(STAGE, model_dir, [("train_file", cfg.train_file), ("dev_file", cfg.dev_file),
                                                ("test_file", cfg.test_file)])


def run(ctx) -> dict:
    from mlmctl.training import run_trainer

    if ctx.cfg.task == "token-classification":  # its module subclasses Finetuner: imported here, not above
        from mlmctl.token_finetune import TokenFinetuner

        return run_trainer(ctx, TokenFinetuner, STAGE)
    return run_trainer(ctx, TRAINERS[ctx.cfg.task], STAGE)


def _saved_loop_state(state: dict, fresh: dict) -> dict:
    """The loop state a checkpoint holds, each value of its fresh value's kind (counts stay
    counts, sums stay finite numbers), so a crafted one fails here, under `resuming`."""
    from mlmctl.checkpoint import count

    out = {}
    for key, default in fresh.items():
        value = state[key]
        if isinstance(default, int):
            out[key] = count(value, key)
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"{key} {value!r} is not a number")
            out[key] = float(value)
        elif value is not None and not isinstance(value, dict):
            raise TypeError(f"{key} is a {type(value).__name__}")
        else:
            out[key] = value
    return out


def _fresh_loop_state() -> dict:
    """Everything the loop carries from step to step: a checkpoint holds all of it."""
    return {"step": 0, "epoch": 0, "pos": 0, "best_value": -math.inf, "best_step": 0, "best_report": None,
            "evals_since_best": 0, "loss_sum": 0.0, "loss_count": 0, "train_s": 0.0}


class Finetuner:
    """The fine-tuning run in named steps: set up (here), open_data, build_model, resume, fit
    (train_step, evaluate, save), finish. Every rank runs all of them; only rank 0 writes.

    This class is sequence classification; another task subclasses it and overrides the task
    methods (the "Task" section below: read, set_labels, targets, evaluate, head_config, brief,
    report_lines), as RegressionFinetuner does."""

    def __init__(self, ctx):
        from mlmctl.training import Process

        self.ctx, self.cfg, self.out = ctx, ctx.cfg, ctx.output_dir
        self.started = time.monotonic()
        self.proc = Process.setup(STAGE, rank=ctx.rank, world=ctx.world_size, device=self.cfg.device,
                                  threads=self.cfg.threads)
        if self.cfg.batch_size % self.proc.world:
            raise MlmctlError(f"finetune: `batch_size` {self.cfg.batch_size} is not divisible by the "
                              f"{self.proc.world} processes")
        self.t = _fresh_loop_state()
        self.best_state = None

    def open_data(self) -> None:
        """The labelled files, encoded with the model's tokenizer (an unseen label is an error here)."""
        from mlmctl.model_dir import resolve_model_dir
        from mlmctl.shards import file_sha256
        from mlmctl.text_encoder import TextEncoder

        cfg, ctx = self.cfg, self.ctx
        self.model_dir = resolve_model_dir(ctx.input_dir or cfg.input, STAGE)
        train = self.read(cfg.train_file)
        self.train_sha256 = file_sha256(cfg.train_file)
        self.set_labels(train)
        self.encoder = TextEncoder(self.model_dir, cfg.max_seq_len, STAGE)
        self.train_enc = self.encode(train)
        dev = self.read(cfg.dev_file) if cfg.dev_file else None
        self.dev_enc = self.encode(dev) if dev else None
        test = self.read(cfg.test_file) if cfg.test_file else None
        self.test_enc = self.encode(test) if test else None
        self.dropped = {f"{k} ({Path(d.path).name})": v for d in (train, dev, test) if d for k, v in d.dropped.items()}
        for what, n in self.dropped.items():
            ctx.log(f"dropped {n} examples: {what}")

    def build_model(self) -> None:
        import torch

        from mlmctl.model import num_parameters

        cfg, proc = self.cfg, self.proc
        torch.manual_seed(cfg.seed)
        self.raw_model, mcfg = self._load_or_init()
        # ModernBERT has no token types: a pair is [CLS] a [SEP] b [SEP], as HF encodes it.
        self.encoder.check_fits(mcfg, self.model_dir, STAGE,
                                pairs=cfg.text_pair_field is not None and self.arch.name == "bert")
        if cfg.max_seq_len > mcfg.max_position_embeddings:
            raise MlmctlError(f"finetune: `max_seq_len` {cfg.max_seq_len} exceeds the model's "
                              f"max_position_embeddings {mcfg.max_position_embeddings}")
        self.raw_model.to(proc.device)
        self.model = proc.wrap(self.raw_model)
        self.class_weights = self._class_weights()
        n = len(self.train_enc.ids)
        self.steps_per_epoch = sum(len(b) >= proc.world for b in _epoch_batches(self.train_enc, cfg, 0))
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.optim = cfg.optim(self.total_steps)
        self.optimizer = self.optim.make_optimizer(self.raw_model, proc.device)
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.ctx.log(f"{n} train examples, {self.describe_labels()}, {self.steps_per_epoch} steps/epoch, "
                     f"{self.total_steps} steps, {num_parameters(self.raw_model) / 1e6:.2f}M parameters, "
                     f"{proc.world} process(es), {proc.device.type}"
                     + (f", {self.train_enc.truncated} truncated to {cfg.max_seq_len} tokens"
                        if self.train_enc.truncated else ""))
        # What eval reads back: the fields, and the train file for its bag-of-words baseline.
        self.extra_config = {**self.head_config(), "mlmctl_finetune": {
            "task": cfg.task, "max_seq_len": cfg.max_seq_len, "text_field": cfg.text_field,
            "text_pair_field": cfg.text_pair_field, "label_field": cfg.label_field, "init": cfg.init,
            "train_file": str(cfg.train_file), "train_sha256": self.train_sha256, "format": cfg.format,
            "has_header": cfg.has_header, **self.finetune_facts()}}
        # What a resumed checkpoint must agree on.
        self.run_meta = {"model": {**asdict(mcfg), "num_labels": self.num_outputs},
                         "data": {"labels": self.labels, "train_examples": n, "batch_size": cfg.batch_size,
                                  "seed": cfg.seed}}

    def _load_or_init(self):
        """The classifier of the input's architecture (config.json `model_type`), loaded or fresh."""
        from mlmctl.model_dir import arch_of, architecture, load_model_dir, read_model_config

        cfg, model_dir, n_labels = self.cfg, self.model_dir, self.num_outputs
        mcfg = read_model_config(model_dir, STAGE, arch=None)
        self.arch = self.with_head(architecture(arch_of(mcfg)))
        if cfg.init == "pretrained":
            model, mcfg, info = load_model_dir(model_dir, self.arch.classifier, num_labels=n_labels,
                                               classifier_dropout=cfg.classifier_dropout)
            fresh = sorted({".".join(k.split(".")[:2]) if k.startswith(("bert.", "model.")) else k.split(".")[0]
                            for k in info["missing"]})
            self.ctx.log(f"loaded {model_dir}; freshly initialised: {', '.join(fresh) or 'nothing'}")
        else:
            self.ctx.log(f"random init with the architecture of {model_dir}")
            model = self.arch.classifier(mcfg, n_labels, classifier_dropout=cfg.classifier_dropout)
        if cfg.classifier_pooling is not None:
            # The forward reads it from the config, and config.json is written from it.
            model.config.classifier_pooling = mcfg.classifier_pooling = cfg.classifier_pooling
        return model, mcfg

    def _class_weights(self):
        import torch

        if self.cfg.class_weights != "balanced":
            return None
        counts = [0] * len(self.labels)
        for y in self.train_enc.labels:
            counts[y] += 1
        return torch.tensor([len(self.train_enc.labels) / (len(self.labels) * c) for c in counts],
                            dtype=torch.float32, device=self.proc.device)

    def resume(self) -> None:
        """Continue from the checkpoint in .work/ (resumable checkpoints never reach the output)."""
        from mlmctl import checkpoint as ckpts
        from mlmctl.model_dir import load_model_dir
        from mlmctl.training import MetricsWriter

        ctx, cfg, proc = self.ctx, self.cfg, self.proc
        ckpt = ckpts.find_resume(STAGE, ctx.work_dir, ctx.opts, ctx.log)
        if ckpt is not None:
            with ckpts.resuming(ckpt, STAGE):
                ckpts.check_compatible(ckpts.read_meta(ckpt), self.run_meta, ckpt, STAGE)
                loaded, _, _ = load_model_dir(ckpt, self.arch.classifier, num_labels=self.num_outputs,
                                              classifier_dropout=cfg.classifier_dropout)
                self.raw_model.load_state_dict(loaded.state_dict())
                state = ckpts.load_trainer_state(ckpt, STAGE)
                self.optimizer.load_state_dict(state["optimizer"])
                self.t = _saved_loop_state(state, self.t)
                self.best_state = state["best_state"]
                if self.best_state is not None and not isinstance(self.best_state, dict):
                    raise TypeError("best_state is not a state dict")
                if self.best_state is None and self.t["best_report"] is not None:
                    self.best_state = _copy_state(self.raw_model)
                ckpts.restore_rng(state["rng"], proc.rank, proc.world, proc.device,
                                  cfg.seed + 1000003 * self.t["step"], ctx.log)
            ctx.log(f"resuming from {ckpt} at step {self.t['step']}")
        self.metrics = MetricsWriter(self.out / METRICS_FILE, ctx.started, enabled=ctx.is_main,
                                     resume_step=self.t["step"] if ckpt is not None else -1,
                                     tensorboard_config=config_to_dict(cfg) if cfg.tensorboard else None)

    def save_best(self) -> None:
        from mlmctl.model_dir import save_model_dir

        if self.ctx.is_main:
            save_model_dir(self.raw_model, self.ctx.work_dir / BEST, tokenizer_dir=self.model_dir,
                           architectures=[self.arch.hf_classifier], extra_config=self.extra_config)

    def save(self) -> None:
        """A resumable checkpoint in .work/ (a collective: every rank calls it)."""
        from mlmctl import checkpoint as ckpts

        t = self.t
        states = ckpts.gather_rng(self.proc.device, self.proc.world)
        if self.ctx.is_main:
            # The best weights travel with the checkpoint unless they are the current ones.
            best = None if t["best_step"] == t["step"] else self.best_state
            ckpts.save_checkpoint(self.ctx.work_dir, t["step"], self.raw_model,
                                  {**t, "optimizer": self.optimizer.state_dict(), "rng": states, "best_state": best},
                                  self.run_meta, tokenizer_dir=self.model_dir,
                                  architectures=self.arch.hf_classifier, keep_last=1,
                                  extra_config=self.extra_config)
        self.proc.barrier()

    def train_step(self, rows: list[int]) -> tuple[float, float]:
        """One optimizer step on this rank's rows of a global batch: (loss, grad norm)."""
        from mlmctl.text_encoder import pad_batch
        from mlmctl.training import NonFiniteLoss, train_step

        enc, device = self.train_enc, self.proc.device
        ids, mask, types = (x.to(device) for x in pad_batch(enc, rows, self.encoder.pad_id))
        y = self.targets(rows).to(device)

        def loss_fn(model, _):
            return model(ids, attention_mask=mask, token_type_ids=types, labels=y,
                         class_weights=self.class_weights)[1]

        step = self.t["step"]
        try:
            return train_step(self.model, self.optimizer, [None], loss_fn, lr=self.optim.lr_at(step),
                              grad_clip=self.optim.grad_clip, proc=self.proc)
        except NonFiniteLoss as e:
            raise MlmctlError(f"finetune: the loss became {e.loss} at step {step}; lower `lr`") from None

    def fit(self) -> None:
        from mlmctl.checkpoint import StopSignals
        from mlmctl.progress import progress

        t, proc = self.t, self.proc
        stop = StopSignals()
        with stop, progress(self.total_steps, STAGE, "steps", enabled=self.ctx.is_main, initial=t["step"]) as bar:
            done = False
            while not done and t["step"] < self.total_steps:
                # a last batch too small to give every process an example is skipped
                batches = [b for b in _epoch_batches(self.train_enc, self.cfg, t["epoch"]) if len(b) >= proc.world]
                while t["pos"] < len(batches):
                    if proc.any(stop.requested):  # every rank stops at the same step boundary
                        self._stop(stop)
                    batch = batches[t["pos"]]
                    t["pos"] += 1
                    t0 = time.perf_counter()
                    self.model.train()
                    loss, gnorm = self.train_step(batch[proc.rank * len(batch) // proc.world:
                                                        (proc.rank + 1) * len(batch) // proc.world])
                    t["step"] += 1
                    t["train_s"] += time.perf_counter() - t0
                    t["loss_sum"], t["loss_count"] = t["loss_sum"] + loss, t["loss_count"] + 1
                    bar.update(1, loss=loss)
                    done = self._after_step(gnorm)
                    if done:
                        break
                t["epoch"], t["pos"] = t["epoch"] + 1, 0

    def _stop(self, stop) -> None:
        from mlmctl.layout import CHECKPOINTS, step_dir_name

        saved = None
        if self.t["step"]:
            self.save()
            saved = self.ctx.work_dir / CHECKPOINTS / step_dir_name(self.t["step"])
        raise stop.interrupted(STAGE, self.t["step"], saved)

    def _after_step(self, gnorm: float) -> bool:
        """The metrics row, the dev evaluation and the checkpoint of this step; True to stop."""
        cfg, t = self.cfg, self.t
        step = t["step"]
        if step % cfg.log_every == 0 or step == self.total_steps:
            self.metrics.write({"step": step, "epoch": t["epoch"], "loss": t["loss_sum"] / t["loss_count"],
                                "lr": self.optim.lr_at(step - 1), "grad_norm": gnorm})
            t["loss_sum"], t["loss_count"] = 0.0, 0
        evaluated = self.dev_enc is not None and (step % self.eval_every == 0 or step == self.total_steps)
        stop = self._evaluate_dev() if evaluated else False
        if stop or step >= self.total_steps:
            return True
        if (cfg.save_every and step % cfg.save_every == 0) or (not cfg.save_every and evaluated):
            self.save()
        return False

    def _evaluate_dev(self) -> bool:
        """Score dev, keep the best weights; True when patience has run out."""
        cfg, t, step, metric = self.cfg, self.t, self.t["step"], self.cfg.selection_metric
        report = self.evaluate(self.dev_enc)
        value = report[metric]
        improved = value > t["best_value"]
        self.metrics.write({"step": step, "epoch": t["epoch"],
                            **{f"dev_{k}": report[k] for k in METRIC_NAMES if k in report}, "best": improved})
        self.ctx.log(f"step {step}: dev {metric} {value:.4f}" + (" (best)" if improved else ""))
        if improved:
            t.update(best_value=value, best_step=step, best_report=report, evals_since_best=0)
            self.best_state = _copy_state(self.raw_model)
            self.save_best()
            return False
        t["evals_since_best"] += 1
        if cfg.patience and t["evals_since_best"] >= cfg.patience:
            self.ctx.log(f"early stop at step {step}: no better dev {metric} "
                         f"for {t['evals_since_best']} evaluations")
            return True
        return False

    def finish(self) -> dict:
        t = self.t
        best_step, best_report = t["best_step"], t["best_report"]
        if self.dev_enc is None:  # no model selection: the last model is the result
            best_step = t["step"]
            self.best_state = _copy_state(self.raw_model)
            self.save_best()
        self.raw_model.load_state_dict(self.best_state)
        test_report = self.evaluate(self.test_enc) if self.test_enc is not None else None
        summary, extra = self._summary(best_step, best_report, test_report)
        if self.ctx.is_main:
            self._place_best(extra)
        self.proc.close()
        summary["model"] = str(self.out / BEST)
        return summary

    def _summary(self, best_step: int, best_report: dict | None, test_report: dict | None) -> tuple[dict, dict]:
        cfg, n = self.cfg, len(self.train_enc.ids)
        summary = {"task": cfg.task, **self.describe_summary(), "train examples": n, "steps": self.t["step"],
                   "best step": best_step}
        extra = {"task": cfg.task, "labels": self.labels, "metric": cfg.selection_metric, "best_step": best_step,
                 "steps": self.t["step"], "epochs_started": self.t["epoch"], "train_examples": n, "init": cfg.init,
                 "model_dir": str(self.model_dir), "seconds": round(time.monotonic() - self.started, 2),
                 "dropped": self.dropped}
        for split, report in (("dev", best_report), ("test", test_report)):
            if report is not None:
                extra[split] = self.brief(report)
                summary.update(self.report_lines(split, report))
        warning = self.warning(test_report or best_report, "test" if test_report else "dev")
        if warning:
            extra["warning"] = summary["warning"] = warning
            self.ctx.log(f"warning: {warning}")
        return summary, extra

    def _place_best(self, extra: dict) -> None:
        ctx, dst = self.ctx, self.out / BEST
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(ctx.work_dir / BEST, dst)
        files = [ctx.describe(f"{BEST}/{p.name}") for p in sorted(dst.iterdir()) if p.is_file()]
        files.append(ctx.describe(METRICS_FILE))
        ctx.finish([], files, extra)

    # -- Task: what sequence classification does differently from other tasks -------------------

    def with_head(self, arch):
        """The architecture whose `classifier` / `hf_classifier` classes this task trains and saves
        (checkpoints and best/ are written through those slots); checks the head's options."""
        if self.cfg.classifier_pooling is not None and arch.name != "modernbert":
            raise MlmctlError(f"finetune: `classifier_pooling` is for modernbert models; {self.model_dir} holds "
                              f"a {arch.name} model (which classifies its pooled [CLS]); remove the key")
        return arch

    def read(self, path: str):
        return _read_labelled(path, self.cfg)

    def set_labels(self, train) -> None:
        """The label set and order (from the train file, or `labels`)."""
        from mlmctl.labelled import label_list

        cfg = self.cfg
        self.labels = label_list(train.labels, cfg.labels or None)
        if len(self.labels) < 2:
            raise InputError(f"finetune: {cfg.train_file} has a single label ({self.labels[0]!r}); "
                             f"need at least 2 classes")
        if cfg.selection_metric == "f1" and len(self.labels) != 2:
            raise InputError(f"finetune: `metric: f1` is the F1 of the positive class of a binary task, but "
                             f"{cfg.train_file} has {len(self.labels)} labels; use macro_f1 or mcc")
        self.label2id = {name: i for i, name in enumerate(self.labels)}
        self.num_outputs = len(self.labels)

    def encode(self, data):
        return self.encoder.encode(data, self.label2id)

    def describe_labels(self) -> str:
        return f"{len(self.labels)} labels"

    def describe_summary(self) -> dict:
        return {"labels": ", ".join(self.labels)}

    def targets(self, rows: list[int]):
        import torch

        return torch.tensor([self.train_enc.labels[r] for r in rows], dtype=torch.long)

    def head_config(self) -> dict:
        """config.json keys of the head, as transformers writes them."""
        return {"id2label": {str(i): x for i, x in enumerate(self.labels)}, "label2id": self.label2id,
                "problem_type": "single_label_classification"}

    def finetune_facts(self) -> dict:
        """Task facts for config.json's `mlmctl_finetune` (eval reads them)."""
        return {}

    def evaluate(self, enc) -> dict:
        from mlmctl.metrics import classification_report
        from mlmctl.text_encoder import predict

        probs = predict(self.raw_model, enc, self.cfg.eval_batch_size, self.encoder.pad_id, self.proc.device)
        return classification_report(enc.labels, probs.argmax(-1).tolist(), self.labels)

    def brief(self, report: dict) -> dict:
        return _brief(report)

    def report_lines(self, split: str, report: dict) -> dict:
        metric = self.cfg.selection_metric
        keys = dict.fromkeys([metric, "accuracy"] if split == "dev" else ["accuracy", "macro_f1", metric])
        return {f"{split} {k}": f"{report[k]:.4f}" for k in keys}

    def warning(self, report: dict | None, split: str) -> str | None:
        return single_class_warning(report, split)


class RegressionFinetuner(Finetuner):
    """`task: regression`: one float label, one output, MSE loss (the model's num_labels 1 path),
    scored by Pearson / Spearman correlation and MSE (metrics.regression_report)."""

    def read(self, path: str):
        return _read_labelled(path, self.cfg, regression=True)

    def set_labels(self, train) -> None:
        self.labels, self.label2id, self.num_outputs = [], None, 1
        self.train_mean = sum(train.labels) / len(train.labels)
        if len(set(train.labels)) < 2:
            raise InputError(f"finetune: every label of {self.cfg.train_file} is {train.labels[0]}; a regression "
                             "task needs targets that vary")

    def encode(self, data):
        enc = self.encoder.encode(data, None)
        enc.labels = list(data.labels)  # floats
        return enc

    def describe_labels(self) -> str:
        return f"regression (train mean {self.train_mean:.4g})"

    def describe_summary(self) -> dict:
        return {"train mean": f"{self.train_mean:.4f}"}

    def targets(self, rows: list[int]):
        import torch

        return torch.tensor([self.train_enc.labels[r] for r in rows], dtype=torch.float32)

    def head_config(self) -> dict:
        # One output named as transformers names it: its config derives num_labels from id2label.
        return {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "problem_type": "regression"}

    def finetune_facts(self) -> dict:
        return {"train_label_mean": self.train_mean}

    def evaluate(self, enc) -> dict:
        from mlmctl.metrics import regression_report
        from mlmctl.text_encoder import predict

        out = predict(self.raw_model, enc, self.cfg.eval_batch_size, self.encoder.pad_id, self.proc.device,
                      raw=True)
        return regression_report(enc.labels, out[:, 0].tolist())

    def brief(self, report: dict) -> dict:
        return dict(report)

    def report_lines(self, split: str, report: dict) -> dict:
        return {f"{split} {k}": f"{report[k]:.4f}" for k in ("pearson", "spearman", "mse")}

    def warning(self, report: dict | None, split: str) -> str | None:
        if not report or not report["undefined"]:
            return None
        return (f"the {split} correlation is undefined ({', '.join(report['undefined'])} reported as 0): the model "
                f"predicts one value for every {split} example, or every {split} label is the same")


TRAINERS = {"classification": Finetuner, "regression": RegressionFinetuner}
"""The trainer of each `task`."""


# ----------------------------------------------------------------------------------------------
# Helpers

def _read_labelled(path: str, cfg: FinetuneConfig, regression: bool = False):
    """read_labelled, with a missing column's error naming the config key that asked for it."""
    from mlmctl.labelled import read_labelled

    try:
        return read_labelled(path, text_field=cfg.text_field, text_pair_field=cfg.text_pair_field,
                             label_field=cfg.label_field, fmt=cfg.format, has_header=cfg.has_header,
                             max_field_chars=cfg.max_field_chars, regression=regression)
    except InputError as e:
        text = str(e)
        for key in ("text_field", "text_pair_field", "label_field"):
            name = getattr(cfg, key)
            if name is not None and (f"no column `{name}`" in text or f"no field `{name}`" in text):
                raise InputError(f"finetune: {text.split('; set the')[0]}; `{key}` is {name!r}: set it to the "
                                 f"right name, e.g. --set {key}=NAME") from None
        raise


def single_class_warning(report: dict | None, split: str) -> str | None:
    """A warning when a classifier's predictions all fall into one class (a collapsed model,
    which scores no better than always answering the majority class)."""
    if not report or len(report.get("labels", [])) < 2:
        return None
    predicted = [name for name, pc in report["per_class"].items() if pc["predicted"] > 0]
    if len(predicted) != 1:
        return None
    return (f"the model predicts a single class ({predicted[0]!r}) for every {split} example; "
            f"it has learnt nothing beyond the majority class (try more steps, another lr, or class_weights: balanced)")


def _copy_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _brief(report: dict) -> dict:
    keys = [k for k in (*METRIC_NAMES, "n") if k in report]
    return {k: report[k] for k in keys} | {"per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()}}


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

