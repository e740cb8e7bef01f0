"""`mlmctl report`: one table that sums up a whole chain (what `make demo` ends with).

Reads only what the stages wrote: manifests, `stats.json`, `metrics.jsonl` and `eval.json` files.

    mlmctl report --data data/demo --runs runs/demo     # the chain of scripts/chain.sh or the README
    mlmctl report runs/a/eval runs/b/eval               # just these eval directories

The data directory holds `{clean,tokens,vocab,task}`. Under the runs directory every `eval.json`
is found wherever it lies (`eval-random/`, `ft/eval/`, ...): a classifier's scores become a row of
the test-set table (beside the majority class and the tf-idf baseline eval trained on the same
train file, with a sentence saying whether the model beats that baseline, from a paired bootstrap
over the test examples), a regression model's a line of its own, an MLM evaluation the held-out
perplexity line; the pretraining run is
`RUNS/pretrain` or else the first directory under RUNS whose manifest says `pretrain`.
A part that is missing is shown as missing, never guessed; a directory that does not exist is an
error.
"""

from __future__ import annotations

from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import MlmctlError
from mlmctl.layout import CONFIG_NAME, EVAL_JSON, FINAL, MANIFEST, METRICS_FILE, STATS_FILE
from mlmctl.report_tagging import is_tagging_eval, tagging_rows, tagging_task_row

# The names scripts/chain.sh gives its eval directories, shown as what they measure.
LABELS = {"eval-random": "random init + finetune", "eval-pretrained": "pretrained + finetune"}


def _load(path: Path) -> dict | None:
    """A JSON object mlmctl wrote (eval.json, stats.json, ...), or None when missing or not one."""
    try:
        value = safe_json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _extra(stage_dir: Path) -> dict:
    manifest = _load(stage_dir / MANIFEST)
    return manifest.get("extra", {}) if manifest else {}


def _metrics(path: Path) -> list[dict]:
    try:
        rows = [safe_json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    return [row for row in rows if isinstance(row, dict)]


def _majority_macro_f1(counts: dict[str, int], majority: str) -> float:
    """Macro-F1 of always predicting `majority`: only that class scores, F1 = 2p/(1+p)."""
    total = sum(counts.values())
    if not total or majority not in counts:
        return 0.0
    p = counts[majority] / total
    return (2 * p / (1 + p)) / len(counts)


def find_evals(runs: Path) -> list[Path]:
    """Every directory under `runs` that holds an eval.json, in path order."""
    return sorted(p.parent for p in Path(runs).rglob(EVAL_JSON) if p.is_file())


def find_pretrain(runs: Path) -> Path:
    if (runs / "pretrain").is_dir():
        return runs / "pretrain"
    for manifest in sorted(runs.rglob(MANIFEST)):
        if (_load(manifest) or {}).get("stage") == "pretrain":
            return manifest.parent
    return runs / "pretrain"


def summary_rows(data: Path | None, runs: Path | None,
                 evals: list[Path] | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(facts, downstream table rows) for the chain under `data` and `runs`; `evals` are the eval
    directories to score (default: every one under `runs`)."""
    rows: list[tuple[str, str]] = []
    if evals is None:
        evals = find_evals(runs) if runs is not None else []
    if data is not None:
        rows += _data_rows(data)
    if runs is not None:
        rows += _pretrain_rows(find_pretrain(runs))
    table: list[tuple[str, str, str]] = []
    baselines: dict[tuple, tuple[str, str, str]] = {}
    scored = False
    taggers = {}
    for d in evals:
        ev = _load(d / EVAL_JSON) or {}
        name = LABELS.get(d.name) or eval_label(d, runs)
        if is_tagging_eval(ev):
            taggers[d.name if d.name not in taggers else eval_label(d, runs)] = d
        elif "mlm_ppl" in ev:
            suffix = "" if d.name == "eval-mlm" else f" ({name})"
            rows += [(key + suffix, value) for key, value in mlm_rows(ev)]
        elif "accuracy" in ev:
            table.append((name, with_ci(ev, "accuracy"), with_ci(ev, "macro_f1")))
            scored = True
            bl = ev.get("baseline") or {}
            if "accuracy" in bl:  # one row per (train file, test file): every eval of a task trains the same one
                baselines.setdefault((bl.get("train_sha256"), ev.get("test_file")),
                                     ("tf-idf + logreg baseline", with_ci(bl, "accuracy"), with_ci(bl, "macro_f1")))
                rows.append((f"{name} vs baseline", baseline_effect(d)))
        elif "pearson" in ev:
            rows.append((f"{name} (regression)", regression_line(ev)))
            if "pearson" in (ev.get("baseline") or {}):
                rows.append((f"{name} vs baseline", regression_baseline_effect(d)))
    if data is not None and _extra(data / "tagging"):
        rows.append(tagging_task_row(_extra(data / "tagging")))
    rows += tagging_rows(taggers)
    by_name = {d.name: d for d in evals}
    if "eval-pretrained" in by_name and "eval-random" in by_name:
        rows.append(("pretraining effect", pretraining_effect(by_name["eval-pretrained"], by_name["eval-random"])))
    if len(baselines) > 1:  # several tasks: say which baseline is which
        baselines = {k: (f"{v[0]} ({Path(k[1] or '?').name})", *v[1:]) for k, v in baselines.items()}
    table[:0] = baselines.values()
    if not scored:
        table.append(("classifier (no eval.json found)", "missing", "missing"))
    task = _extra(data / "task") if data is not None else {}
    if task:
        counts = task.get("counts", {})
        test = counts.get("test", {})
        rows.append((
            "downstream task",
            f"{len(task.get('labels', []))} classes ({', '.join(task.get('labels', []))}); "
            f"{sum(counts.get('train', {}).values())} train / {sum(test.values())} test examples",
        ))
        if "majority_test_accuracy" in task:
            table.insert(0, (
                "majority class",
                f"{task['majority_test_accuracy']:.3f}",
                f"{_majority_macro_f1(test, task.get('majority_label', '')):.3f}",
            ))
    return rows, table


def eval_label(d: Path, runs: Path | None) -> str:
    try:
        return d.relative_to(runs).as_posix() if runs is not None else str(d)
    except ValueError:
        return str(d)


def _data_rows(data: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    clean = _extra(data / "clean")
    if clean:
        docs, chars = clean.get("documents", {}), clean.get("characters", {})
        rows.append((
            "corpus",
            f"{docs.get('total', 0):,} documents ({docs.get('train', 0):,} train / "
            f"{docs.get('validation', 0):,} validation), {chars.get('total', 0) / 1e6:.1f} M characters",
        ))
    else:
        rows.append(("corpus", "missing (clean did not finish)"))
    # stats.json is written just before the manifest: read it only from a finished stage.
    vocab = _load(data / "vocab" / STATS_FILE) if _extra(data / "vocab") else None
    if not vocab:
        rows.append(("vocabulary", "missing (build-vocab did not finish)"))
    else:
        tr, va = vocab.get("train", {}), vocab.get("validation", {})
        rows.append((
            "vocabulary",
            f"{vocab.get('vocab_size', 0):,} sub-words, [UNK] {100 * tr.get('unk_rate', 0):.2f}%, "
            f"{tr.get('subwords_per_word', 0):.2f} sub-words/word",
        ))
        rows.append(("tokens", f"{tr.get('tokens', 0):,} train / {va.get('tokens', 0):,} validation"))
    return rows


def _pretrain_rows(run: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    pre = _extra(run)
    metrics = _metrics(run / METRICS_FILE)
    if pre:
        losses = [m["loss"] for m in metrics if "loss" in m]
        vals = [m["val_ppl"] for m in metrics if "val_ppl" in m]
        loss = f"loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "no loss logged"
        # The run's one tokens/s (progress.tokens_per_s), as the summary and metrics.jsonl show it.
        speed = f", {pre['tokens_per_s']} tokens/s" if "tokens_per_s" in pre else ""
        rows.append(("pretraining", f"{pre.get('steps', 0):,} steps, {pre.get('tokens', 0):,} tokens, {loss}{speed}"))
        model = model_line(_load(run / FINAL / CONFIG_NAME))
        if model:
            rows.append(("model", model))
        if "packing_efficiency" in pre:
            rows.append(("packing efficiency", f"{pre['packing_efficiency']:.3f} (real tokens / slots)"))
        if vals:
            rows.append(("validation ppl", f"{vals[0]:.1f} -> {vals[-1]:.1f}"))
    else:
        rows.append(("pretraining", "missing (pretrain did not finish)"))
    return rows


def model_line(cfg: dict | None) -> str | None:
    """`modernbert: 2 layers x 128 hidden, 2 heads; global attention every 3 layers, local window 128`
    (or `bert: ...`) from a model's config.json; None when there is none."""
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        return None
    shape = (f"{cfg.get('model_type')}: {cfg.get('num_hidden_layers', '?')} layers x {cfg.get('hidden_size', '?')} "
             f"hidden, {cfg.get('num_attention_heads', '?')} heads")
    if cfg.get("model_type") == "modernbert":
        shape += (f"; global attention every {cfg.get('global_attn_every_n_layers', '?')} layers, "
                  f"local window {cfg.get('local_attention', '?')}")
    return shape


# ----------------------------------------------------------------------------------------------
# Figures with their intervals, and the paired pretrained-vs-random comparison


def with_ci(ev: dict, key: str, digits: int = 3) -> str:
    """`0.787 [0.745, 0.826]`: a figure and its 95% interval from eval.json (when it has one)."""
    value, ci = ev.get(key), ev.get(f"{key}_ci")
    if not _is_number(value):  # a hand-edited or older eval.json: say so in the cell, never crash
        return "missing" if value is None else "unreadable"
    text = f"{value:.{digits}f}"
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(x) for x in ci)
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ok else "")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def mlm_rows(mlm: dict) -> list[tuple[str, str]]:
    """The held-out MLM figures of eval-mlm/eval.json; an eval.json from before the leak-free
    headline (no mlm_ppl_801010) says what its mlm_ppl was."""
    if "mlm_ppl_801010" not in mlm:
        return [("held-out MLM ppl", f"{mlm['mlm_ppl']:.1f} (80/10/10 masking; unigram baseline "
                                     f"{mlm['unigram_ppl']:.1f}); rerun eval for the leak-free figure")]
    rows = [("held-out MLM ppl", f"{with_ci(mlm, 'mlm_ppl', 1)}, unigram baseline {with_ci(mlm, 'unigram_ppl', 1)} "
                                 f"(every chosen token [MASK]; 80/10/10 as in training: {mlm['mlm_ppl_801010']:.1f})"),
            ("held-out MLM acc", f"top-1 {with_ci(mlm, 'mlm_acc')}, top-5 {with_ci(mlm, 'mlm_top5_acc')}")]
    if mlm.get("pppl") is not None:
        rows.append(("pseudo-perplexity", f"{with_ci(mlm, 'pppl', 1)} over {mlm.get('pppl_tokens', 0):,} tokens"))
    return rows


def _predictions(eval_dir: Path, key: str = "prediction") -> tuple[list[str], list[str]] | None:
    """(gold, predicted) labels of eval_dir/predictions.jsonl, in test-file order; `key` names the
    prediction (`baseline_prediction`: the tf-idf baseline's)."""
    try:
        lines = [safe_json.loads(x) for x in (eval_dir / "predictions.jsonl").read_text().splitlines() if x.strip()]
        return [x["label"] for x in lines], [x[key] for x in lines]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _paired(ev: dict, gold: list[str], pred_a: list[str], pred_b: list[str]) -> tuple[str, list[str], list[str]] | None:
    """Metric(a) - metric(b) for accuracy and macro-F1 on the same test examples (paired bootstrap
    with eval's resamples and seed): (text, metrics where a is significantly better, ... worse);
    None when the labels do not match the eval's label set."""
    from mlmctl.bootstrap import DEFAULT_RESAMPLES, paired_classification_difference

    ids = {x: i for i, x in enumerate(ev.get("labels") or sorted(set(gold + pred_a + pred_b)))}
    if not all(x in ids for x in gold + pred_a + pred_b):
        return None
    note = ev.get("intervals") or {}
    d = paired_classification_difference([ids[x] for x in gold], [ids[x] for x in pred_a],
                                         [ids[x] for x in pred_b], len(ids),
                                         note.get("resamples") or DEFAULT_RESAMPLES, note.get("seed", 0))
    parts = [f"{name} {d[m]['diff']:+.3f} [{d[m]['ci'][0]:+.3f}, {d[m]['ci'][1]:+.3f}]"
             for m, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))]
    text = ", ".join(parts) + f" (paired bootstrap, {len(gold)} test examples)"
    return (text, [m for m in d if d[m]["significant"] and d[m]["diff"] > 0],
            [m for m in d if d[m]["significant"] and d[m]["diff"] < 0])


def baseline_effect(eval_dir: Path) -> str:
    """Whether the model of eval_dir beats the tf-idf baseline eval trained beside it: model minus
    baseline, paired over the test examples; "beats" only when an interval is above 0 and none
    below, else "does not beat the baseline" with the reason."""
    ev, model, base = _load(eval_dir / EVAL_JSON), _predictions(eval_dir), _predictions(eval_dir, "baseline_prediction")
    if not (ev and model and base):
        return "not compared (needs predictions.jsonl with the baseline's predictions: eval `predictions: true`)"
    paired = _paired(ev, model[0], model[1], base[1])
    if paired is None:
        return "not compared (predictions outside the eval's label set)"
    text, better, worse = paired
    if better and not worse:
        return f"beats the tf-idf baseline: {text}"
    if worse and not better:
        return f"does not beat the baseline; the baseline is better: {text}"
    return f"does not beat the baseline (the 95% intervals include 0): {text}"


def regression_line(ev: dict) -> str:
    """Pearson / Spearman / MSE of a regression eval, and its baselines' figures."""
    text = f"pearson {with_ci(ev, 'pearson')}, spearman {with_ci(ev, 'spearman')}, mse {with_ci(ev, 'mse')}"
    mean = ev.get("mean_baseline") or {}
    if "mse" in mean:
        text += f"; train-mean predictor mse {mean['mse']:.3f}"
    bl = ev.get("baseline") or {}
    if "pearson" in bl:
        text += f"; tf-idf + ridge baseline pearson {with_ci(bl, 'pearson')}, mse {with_ci(bl, 'mse')}"
    return text + regression_verdict(ev)


def regression_verdict(ev: dict) -> str:
    """Say it when a regressor's MSE is no better than always predicting the train mean (a
    constant has no correlation to compare; its MSE is the figure to beat)."""
    mean = ev.get("mean_baseline") or {}
    if isinstance(mean.get("mse"), (int, float)) and isinstance(ev.get("mse"), (int, float)) and ev["mse"] >= mean["mse"]:
        return "; no better than predicting the train mean (mse)"
    return ""


def regression_baseline_effect(eval_dir: Path) -> str:
    """Whether a regressor beats the tf-idf + ridge baseline eval fitted beside it: model minus
    baseline Pearson and MSE, paired over the test examples (predictions.jsonl); "beats" only when
    an interval says so and none says the opposite, as for classifiers."""
    from mlmctl.bootstrap import DEFAULT_RESAMPLES, paired_regression_difference

    ev, model, base = _load(eval_dir / EVAL_JSON), _predictions(eval_dir), _predictions(eval_dir, "baseline_prediction")
    numbers = model and base and all(isinstance(v, (int, float)) for v in model[0] + model[1] + base[1])
    if not (ev and numbers):
        return "not compared (needs predictions.jsonl with the baseline's predictions: eval `predictions: true`)"
    note = ev.get("intervals") or {}
    d = paired_regression_difference(model[0], model[1], base[1], note.get("resamples") or DEFAULT_RESAMPLES,
                                     note.get("seed", 0))
    text = ", ".join(f"{m} {d[m]['diff']:+.3f} [{d[m]['ci'][0]:+.3f}, {d[m]['ci'][1]:+.3f}]" for m in ("pearson", "mse"))
    text += f" (paired bootstrap, {len(model[0])} test examples)"
    better, worse = [m for m in d if d[m]["better"]], [m for m in d if d[m]["worse"]]
    if better and not worse:
        return f"beats the tf-idf baseline: {text}"
    if worse and not better:
        return f"does not beat the baseline; the baseline is better: {text}"
    return f"does not beat the baseline (the 95% intervals include 0): {text}"


def pretraining_effect(pre_dir: Path, rand_dir: Path) -> str:
    """Pretrained minus random-init accuracy and macro-F1 with paired 95% bootstrap intervals (the
    same resampled test examples for both models); "helps" only when an interval excludes 0."""
    pre, rand, ev = _predictions(pre_dir), _predictions(rand_dir), _load(pre_dir / "eval.json")
    if not (pre and rand and ev):
        return "not compared (needs predictions.jsonl from both classifier evals: eval `predictions: true`)"
    if pre[0] != rand[0]:
        return "not compared (the two evals scored different test files)"
    paired = _paired(ev, pre[0], pre[1], rand[1])
    if paired is None:
        return "not compared (the two models have different label sets)"
    text, helps, hurts = paired
    if helps and not hurts:
        return f"pretraining helps: {text}"
    if hurts and not helps:
        return f"pretraining hurts: {text}"
    return f"not significant: {text}; the 95% intervals include 0, so this run cannot tell the two apart"


def run(dirs: list[Path], data: Path | None, runs: Path | None, html: Path | None = None) -> None:
    """Print the summary. With no directories and no --data/--runs: data/demo and runs/demo.
    `html`: also write the page of mlmctl.report_html there."""
    from mlmctl.progress import print_table

    if html is not None:
        from mlmctl.report_html import require

        require()  # before any work: a missing matplotlib is one line, not a half-done report

    if not dirs and data is None and runs is None:
        data, runs = Path("data/demo"), Path("runs/demo")
    for what, d in [("--data", data), ("--runs", runs)] + [("directory", d) for d in dirs]:
        if d is not None and not Path(d).is_dir():
            raise MlmctlError(f"report: {what} {d} does not exist; give the chain's --data and --runs "
                              f"directories, or the eval directories to report on")
    evals = None
    if dirs:
        evals = []
        for d in map(Path, dirs):
            found = [d] if (d / EVAL_JSON).is_file() else find_evals(d)
            if not found:
                raise MlmctlError(f"report: {d} holds no {EVAL_JSON}; give eval output directories "
                                  f"(written by `mlmctl eval`)")
            evals += found
    rows, table = summary_rows(data, runs, evals)
    where = ", ".join(str(p) for p in (data, runs, *dirs) if p is not None)
    print_table(f"mlmctl chain summary ({where})", None, rows)
    if table:
        print_table("test set", ["model", "accuracy", "macro-F1"], table)
    if html is not None:
        from mlmctl import report_html

        # Printed last, so that `make demo` ends with the page to open.
        print(f"wrote {report_html.write(html, rows, table, data, runs, evals)}")
