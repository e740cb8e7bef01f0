"""glue: fine-tune one model on every GLUE task present and print the table encoder papers print.

Reads `--input` (a pretrain run, whose final/ is used, or any model directory) and `glue_dir`
(`--glue-dir`), a folder in the layout of the public GLUE release (mlmctl/glue_tasks.py,
docs/glue.md). Nothing is downloaded.

Writes:
    OUT/TASK/data/train.jsonl, dev.jsonl   the task's files as finetune reads them ({"text",
                                           "text_pair", "label"}); MNLI: dev_matched/dev_mismatched.jsonl
    OUT/TASK/seed-S/                       an ordinary finetune run per seed (best/, metrics.jsonl, manifest.json)
    OUT/TASK/seed-S.json                   that run's official figures on every dev file
    OUT/TASK/baseline.json                 bag-of-words and majority-class figures on the same dev files
    OUT/glue.json                          per task: figures per seed, mean ± std, baselines; averages; skipped
    OUT/glue.md, OUT/glue.txt              the table (also printed)
    OUT/manifest.json                      written last

    mlmctl glue -c configs/glue/glue.yaml --glue-dir GLUE --input runs/pretrain --output runs/glue --seeds 3

Every present task's files are read and checked before anything is written (`input_fingerprint`,
which run_stage calls before it touches the output): a task in the wrong layout is one line
naming file and line, and no training starts. Each (task, seed) is fine-tuned with one global
hyper-parameter set (cramming's "GLUE-sane" rule: at most 5 epochs, one lr for every task), its
best dev checkpoint chosen by the task's first official metric (MNLI: on matched dev), and
scored on every dev file with the official metrics. A killed run resumes: a finished sub-run is
"up to date" for finetune and its figures file is reused, an unfinished one continues from its
checkpoint. Runs in one process (no torchrun); `device` picks the GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl import safe_json
from mlmctl.config import check
from mlmctl.errors import Interrupted, MlmctlError
from mlmctl.glue_tasks import TASKS, GlueTask, discover, official_metrics, read_split


@dataclass
class GlueConfig:
    """Fine-tune one model on every GLUE task present; the GLUE dev table with baselines."""

    input: str = "runs/pretrain"
    """Model to fine-tune: a pretrain run directory (uses final/) or a model directory."""
    output: str = "runs/glue"
    """Output directory: one finetune run per task and seed, glue.json, glue.md, glue.txt."""
    glue_dir: str = "GLUE"
    """Folder in the public GLUE release layout (CoLA/train.tsv, MNLI/dev_matched.tsv, ...); `--glue-dir`."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to run, named as in the release (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI); empty = every task present."""
    seeds: int = 1
    """Fine-tuning runs per task, with seeds `seed`, `seed`+1, ...; the table shows mean ± std (`--seeds`)."""
    seed: int = 0
    """First seed (classifier initialisation, data order, dropout)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """pretrained = the input's weights; random = same architecture, fresh weights (what pretraining gives)."""
    epochs: int = 5
    """Passes over each task's train file, the same for every task (cramming's GLUE-sane rule: at most 5)."""
    lr: float = 4e-5
    """Peak learning rate, the same for every task (cramming's GLUE_sane.yaml: 4e-5)."""
    batch_size: int = 16
    """Examples per optimizer step (cramming: 16)."""
    eval_batch_size: int = 128
    """Examples per forward pass when scoring dev."""
    max_seq_len: int = 128
    """Tokens per example including [CLS]/[SEP]; longer pairs are truncated longest-first."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming the learning rate up (cramming: 0.1)."""
    decay: Literal["linear", "cosine", "constant"] = "cosine"
    """Learning-rate decay after warm-up (cramming: cosine)."""
    weight_decay: float = 0.0
    """AdamW weight decay (cramming fine-tunes without)."""
    baseline: bool = True
    """Also fit the bag-of-words baseline (tf-idf + logistic regression; ridge for STS-B) on each train file."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    threads: int | None = None
    """CPU threads for torch (null = torch's default)."""

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        check(not unknown, "tasks", f"unknown task {', '.join(map(repr, unknown))}; GLUE's are {', '.join(TASKS)}")
        check(len(set(self.tasks)) == len(self.tasks), "tasks", "has duplicates")
        check(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        check(self.max_seq_len >= 3, "max_seq_len", "must be at least 3 ([CLS] text [SEP])")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")


CONFIG = GlueConfig
STAGE = "glue"
INPUT_STAGE = None
# What this stage writes besides its manifest's files (outdir.survey; `*` crosses folders).
WRITES = ("glue.json", "glue.md", "glue.txt", "*/data/*", "*/seed-*", "*/baseline.json")
DATA = "data"
BASELINE_FILE = "baseline.json"


def input_fingerprint(cfg: GlueConfig) -> dict[str, dict]:
    """Identity of the model and of every present task's files, which are all read (and so
    checked) here, before run_stage touches the output: a wrong layout stops the run at once."""
    from mlmctl.manifest import fingerprint_parts
    from mlmctl.model_dir import read_model_config, resolve_model_dir

    model_dir = resolve_model_dir(cfg.input, STAGE)
    longest = read_model_config(model_dir, STAGE, arch=None).max_position_embeddings
    if cfg.max_seq_len > longest:  # finetune would refuse it too, but only once the output exists
        raise MlmctlError(f"glue: `max_seq_len` {cfg.max_seq_len} exceeds the model's max_position_embeddings "
                          f"{longest} ({model_dir}/config.json); use --set max_seq_len={longest}")
    present, _ = select_tasks(cfg)
    named = []
    for task in present:
        for name in (task.train_file, *task.dev_files):
            path = Path(cfg.glue_dir) / task.name / name
            read_split(task, path)
            named.append((f"{task.name}/{name}", str(path)))
    return fingerprint_parts(STAGE, model_dir, named)


def _saved(path: Path) -> dict:
    """A JSON object this stage saved in its output on an earlier run (seed scores, a baseline),
    or {} when it is missing or is not one: then it is computed again."""
    try:
        value = safe_json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _per_dev_file(value, task: GlueTask) -> bool:
    """Whether a saved value holds a figures object for each of the task's dev files."""
    return isinstance(value, dict) and all(isinstance(value.get(name), dict) for name in task.dev_files)


def select_tasks(cfg: GlueConfig) -> tuple[list[GlueTask], dict[str, str]]:
    """The tasks to run and why each other one is skipped."""
    present, skipped = discover(cfg.glue_dir)
    if cfg.tasks:
        chosen = [t for t in present if t.name in cfg.tasks]
        if not chosen:
            raise MlmctlError(f"glue: none of `tasks` ({', '.join(cfg.tasks)}) is in {cfg.glue_dir}; "
                              f"it holds {', '.join(t.name for t in present)}")
        skipped.update({t.name: "not in `tasks`" for t in present if t not in chosen})
        present = chosen
    return present, {k: skipped[k] for k in TASKS if k in skipped}


def run(ctx) -> dict:
    from mlmctl import glue_report
    from mlmctl.progress import print_table
    from mlmctl.shards import atomic_write_text

    cfg: GlueConfig = ctx.cfg
    present, skipped = select_tasks(cfg)
    for name, why in skipped.items():
        ctx.log(f"skipping {name}: {why}")
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    results = {}
    for i, task in enumerate(present):
        splits = {name: read_split(task, Path(cfg.glue_dir) / task.name / name)
                  for name in (task.train_file, *task.dev_files)}
        data_dir = _convert(ctx.output_dir / task.name / DATA, task, splits)
        runs = []
        for s in seeds:
            ctx.log(f"{task.name} ({i + 1}/{len(present)}), seed {s}: fine-tuning")
            runs.append(_seed_run(ctx, task, data_dir, splits, s))
        results[task.name] = {"runs": runs, "examples": {k: len(v) for k, v in splits.items()},
                              "baselines": _baselines(ctx, task, splits) if cfg.baseline else {}}

    meta = {"model": cfg.input, "glue_dir": cfg.glue_dir, "hyperparameters": _hyperparameters(cfg)}
    report = glue_report.build(results, skipped, seeds, meta)
    out = ctx.output_dir
    # Not atomic_write_json: it sorts keys, and glue.json keeps the tasks in the order papers print.
    atomic_write_text(out / "glue.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "glue.md", glue_report.render(report, markdown=True))
    atomic_write_text(out / "glue.txt", glue_report.render(report, markdown=False))
    print_table(glue_report.title(report), glue_report.HEADER, glue_report.table_rows(report))
    for line in glue_report.footer(report):
        print(line)
    avg = report["average"]
    extra = {"average": avg["model"], "tasks": list(report["tasks"]), "skipped": skipped, "seeds": seeds}
    ctx.finish([], [ctx.describe(n) for n in ("glue.json", "glue.md", "glue.txt")], extra)
    return {"tasks": ", ".join(report["tasks"]), "seeds": len(seeds),
            "average": glue_report.table_rows(report)[len(report["tasks"])][2],
            "table": str(Path(cfg.output) / "glue.md")}  # not ctx.output_dir: a --rebuild is swapped in


# ----------------------------------------------------------------------------------------------
# One task


def _convert(data_dir: Path, task: GlueTask, splits: dict) -> Path:
    """Each split as the JSONL finetune reads, written atomically; kept when already there (a
    resumed run has the same input, so the same files)."""
    from mlmctl.shards import atomic_write_text

    for name, data in splits.items():
        path = data_dir / _jsonl(name)
        if path.exists():
            continue
        pairs = data.pairs or [None] * len(data)
        # Labels as strings: finetune's reader takes strings or integers, and STS-B's scores
        # ("4.25") stay exactly as the release wrote them.
        lines = (json.dumps({"text": t, "text_pair": p, "label": str(y)}, ensure_ascii=False)
                 for t, p, y in zip(data.texts, pairs, data.labels))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(x + "\n" for x in lines))
    return data_dir


def _jsonl(tsv_name: str) -> str:
    return tsv_name.removesuffix(".tsv") + ".jsonl"


def _seed_run(ctx, task: GlueTask, data_dir: Path, splits: dict, seed: int) -> dict:
    """Fine-tune (or find finished) OUT/TASK/seed-S and score it on every dev file."""
    from mlmctl.manifest import manifest_hash
    from mlmctl.shards import atomic_write_json
    from mlmctl.stage import RunOptions, run_stage
    from mlmctl.stages import finetune

    cfg, rel = ctx.cfg, f"{task.name}/seed-{seed}"
    run_dir, scores_file = ctx.output_dir / rel, ctx.output_dir / f"{rel}.json"
    keys = _finetune_keys(cfg, task, data_dir, seed)
    keys["output"] = str(run_dir)
    try:
        run_stage(finetune, None, [f"{k}={json.dumps(v)}" for k, v in keys.items()], opts=RunOptions())
    except Interrupted:
        raise
    except MlmctlError as e:
        raise type(e)(f"glue: {task.name}, seed {seed}: {e}") from None
    run_hash = manifest_hash(run_dir)
    saved = _saved(scores_file)
    if saved.get("finetune_manifest") == run_hash and _per_dev_file(saved.get("dev"), task):
        return {"seed": seed, "run": rel, "dev": saved["dev"]}
    dev = {name: official_metrics(task, splits[name].labels, _predict(ctx, run_dir / "best", task, splits[name]))
           for name in task.dev_files}
    atomic_write_json(scores_file, {"finetune_manifest": run_hash, "dev": dev})
    return {"seed": seed, "run": rel, "dev": dev}


def _finetune_keys(cfg: GlueConfig, task: GlueTask, data_dir: Path, seed: int) -> dict:
    """The finetune config of one (task, seed): the global hyper-parameters, the task's files,
    label set and selection metric (its first official metric: mcc, f1, pearson or accuracy)."""
    keys = {
        "input": cfg.input, "train_file": str(data_dir / _jsonl(task.train_file)),
        "dev_file": str(data_dir / _jsonl(task.dev_files[0])), "format": "jsonl", "text_field": "text",
        "text_pair_field": "text_pair" if task.pair is not None else None, "label_field": "label",
        "metric": task.metrics[0], "seed": seed, "device": cfg.device, "threads": cfg.threads,
        **_hyperparameters(cfg),
    }
    if task.is_regression:
        keys["task"] = "regression"
    else:
        keys["labels"] = list(task.labels)  # the release's label order, whatever the train file holds
    return keys


def _hyperparameters(cfg: GlueConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("init", "epochs", "lr", "batch_size", "eval_batch_size", "max_seq_len",
                                         "warmup_ratio", "decay", "weight_decay")}


def _predict(ctx, model_dir: Path, task: GlueTask, data) -> list:
    """The fine-tuned model's predictions on one split: labels, or floats for STS-B."""
    import torch

    from mlmctl.devices import pick_device
    from mlmctl.head_config import head_labels
    from mlmctl.model_dir import load_own_arch
    from mlmctl.text_encoder import TextEncoder, pad_batch

    cfg = ctx.cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, STAGE)
    raw = safe_json.read_json_file(model_dir / "config.json", STAGE)
    labels = head_labels(raw, model_dir, STAGE)
    model, _, _ = load_own_arch(model_dir, "classifier", STAGE, num_labels=1 if task.is_regression else len(labels))
    model.to(device).eval()
    encoder = TextEncoder(model_dir, cfg.max_seq_len, STAGE)
    enc = encoder.encode(data, None)
    out: list = [None] * len(enc.ids)
    order = sorted(range(len(enc.ids)), key=lambda r: len(enc.ids[r]))  # similar lengths pad little
    with torch.no_grad():
        for s in range(0, len(order), cfg.eval_batch_size):
            rows = order[s:s + cfg.eval_batch_size]
            ids, mask, types = (t.to(device) for t in pad_batch(enc, rows, encoder.pad_id))
            logits = model(ids, attention_mask=mask, token_type_ids=types)[0].float().cpu()  # (B, K)
            values = logits[:, 0].tolist() if task.is_regression else [labels[j] for j in logits.argmax(-1).tolist()]
            for r, v in zip(rows, values):
                out[r] = v
    return out


def _baselines(ctx, task: GlueTask, splits: dict) -> dict:
    """Bag-of-words (mlmctl.baseline) and majority-class figures on every dev file, cached in
    OUT/TASK/baseline.json (deterministic fits, so a resumed run may reuse them)."""
    from collections import Counter

    from mlmctl.baseline import BowBaseline
    from mlmctl.shards import atomic_write_json

    path = ctx.output_dir / task.name / BASELINE_FILE
    saved = _saved(path)
    if _per_dev_file(saved.get("bow"), task) and _per_dev_file(saved.get("majority"), task):
        return saved
    ctx.log(f"{task.name}: fitting the bag-of-words baseline")
    train = splits[task.train_file]
    if task.is_regression:
        bow = BowBaseline().fit(train.texts, train.labels, train.pairs)
        constant = sum(train.labels) / len(train.labels)
        decode = lambda pred: pred  # noqa: E731
    else:
        ids = {lab: i for i, lab in enumerate(task.labels)}
        bow = BowBaseline().fit(train.texts, [ids[y] for y in train.labels], train.pairs, len(task.labels))
        counts = Counter(train.labels)
        constant = max(task.labels, key=lambda lab: counts[lab])  # ties: the first in the release's order
        decode = lambda pred: [task.labels[i] for i in pred]  # noqa: E731
    out: dict = {"bow": {}, "majority": {}}
    for name in task.dev_files:
        dev = splits[name]
        out["bow"][name] = official_metrics(task, dev.labels, decode(bow.predict(dev.texts, dev.pairs)))
        out["majority"][name] = official_metrics(task, dev.labels, [constant] * len(dev))
    atomic_write_json(path, out)
    return out
