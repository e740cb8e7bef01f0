"""eval: score a model directory and write `eval.json`.

Two modes, chosen from the model directory (`mode: auto`) or forced by the config:

- classifier (config.json `architectures` names a *ForSequenceClassification model): accuracy,
  precision / recall / F1 per class and macro / micro / weighted averages, Matthews correlation
  (and the positive-class F1 of a binary task), and the confusion matrix on a labelled
  `test_file` (see mlmctl/metrics.py for the conventions), plus the majority-class baseline of
  the test file. A regression model (`problem_type: regression`) gets Pearson, Spearman and MSE
  instead, beside the train-mean predictor. Both get the tf-idf bag-of-words baseline
  (mlmctl/baseline.py) trained on the model's own train file (recorded by finetune in
  config.json); a train file that is gone is reported as skipped. `predictions: true` also
  writes predictions.jsonl (with the baseline's prediction per example).
- tagger (`*ForTokenClassification`): entity-level P/R/F1 (seqeval's strict mode), per entity type,
  token accuracy, the every-token-O / majority-tag baselines, on a CoNLL or JSONL tagged file
  (mlmctl/eval_tokens.py).
- mlm (anything else): masked-LM loss and perplexity on held-out data: the `split` of a
  build-vocab directory (`data`) or raw text files (`text_files`, tokenised with the model's
  own tokenizer.json). Masks are a pure function of (seed, sequence index), so the same config
  gives the same number. The headline `mlm_ppl` replaces every chosen token by [MASK] (leak-free);
  `mlm_ppl_801010` scores the same positions with pretraining's 80/10/10 replacement. Also top-1
  and top-5 accuracy, the add-one-smoothed unigram perplexity of the same positions, and
  pseudo-perplexity on request.

Every figure carries a 95% bootstrap interval (`<figure>_ci`), resampling documents (mlm) or
examples (classifier), seeded by `seed` (mlmctl/bootstrap.py; docs/eval.md says how to read them).

Reads: `--input` a model directory, or a pretrain run (its final/) or finetune run (its best/).
Writes: `OUTPUT/eval.json` (+ `predictions.jsonl`) and `manifest.json`.

    mlmctl eval -c configs/demo/eval.yaml --input runs/demo/finetune/best --output runs/demo/eval \\
        --set test_file=data/demo/task/test.tsv
    mlmctl eval -c configs/demo/eval-mlm.yaml --input runs/demo/pretrain --output runs/demo/eval-mlm \\
        --set data=data/demo/vocab
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check
from mlmctl.errors import InputError, MlmctlError
from mlmctl.layout import EVAL_JSON, PREDICTIONS
from mlmctl.masking import Masking



@dataclass
class EvalConfig:
    """Score a classifier on a labelled file, or a pretrained model's masked-LM perplexity."""

    input: str = "runs/finetune/best"
    """Model directory, or a pretrain run (uses final/) or finetune run (uses best/)."""
    output: str = "runs/eval"
    """Directory for eval.json (+ predictions.jsonl) and manifest.json."""
    mode: Literal["auto", "classifier", "tagger", "mlm"] = "auto"
    """auto = classifier when config.json's architectures names *ForSequenceClassification, tagger for
    *ForTokenClassification."""
    batch_size: int = 64
    """Examples (classifier) or sequences (mlm) per forward pass."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    threads: int | None = None
    """CPU threads for torch (null = torch's default)."""
    # -- classifier
    test_file: str | None = None
    """Classifier: labelled file to score (.tsv, .csv or .jsonl, optionally .gz)."""
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    """Classifier: file format; auto = from the file name."""
    has_header: bool = True
    """Classifier: TSV/CSV first row names the columns."""
    text_field: str | None = None
    """Classifier: text column (null = the one the model was fine-tuned with, else "text")."""
    text_pair_field: str | None = None
    """Classifier: second-text column for pair tasks (null = as fine-tuned)."""
    label_field: str | None = None
    """Classifier: label column (null = as fine-tuned, else "label")."""
    max_seq_len: int | None = None
    """Tokens per example (classifier) or sequence (mlm); null = as fine-tuned, else 128 (mlm: at most the
    model's max_position_embeddings). A value above max_position_embeddings is an error, never cut silently."""
    predictions: bool = True
    """Classifier: also write predictions.jsonl (index, gold, predicted, correct, probabilities, the baseline's
    prediction; regression: gold, predicted, error), which `mlmctl report` needs for its paired comparisons."""
    baseline: bool = True
    """Classifier: also train and score the tf-idf bag-of-words baseline (logistic regression; ridge for a
    regression model) on the model's own train file (eval.json `baseline`)."""
    baseline_train_file: str | None = None
    """Classifier: train file of the baseline (null = the one the model was fine-tuned on, recorded in its
    config.json; skipped, and said so, when that file is gone or changed)."""
    max_field_chars: int = 10_000_000
    """Classifier: longest TSV/CSV field accepted, in characters (a longer one is an error naming its line)."""
    # -- mlm
    data: str | None = None
    """MLM: build-vocab directory whose `split` is scored (its train split gives the unigram)."""
    split: str = "validation"
    """MLM: split of `data` to score."""
    text_files: list[str] = field(default_factory=list)
    """MLM: raw text files to score instead of `data` (.txt or .txt.gz; a blank line separates
    documents), tokenised with the model's tokenizer."""
    max_sequences: int = 0
    """MLM: score at most this many sequences (0 = all)."""
    mask_prob: float = 0.15
    """MLM: fraction of (non-special) tokens masked per sequence."""
    mask_token_prob: float = 0.8
    """MLM: for `mlm_ppl_801010` only, chosen tokens become [MASK] with this probability (min(0.1, 1 - this)
    random, rest kept), as in pretraining; the headline `mlm_ppl` masks every chosen token."""
    seed: int = 0
    """Seed of the masks (mlm) and of the bootstrap resamples."""
    pppl: bool = False
    """MLM: also compute pseudo-perplexity (mask each token in turn; one forward row per token)."""
    pppl_tokens: int = 16000
    """MLM: pseudo-perplexity over the first documents up to about this many tokens (whole documents)."""
    bootstrap_resamples: int = 1000
    """Resamples for the 95% bootstrap intervals (documents for mlm, examples for classifiers); 0 = none."""
    # -- tagger (token classification); null = as the model was fine-tuned
    tag_format: Literal["auto", "conll", "jsonl"] | None = None
    """Tagger: test file layout (null = as fine-tuned, else auto: JSONL for .jsonl/.json, else CoNLL)."""
    tag_column: int | None = None
    """Tagger, CoNLL: column of the tag (null = as fine-tuned, else -1, the last)."""
    tokens_field: str | None = None
    """Tagger, JSONL: field of the word list (null = as fine-tuned, else "tokens")."""
    tags_field: str | None = None
    """Tagger, JSONL: field of the tag list (null = as fine-tuned, else "tags")."""
    tag_scheme: Literal["iob1", "iob2", "iobes", "none"] | None = None
    """Tagger: tag scheme (null = as fine-tuned, else iob2); none = token accuracy only."""
    ill_formed: Literal["repair", "error"] | None = None
    """Tagger: an I-/E- tag continuing no entity in the test file: repair (as seqeval's non-strict mode reads it, counted) or error (null = as fine-tuned, else repair)."""

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(self.max_seq_len is None or self.max_seq_len >= 3, "max_seq_len", "must be at least 3 or null")
        check(self.max_sequences >= 0, "max_sequences", "must be >= 0 (0 = all)")
        self.masking()  # the shared type checks mask_prob and mask_token_prob
        check(self.pppl_tokens >= 1, "pppl_tokens", "must be >= 1")
        check(self.bootstrap_resamples == 0 or self.bootstrap_resamples >= 100, "bootstrap_resamples",
              "must be 0 (no intervals) or >= 100 (fewer make the 2.5% tails meaningless)")
        check(self.max_field_chars >= 1, "max_field_chars", "must be >= 1")
        check(self.tag_column is None or (self.tag_column != 0 and -100 <= self.tag_column <= 100), "tag_column",
              "must be a column index in [-100, 100] other than 0, the token (-1 = the last column), or null")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(not (self.data and self.text_files), "text_files", "give either `data` or `text_files`, not both")

    def masking(self) -> Masking:
        """The masking of the mlm figures: pretraining's type, its random share derived from
        `mask_token_prob` (0.1, or what is left when `mask_token_prob` > 0.9)."""
        return Masking(mask_prob=self.mask_prob, mask_token_prob=self.mask_token_prob,
                       random_token_prob=min(0.1, 1 - self.mask_token_prob))


CONFIG = EvalConfig
STAGE = "eval"
INPUT_STAGE = None


def input_fingerprint(cfg: EvalConfig) -> dict[str, dict]:
    from mlmctl.model_dir import resolve_model_dir
    from mlmctl.layout import MANIFEST
    from mlmctl.manifest import fingerprint_parts

    model_dir = resolve_model_dir(cfg.input, STAGE)
    named = [("test_file", cfg.test_file), ("baseline_train_file", _baseline_train_file(cfg, model_dir))]
    if cfg.data:
        named.append(("data", str(Path(cfg.data) / MANIFEST)))
    named += [(f"text_files[{i}]", p) for i, p in enumerate(cfg.text_files)]
    return fingerprint_parts(STAGE, model_dir, named)


def _baseline_train_file(cfg: EvalConfig, model_dir: Path) -> str | None:
    """The baseline's train file when it is read (it is an input then): the configured one, or the
    one the model records, when that one still exists."""
    if not cfg.baseline or not cfg.test_file:
        return None
    if cfg.baseline_train_file:
        return cfg.baseline_train_file
    try:
        recorded = (_read_config(model_dir).get("mlmctl_finetune") or {}).get("train_file")
    except InputError:
        return None  # not a model directory eval can read: run() says so
    return recorded if isinstance(recorded, str) and Path(recorded).is_file() else None


def run(ctx) -> dict:
    import torch

    from mlmctl.devices import pick_device
    from mlmctl.model_dir import resolve_model_dir
    from mlmctl.shards import atomic_write_json

    cfg: EvalConfig = ctx.cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, "eval")
    model_dir = resolve_model_dir(cfg.input, STAGE)
    raw_cfg = _read_config(model_dir)
    from mlmctl.eval_tokens import is_tagger_config

    found = ("tagger" if is_tagger_config(raw_cfg, model_dir)
             else "classifier" if is_classifier_config(raw_cfg, model_dir) else "mlm")
    mode = found if cfg.mode == "auto" else cfg.mode
    if {mode, found} == {"tagger", "classifier"}:  # the same `classifier.*` keys would load, silently wrong
        raise InputError(f"eval: {model_dir} is a {'token' if found == 'tagger' else 'sequence'} classifier "
                         f"(config.json), not a {'sequence classifier' if mode == 'classifier' else 'tagger'}; "
                         "use mode: auto")
    ctx.log(f"{model_dir}: {mode} evaluation")
    if mode == "tagger":
        from mlmctl.eval_tokens import eval_tagger

        result, summary, preds = eval_tagger(ctx, cfg, model_dir, raw_cfg, device)
    elif mode == "classifier":
        result, summary, preds = _eval_classifier(ctx, cfg, model_dir, raw_cfg, device)
    else:
        result, summary = _eval_mlm(ctx, cfg, model_dir, device)
        preds = None
    result = {"mode": mode, "model": str(model_dir), **result}

    files = []
    if ctx.is_main:
        atomic_write_json(ctx.output_dir / EVAL_JSON, result)
        files.append(ctx.describe(EVAL_JSON))
        if preds is not None:
            from mlmctl.shards import atomic_write_text

            atomic_write_text(ctx.output_dir / PREDICTIONS, "".join(json.dumps(p) + "\n" for p in preds))
            files.append(ctx.describe(PREDICTIONS))
    summ = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ctx.finish([], files, {"mode": mode, **summ})
    return summary


def is_classifier_config(raw: dict, model_dir: Path) -> bool:
    """config.json of a sequence classifier? HF writes a default id2label into every config, so
    only `architectures` (or mlmctl's own finetune marker) decides."""
    from mlmctl.head_config import architectures

    archs = architectures(raw, model_dir, STAGE)
    return any(a.endswith("ForSequenceClassification") for a in archs) or "mlmctl_finetune" in raw


# ----------------------------------------------------------------------------------------------
# Classifier


def _eval_classifier(ctx, cfg: EvalConfig, model_dir: Path, raw: dict, device):
    """A sequence classifier or regressor (config.json `problem_type`) on `test_file`, with its baselines."""
    if not cfg.test_file:
        raise MlmctlError("eval: classifier evaluation needs `test_file` (e.g. --set test_file=data/task/test.tsv)")
    from mlmctl.head_config import head_labels, problem_type

    labels = head_labels(raw, model_dir, STAGE)
    kind = problem_type(raw, model_dir, STAGE)
    ft = raw.get("mlmctl_finetune") or {}
    regression = kind == "regression" or (kind is None and len(labels) == 1)
    if regression and len(labels) > 1:  # a regressor has one output; which figure would we read?
        raise InputError(f"eval: {model_dir}/config.json says problem_type regression but id2label has "
                         f"{len(labels)} labels; a regressor has one output: fix config.json")
    if len(labels) < 2 and not regression:
        raise InputError(f"eval: {model_dir}/config.json has no id2label with at least 2 labels; is it a classifier?")
    fields = {"text_field": cfg.text_field or ft.get("text_field") or "text",
              "text_pair_field": cfg.text_pair_field or ft.get("text_pair_field"),
              "label_field": cfg.label_field or ft.get("label_field") or "label"}
    max_len = cfg.max_seq_len or ft.get("max_seq_len") or 128
    data = _read_test(cfg, model_dir, fields, regression)
    model, encoder = _load_classifier(cfg, model_dir, 1 if regression else len(labels),
                                      fields["text_pair_field"] is not None, max_len, device)
    if regression:
        return _score_regression(ctx, cfg, model_dir, ft, data, model, encoder, device)
    return _score_classifier(ctx, cfg, ft, data, labels, model, encoder, device)


def _read_test(cfg: EvalConfig, model_dir: Path, fields: dict, regression: bool):
    from mlmctl.labelled import read_labelled

    try:
        return read_labelled(cfg.test_file, **fields, fmt=cfg.format, has_header=cfg.has_header,
                             max_field_chars=cfg.max_field_chars, regression=regression)
    except InputError as e:
        if regression and "is not a number" in str(e):  # say why a number is expected
            raise InputError(f"eval: {model_dir} is a regression model, so labels must be numbers: {e}") from None
        raise


def _load_classifier(cfg: EvalConfig, model_dir: Path, num_labels: int, pairs: bool, max_len: int, device):
    """The model (own architecture, on `device`) and the text encoder, checked against each other."""
    from mlmctl.model_dir import load_own_arch
    from mlmctl.text_encoder import TextEncoder

    encoder = TextEncoder(model_dir, max_len, STAGE)
    model, mcfg, info = load_own_arch(model_dir, "classifier", STAGE, num_labels=num_labels)
    encoder.check_fits(mcfg, model_dir, STAGE, pairs=pairs and hasattr(mcfg, "type_vocab_size"))
    if max_len > mcfg.max_position_embeddings:
        raise MlmctlError(f"eval: `max_seq_len` {max_len} exceeds the model's max_position_embeddings "
                          f"{mcfg.max_position_embeddings}")
    if any(k.startswith("classifier.") for k in info["missing"]):
        raise InputError(f"eval: {model_dir} has no trained classifier head (classifier.* weights); "
                         "is it a fine-tuned model? use `mode: mlm` for a pretrained one")
    return model.to(device), encoder


def _score_classifier(ctx, cfg: EvalConfig, ft: dict, data, labels: list[str], model, encoder, device):
    from mlmctl.metrics import classification_report, majority_baseline
    from mlmctl.text_encoder import predict

    enc = encoder.encode(data, {x: i for i, x in enumerate(labels)})
    probs = predict(model, enc, cfg.batch_size, encoder.pad_id, device)
    pred = probs.argmax(-1).tolist()
    report = classification_report(enc.labels, pred, labels)
    # The majority class of the test file itself: the score of the best constant guess.
    report["majority_baseline_accuracy"] = majority_baseline(enc.labels, enc.labels, labels)["accuracy"]
    report["test_file"] = str(cfg.test_file)
    report["truncated"] = enc.truncated
    report["dropped"] = data.dropped
    _add_classifier_intervals(report, enc.labels, pred, cfg)
    report["baseline"], bow_pred = _bow_baseline(ctx, cfg, ft, data, labels)
    _log_confusion(ctx, report)
    summary = {"examples": report["n"], **{k: _fmt(report, k, 4) for k in _SUMMARY_KEYS if k in report},
               "majority baseline": f"{report['majority_baseline_accuracy']:.4f}",
               "tf-idf baseline": _baseline_line(report["baseline"], ("accuracy", "macro_f1"))}
    for name, pc in report["per_class"].items():
        summary[f"  {name}"] = (f"P {pc['precision']:.3f}  R {pc['recall']:.3f}  F1 {_fmt(pc, 'f1', 3)}  "
                                f"n={pc['support']}")
    from mlmctl.stages.finetune import single_class_warning

    warning = single_class_warning(report, "test")
    if warning:  # a collapsed classifier: say so next to its figures
        report["warning"] = summary["warning"] = warning
        ctx.log(f"warning: {warning}")
    preds = None
    if cfg.predictions:
        preds = [{"index": i, "label": labels[g], "prediction": labels[p], "correct": g == p,
                  "probs": {x: round(float(v), 6) for x, v in zip(labels, probs[i].tolist())}}
                 for i, (g, p) in enumerate(zip(enc.labels, pred))]
        if bow_pred is not None:  # for the paired model-vs-baseline comparison of `mlmctl report`
            for row, b in zip(preds, bow_pred):
                row["baseline_prediction"] = labels[b]
    return report, summary, preds


_SUMMARY_KEYS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "f1")


def _score_regression(ctx, cfg: EvalConfig, model_dir: Path, ft: dict, data, model, encoder, device):
    """Pearson / Spearman / MSE with intervals, beside the train-mean predictor and the tf-idf baseline."""
    from mlmctl.metrics import mean_squared_error, regression_report
    from mlmctl.text_encoder import predict

    enc = encoder.encode(data, None)
    gold = list(data.labels)
    pred = predict(model, enc, cfg.batch_size, encoder.pad_id, device, raw=True)[:, 0].tolist()
    report = {"task": "regression", **regression_report(gold, pred)}
    _add_regression_intervals(report, gold, pred, cfg)
    mean = ft.get("train_label_mean")
    if isinstance(mean, (int, float)):
        report["mean_baseline"] = {"train_mean": mean, "mse": mean_squared_error(gold, [mean] * len(gold))}
    else:
        report["mean_baseline"] = {"skipped": f"{model_dir}/config.json records no train_label_mean "
                                              "(not fine-tuned by mlmctl)"}
    report.update(test_file=str(cfg.test_file), truncated=enc.truncated, dropped=data.dropped)
    report["baseline"], bow_pred = _bow_baseline(ctx, cfg, ft, data, None)
    summary = {"examples": report["n"], **{k: _fmt(report, k, 4) for k in ("pearson", "spearman", "mse")},
               "train-mean baseline": (f"mse {report['mean_baseline']['mse']:.4f}" if "mse" in report["mean_baseline"]
                                       else "skipped"),
               "tf-idf baseline": _baseline_line(report["baseline"], ("pearson", "spearman", "mse"))}
    if report["undefined"]:
        report["warning"] = summary["warning"] = (f"{', '.join(report['undefined'])} undefined (reported as 0): "
                                                  "the model predicts one value for every example, or every "
                                                  "label is the same")
        ctx.log(f"warning: {report['warning']}")
    preds = None
    if cfg.predictions:
        # Unrounded: rounding makes ties, and the ranks of `spearman` recomputed from this file would differ.
        preds = [{"index": i, "label": g, "prediction": float(p), "error": float(p - g)}
                 for i, (g, p) in enumerate(zip(gold, pred))]
        if bow_pred is not None:
            for row, b in zip(preds, bow_pred):
                row["baseline_prediction"] = float(b)
    return report, summary, preds


def _add_regression_intervals(report: dict, gold: list[float], pred: list[float], cfg: EvalConfig) -> None:
    if cfg.bootstrap_resamples:
        from mlmctl.bootstrap import regression_intervals

        for key, ci in regression_intervals(gold, pred, cfg.bootstrap_resamples, cfg.seed).items():
            report[f"{key}_ci"] = list(ci)
    report["intervals"] = _interval_note(cfg, "examples", len(gold))


def _bow_baseline(ctx, cfg: EvalConfig, ft: dict, test, labels: list[str] | None):
    """(eval.json's `baseline`, its test predictions or None): the tf-idf bag-of-words baseline
    (mlmctl.baseline) trained on the model's own train file, scored like the model. A train file
    that is gone or changed is reported as `skipped` with the reason, not an error."""
    from mlmctl.shards import file_sha256

    if not cfg.baseline:
        return {"skipped": "turned off (baseline: false)"}, None
    path = cfg.baseline_train_file or ft.get("train_file")
    skipped = None
    if path is None:
        skipped = "the model's config.json records no train file; set `baseline_train_file`"
    elif not Path(path).is_file():
        skipped = (f"the train file {path} the model was fine-tuned on is gone; "
                   "set `baseline_train_file` to score the baseline")
    elif not cfg.baseline_train_file and ft.get("train_sha256") not in (None, file_sha256(path)):
        skipped = (f"the train file {path} has changed since fine-tuning (sha256 differs); "
                   "set `baseline_train_file` to use it anyway")
    if skipped:
        ctx.log(f"tf-idf baseline skipped: {skipped}")
        return {"skipped": skipped}, None
    train = _read_baseline_train(cfg, ft, path, labels is None)
    figures, pred = _fit_bow(train, test, labels, cfg)
    kind = "tfidf-ridge" if labels is None else "tfidf-logreg"
    return {"kind": kind, "train_file": str(path), "train_sha256": file_sha256(path),
            "train_examples": len(train), **figures}, pred


def _read_baseline_train(cfg: EvalConfig, ft: dict, path: str, regression: bool):
    """The train file as finetune read it (its recorded fields and format)."""
    from mlmctl.labelled import read_labelled

    return read_labelled(path, text_field=ft.get("text_field") or cfg.text_field or "text",
                         text_pair_field=ft.get("text_pair_field") or cfg.text_pair_field,
                         label_field=ft.get("label_field") or cfg.label_field or "label",
                         fmt=ft.get("format", "auto"), has_header=ft.get("has_header", True),
                         max_field_chars=cfg.max_field_chars, regression=regression)


def _fit_bow(train, test, labels: list[str] | None, cfg: EvalConfig):
    """Figures (with intervals) and test predictions of BowBaseline: logistic regression over
    `labels`, or ridge regression when `labels` is None."""
    from mlmctl.baseline import BowBaseline
    from mlmctl.labelled import encode_labels
    from mlmctl.metrics import classification_report, regression_report

    if labels is None:
        bow = BowBaseline().fit(train.texts, train.labels, train.pairs)
        pred = bow.predict(test.texts, test.pairs)
        figures = regression_report(test.labels, pred)
        _add_regression_intervals(figures, test.labels, pred, cfg)
        figures.pop("intervals")
        return figures, pred
    label2id = {x: i for i, x in enumerate(labels)}
    bow = BowBaseline().fit(train.texts, encode_labels(train, label2id), train.pairs, len(labels))
    gold, pred = encode_labels(test, label2id), bow.predict(test.texts, test.pairs)
    full = classification_report(gold, pred, labels)
    full["labels"] = labels
    _add_classifier_intervals(full, gold, pred, cfg)
    keys = [k for k in ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "weighted_f1",
                        "mcc", "f1", "positive_label") if k in full]
    figures = {k: full[k] for k in keys} | {f"{k}_ci": full[f"{k}_ci"] for k in keys if f"{k}_ci" in full}
    figures["per_class_f1"] = {name: pc["f1"] for name, pc in full["per_class"].items()}
    return figures, pred


def _baseline_line(baseline: dict, keys) -> str:
    if "skipped" in baseline:
        return f"skipped ({baseline['skipped']})"
    return ", ".join(f"{k} {_fmt(baseline, k, 4)}" for k in keys)


def _add_classifier_intervals(report: dict, gold: list[int], pred: list[int], cfg: EvalConfig) -> None:
    """`<figure>_ci` beside every scalar figure and every per-class P/R/F1, resampling examples."""
    if not cfg.bootstrap_resamples:
        report["intervals"] = _interval_note(cfg, "examples", len(gold))
        return
    from mlmctl.bootstrap import classification_intervals

    cis = classification_intervals(gold, pred, len(report["labels"]), cfg.bootstrap_resamples, cfg.seed)
    for key, ci in cis.items():
        if key != "per_class" and key in report:
            report[f"{key}_ci"] = list(ci)
    for name, pc in zip(report["labels"], cis["per_class"]):
        for m, ci in pc.items():
            report["per_class"][name][f"{m}_ci"] = list(ci)
    report["intervals"] = _interval_note(cfg, "examples", len(gold))


def _log_confusion(ctx, report: dict) -> None:
    labels = report["labels"]
    w = max(6, *(len(x) for x in labels)) + 1
    ctx.log("confusion matrix (rows = gold, columns = predicted):")
    ctx.log(" " * w + "".join(f"{x[:w - 1]:>{w}}" for x in labels))
    for name, row in zip(labels, report["confusion_matrix"]):
        ctx.log(f"{name[:w - 1]:<{w}}" + "".join(f"{v:>{w}}" for v in row))


# ----------------------------------------------------------------------------------------------
# Masked LM


def _eval_mlm(ctx, cfg: EvalConfig, model_dir: Path, device):
    import numpy as np

    from mlmctl.text_encoder import TextEncoder
    from mlmctl.mlm_scoring import score_masked
    from mlmctl.model_dir import MLM_HEAD_PREFIXES, load_own_arch

    model, mcfg, info = load_own_arch(model_dir, "masked_lm", STAGE)
    if any(k.startswith(MLM_HEAD_PREFIXES) for k in info["missing"]):
        raise InputError(f"eval: {model_dir} has no masked-LM head (cls.predictions.*); "
                         "for a fine-tuned classifier use `mode: classifier` with a test_file")
    model.to(device).eval()
    if cfg.max_seq_len and cfg.max_seq_len > mcfg.max_position_embeddings:  # asked for: never cut silently
        raise MlmctlError(f"eval: `max_seq_len` {cfg.max_seq_len} exceeds the model's max_position_embeddings "
                          f"{mcfg.max_position_embeddings}")
    max_len = cfg.max_seq_len or min(128, mcfg.max_position_embeddings)
    encoder = TextEncoder(model_dir, max_len, STAGE)
    docs, train_counts, source = _heldout_docs(cfg, model_dir, encoder)
    if encoder.mask_id is None:
        raise InputError(f"eval: {model_dir}/tokenizer.json has no [MASK] token")
    V = mcfg.vocab_size
    if docs and max(int(d.max()) for d in docs if d.size) >= V:
        raise InputError(f"eval: token ids of the held-out data exceed the model's vocab_size {V}; "
                         "the data was tokenised with another vocabulary")
    seqs, seq_doc = _mlm_sequences(docs, max_len, encoder, cfg.max_sequences)
    if not seqs:
        raise InputError(f"eval: the held-out data ({source}) has no tokens")

    sc = score_masked(model, seqs, cfg.masking(), V, cfg.seed, encoder.pad_id, cfg.batch_size, device)
    if sc.nll.size == 0:
        raise InputError(f"eval: no maskable tokens in the held-out data ({source})")
    special = {encoder.pad_id, encoder.cls_id, encoder.sep_id, encoder.mask_id}
    counts = train_counts if train_counts is not None else np.bincount(np.concatenate(docs), minlength=V)[:V]
    unigram = _unigram_nll(counts, sc.target, special, V)

    result = _mlm_figures(sc, unigram, seq_doc[sc.seq], cfg)
    result.update({
        "unigram_source": "train split counts" if train_counts is not None else "held-out text itself (optimistic)",
        "masked_tokens": int(sc.nll.size),
        "sequences": len(seqs),
        "documents": int(len(set(seq_doc.tolist()))),
        "tokens": int(sum(len(s) for s in seqs)),
        "data": source,
        "seed": cfg.seed,
        "mask_prob": cfg.mask_prob,
        "max_seq_len": max_len,
    })
    if cfg.pppl:
        result.update(_pppl(model, seqs, seq_doc, encoder, cfg, device))
    result["intervals"] = _interval_note(cfg, "documents", result["documents"])
    summary = {"sequences": len(seqs), "masked tokens": result["masked_tokens"],
               "mlm_ppl (all [MASK])": _fmt(result, "mlm_ppl", 2),
               "mlm_ppl_801010": _fmt(result, "mlm_ppl_801010", 2),
               "unigram_ppl": _fmt(result, "unigram_ppl", 2),
               "mlm top-1 acc": _fmt(result, "mlm_acc", 4), "mlm top-5 acc": _fmt(result, "mlm_top5_acc", 4)}
    if cfg.pppl:
        summary["pppl"] = _fmt(result, "pppl", 2) + f" ({result['pppl_tokens']} tokens)"
    return result, summary


def _mlm_sequences(docs, max_len: int, encoder, max_sequences: int):
    """Each document cut into pieces of max_len - 2 tokens, each [CLS] piece [SEP]; also the
    document index of each sequence (the bootstrap resamples documents)."""
    import numpy as np

    room = max_len - 2
    seqs, seq_doc = [], []
    for i, d in enumerate(docs):
        for s in range(0, len(d), room):
            seqs.append(np.concatenate([[encoder.cls_id], d[s:s + room], [encoder.sep_id]]).astype(np.int64))
            seq_doc.append(i)
    if max_sequences:
        seqs, seq_doc = seqs[:max_sequences], seq_doc[:max_sequences]
    return seqs, np.asarray(seq_doc, dtype=np.int64)


def _unigram_nll(counts, targets, special: set, V: int):
    """Per-position NLL of a unigram model, add-one smoothed over the non-special vocabulary."""
    import numpy as np

    counts = counts.astype(np.float64).copy()
    for s in special:
        if s is not None and s < V:
            counts[s] = 0
    n_types = V - len([s for s in special if s is not None and s < V])
    return -np.log((counts[targets] + 1.0) / (counts.sum() + n_types))


def _mlm_figures(sc, unigram, pos_doc, cfg: EvalConfig) -> dict:
    """Point figures over all positions, and their intervals resampling documents."""
    import numpy as np

    from mlmctl.bootstrap import ratio_intervals
    from mlmctl.mlm_scoring import KIND_KEEP, KIND_MASK, KIND_RANDOM

    per_pos = {"mlm_loss": sc.nll, "mlm_loss_801010": sc.nll_801010, "unigram_loss": unigram,
               "mlm_acc": sc.top1.astype(np.float64), "mlm_top5_acc": sc.top5.astype(np.float64)}
    out = {k: float(v.mean()) for k, v in per_pos.items()}
    for name, loss in (("mlm_ppl", "mlm_loss"), ("mlm_ppl_801010", "mlm_loss_801010"), ("unigram_ppl", "unigram_loss")):
        out[name] = math.exp(out[loss])
    # What 80/10/10 scoring looks like by replacement: "keep" positions show the model its answer.
    out["mlm_loss_801010_by_kind"] = {
        name: (float(sc.nll_801010[sc.kind_801010 == k].mean()) if (sc.kind_801010 == k).any() else None)
        for name, k in (("mask", KIND_MASK), ("random", KIND_RANDOM), ("keep", KIND_KEEP))}
    if cfg.bootstrap_resamples:
        docs, pos_doc = np.unique(pos_doc, return_inverse=True)
        per_doc = {k: np.bincount(pos_doc, weights=v, minlength=len(docs)) for k, v in per_pos.items()}
        n_doc = np.bincount(pos_doc, minlength=len(docs)).astype(np.float64)
        exp_of = {"mlm_loss": "exp", "mlm_loss_801010": "exp", "unigram_loss": "exp"}
        cis = ratio_intervals(per_doc, n_doc, cfg.bootstrap_resamples, cfg.seed, exp_of)
        for key, name in (("mlm_loss", "mlm_ppl"), ("mlm_loss_801010", "mlm_ppl_801010"),
                          ("unigram_loss", "unigram_ppl"), ("mlm_acc", "mlm_acc"), ("mlm_top5_acc", "mlm_top5_acc")):
            out[f"{name}_ci"] = list(cis[key])
    return out


def _pppl(model, seqs, seq_doc, encoder, cfg: EvalConfig, device) -> dict:
    """Pseudo-perplexity over the first sequences, whole documents, up to `pppl_tokens` tokens."""
    import numpy as np

    from mlmctl.bootstrap import ratio_intervals
    from mlmctl.mlm_scoring import pseudo_nll

    n_tok = np.cumsum([len(s) - 2 for s in seqs])
    last_doc = seq_doc[min(int(np.searchsorted(n_tok, cfg.pppl_tokens)), len(seqs) - 1)]
    take = int((seq_doc <= last_doc).sum())  # documents come in order: finish the last one begun
    nll, count = pseudo_nll(model, seqs[:take], encoder.mask_id, encoder.pad_id, cfg.batch_size, device)
    out = {"pppl": math.exp(nll.sum() / count.sum()), "pppl_tokens": int(count.sum()),
           "pppl_docs": int(len(np.unique(seq_doc[:take])))}
    if cfg.bootstrap_resamples:
        docs, inv = np.unique(seq_doc[:take], return_inverse=True)
        ci = ratio_intervals({"nll": np.bincount(inv, weights=nll)}, np.bincount(inv, weights=count),
                             cfg.bootstrap_resamples, cfg.seed, {"nll": "exp"})
        out["pppl_ci"] = list(ci["nll"])
    return out


def _interval_note(cfg: EvalConfig, unit: str, n: int) -> dict:
    if not cfg.bootstrap_resamples:
        return {"resamples": 0}
    from mlmctl.bootstrap import LEVEL

    return {"level": LEVEL, "method": "percentile bootstrap", "resamples": cfg.bootstrap_resamples,
            "seed": cfg.seed, "unit": unit, "units": n}


def _fmt(result: dict, key: str, digits: int) -> str:
    """`value [lo, hi]`, or the value alone without an interval."""
    ci = result.get(f"{key}_ci")
    text = f"{result[key]:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _heldout_docs(cfg: EvalConfig, model_dir: Path, encoder):
    """Token-id arrays of the held-out documents, the train-split unigram counts (or None), and a
    description of the source."""
    import numpy as np

    from mlmctl.shards import file_sha256

    if cfg.data:
        from mlmctl.token_ids import open_vocab_dir

        vd = open_vocab_dir(cfg.data, full_verify=False, reader=STAGE)
        tok = model_dir / "tokenizer.json"
        if tok.is_file() and file_sha256(tok) != vd.tokenizer_sha256:
            raise InputError(f"eval: {cfg.data} was indexed with a different tokenizer than {model_dir}'s; "
                             "use the build-vocab directory the model was trained on, or `text_files`")
        split = vd.split(cfg.split)
        docs = []
        for d in range(split.n_docs):
            a, b = split.document_span(d)
            docs.append(split.tokens(a, b).astype(np.int64))
            if cfg.max_sequences and len(docs) >= cfg.max_sequences:
                break  # a document yields at least one sequence: enough documents for the cap
        counts = None
        try:
            tr = vd.split("train")
            counts = np.zeros(vd.vocab_size, dtype=np.int64)
            step = 1 << 22
            for s in range(0, tr.n_tokens, step):
                counts += np.bincount(tr.tokens(s, min(s + step, tr.n_tokens)), minlength=vd.vocab_size)[:vd.vocab_size]
        except InputError:
            counts = None  # no train split: fall back to the held-out counts
        return docs, counts, f"{cfg.data}:{cfg.split}"
    if cfg.text_files:
        texts = []
        for f in cfg.text_files:
            texts += _read_docs(Path(f))
        docs = [np.asarray(x, dtype=np.int64) for x in encoder.token_ids(texts)]
        return [d for d in docs if d.size], None, ", ".join(cfg.text_files)
    raise MlmctlError("eval: MLM evaluation needs held-out data: `data` (a build-vocab directory) or `text_files`")


def _read_docs(path: Path) -> list[str]:
    from mlmctl.labelled import read_text_docs

    return read_text_docs(path, STAGE)


def _read_config(model_dir: Path) -> dict:
    from mlmctl.safe_json import read_json_file

    raw = read_json_file(model_dir / "config.json", STAGE)
    if not isinstance(raw.get("mlmctl_finetune") or {}, dict):
        raise InputError(f"eval: {model_dir}/config.json: mlmctl_finetune must be an object (finetune writes it); "
                         "fix config.json or fine-tune again")
    return raw

