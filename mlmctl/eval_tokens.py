"""eval `mode: tagger`: score a token classifier (`*ForTokenClassification`) on a tagged file.

Figures (mlmctl.seq_metrics, seqeval's strict mode): entity-level precision, recall and F1 pooled
over all entities (`entity_*`, micro), macro and weighted F1, the same per entity type
(`per_type`), and token accuracy; each with a 95% bootstrap interval resampling sentences. Beside
them, the constant guesses a tagger must beat (`baseline`): every token `O`, and every token the
most frequent tag of the test file. `predictions.jsonl` holds per sentence its tokens, gold and
predicted tags.

The file is read as the model was fine-tuned (`mlmctl_finetune` in config.json: scheme, layout,
columns, treatment of ill-formed sequences); each eval key set here overrides it.
"""

from __future__ import annotations

from pathlib import Path

from mlmctl.errors import InputError, MlmctlError
from mlmctl.token_data import TagSpec

STAGE = "eval"


def is_tagger_config(raw: dict, model_dir: Path) -> bool:
    """config.json of a token classifier (ours or one transformers wrote)?"""
    from mlmctl.head_config import architectures

    ft = raw.get("mlmctl_finetune") or {}
    return (any(a.endswith("ForTokenClassification") for a in architectures(raw, model_dir, STAGE))
            or isinstance(ft, dict) and ft.get("task") == "token-classification")


def eval_tagger(ctx, cfg, model_dir: Path, raw: dict, device):
    """(eval.json dict, summary table, predictions rows)."""
    from mlmctl.model_dir import load_own_arch
    from mlmctl.text_encoder import TextEncoder
    from mlmctl.token_data import encode_tagged, predict_tags, tag_baselines, tagging_report

    if not cfg.test_file:
        raise MlmctlError("eval: tagger evaluation needs `test_file` (e.g. --set test_file=data/task/test.conll)")
    labels = _labels(raw, model_dir)
    ft = raw.get("mlmctl_finetune") or {}
    spec = TagSpec(**{key: _pick(getattr(cfg, name), ft.get(name), TagSpec.__dataclass_fields__[key].default)
                      for key, name in (("scheme", "tag_scheme"), ("ill_formed", "ill_formed"), ("fmt", "tag_format"),
                                        ("tag_column", "tag_column"), ("tokens_field", "tokens_field"),
                                        ("tags_field", "tags_field"))})
    max_len = cfg.max_seq_len or ft.get("max_seq_len") or 128
    data = spec.read(cfg.test_file, STAGE)
    tag2id = {x: i for i, x in enumerate(labels)}
    spec.check_known(data, tag2id, STAGE, "the model was not trained with it: score it on a file with its tags")
    model, mcfg, info = load_own_arch(model_dir, "tagger", STAGE, num_labels=len(labels))
    if any(k.startswith("classifier.") for k in info["missing"]):
        raise InputError(f"eval: {model_dir} has no trained tagging head (classifier.* weights); is it a fine-tuned "
                         "token classifier?")
    if max_len > mcfg.max_position_embeddings:
        raise MlmctlError(f"eval: `max_seq_len` {max_len} exceeds the model's max_position_embeddings "
                          f"{mcfg.max_position_embeddings}")
    encoder = TextEncoder(model_dir, max_len, STAGE)
    encoder.check_fits(mcfg, model_dir, STAGE)
    enc = encode_tagged(encoder, data.tokens, None, max_len)
    model.to(device)
    pred_ids = predict_tags(model, enc, cfg.batch_size, encoder.pad_id, device)
    pred = [[labels[i] for i in s] for s in pred_ids]
    scheme = spec.strict_scheme
    report = {"task": "token-classification", "labels": labels, "tag_scheme": spec.scheme,
              **tagging_report(data.tags, pred, scheme), "test_file": str(cfg.test_file),
              "split_sentences": enc.split_sentences, "long_words": enc.truncated,
              "ill_formed_repaired": data.ill_formed.get("repaired", 0),
              "baseline": tag_baselines(data.tags, data.tags, scheme)}
    _add_intervals(report, data.tags, pred, scheme, cfg)
    summary = _summary(report)
    for line in summary.pop("_log"):
        ctx.log(line)
    preds = None
    if cfg.predictions:
        preds = [{"index": i, "tokens": toks, "gold": g, "predicted": p, "correct": g == p}
                 for i, (toks, g, p) in enumerate(zip(data.tokens, data.tags, pred))]
    return report, summary, preds


def _pick(mine, fine_tuned, default):
    return mine if mine is not None else fine_tuned if fine_tuned is not None else default


def _labels(raw: dict, model_dir: Path) -> list[str]:
    from mlmctl.head_config import head_labels

    labels = head_labels(raw, model_dir, STAGE)
    if len(labels) < 2:
        raise InputError(f"eval: {model_dir}/config.json has no id2label with at least 2 tags; is it a tagger?")
    return labels


def _add_intervals(report: dict, gold, pred, scheme, cfg) -> None:
    from mlmctl.stages.eval import _interval_note

    report["intervals"] = _interval_note(cfg, "sentences", len(gold))
    if not cfg.bootstrap_resamples:
        return
    from mlmctl.token_data import tagging_intervals

    for key, ci in tagging_intervals(gold, pred, scheme, cfg.bootstrap_resamples, cfg.seed).items():
        report[f"{key}_ci"] = list(ci)


def _summary(report: dict) -> dict:
    from mlmctl.stages.eval import _fmt

    summary = {"sentences": report["n_sentences"], "tokens": report["n_tokens"],
               "token accuracy": _fmt(report, "token_accuracy", 4)}
    log = []
    if "entity_f1" in report:
        summary.update({"entity precision": _fmt(report, "entity_precision", 4),
                        "entity recall": _fmt(report, "entity_recall", 4),
                        "entity F1 (micro)": _fmt(report, "entity_f1", 4),
                        "macro F1": f"{report['macro_f1']:.4f}"})
        for kind, v in report["per_type"].items():
            summary[f"  {kind}"] = (f"P {v['precision']:.3f}  R {v['recall']:.3f}  F1 {v['f1']:.3f}  "
                                    f"n={v['support']}")
    for name, b in report["baseline"].items():
        figs = f"token accuracy {b['token_accuracy']:.4f}" + (
            f", entity F1 {b['entity_f1']:.4f}" if "entity_f1" in b else "")
        summary[f"baseline: every token {b['tag']}"] = figs
    if report["split_sentences"]:
        log.append(f"{report['split_sentences']} sentence(s) longer than max_seq_len were split into windows")
    if report["ill_formed_repaired"]:
        log.append(f"repaired {report['ill_formed_repaired']} ill-formed tag sequence(s) of the test file")
    summary["_log"] = log
    return summary
