"""The tagging lines of `mlmctl report`: each tagger eval (entity F1 and token accuracy with their
intervals), the every-token-`O` baseline and whether each tagger beats it (token accuracy, paired
over the test sentences, as `report.baseline_effect` judges a classifier against tf-idf), and
pretrained vs random init as a paired bootstrap over the same test sentences (as
`report.pretraining_effect` does for the classifiers).

    rows = tagging_rows({"eval-tagging-pretrained": Path(...), "eval-tagging-random": Path(...)})
"""

from __future__ import annotations

from pathlib import Path

from mlmctl import safe_json
from mlmctl.layout import EVAL_JSON, PREDICTIONS

# The names scripts/chain.sh gives the tagging evals.
PRETRAINED, RANDOM = "eval-tagging-pretrained", "eval-tagging-random"
LABELS = {PRETRAINED: "pretrained + finetune", RANDOM: "random init + finetune"}


def is_tagging_eval(ev: dict) -> bool:
    return ev.get("task") == "token-classification"


def tagging_task_row(extra: dict) -> tuple[str, str]:
    """The tagging task's line, from its demo-task manifest."""
    counts, tags = extra.get("counts", {}), extra.get("test_tags", {})
    entities = tags.get("B-CODE", 0)
    return ("tagging task", f"code in docstrings ({', '.join(extra.get('labels', []))}); {counts.get('train', 0)} train / "
            f"{counts.get('test', 0)} test sentences, {entities} code spans in test")


def tagging_rows(evals: dict[str, Path]) -> list[tuple[str, str]]:
    """(name, value) rows for the tagger evals, keyed by directory name."""
    from mlmctl.report import _load, with_ci

    rows = []
    loaded = {name: ev for name, d in evals.items() if isinstance(ev := _load(d / EVAL_JSON), dict)}
    for name, ev in loaded.items():
        if "entity_f1" in ev:
            text = f"entity F1 {with_ci(ev, 'entity_f1')}, token accuracy {with_ci(ev, 'token_accuracy')}"
        else:
            text = f"token accuracy {with_ci(ev, 'token_accuracy')}"
        rows.append((f"tagging: {LABELS.get(name, name)}", text))
        if isinstance(ev.get("baseline"), dict) and "all_O" in ev["baseline"]:  # a scheme with O
            rows.append((f"tagging: {LABELS.get(name, name)} vs every token O", all_o_effect(evals[name])))
    if loaded:
        ev = next(iter(loaded.values()))
        baselines = ev.get("baseline")
        for b in (baselines.values() if isinstance(baselines, dict) else []):
            if not isinstance(b, dict) or "tag" not in b:
                continue  # a hand-edited eval.json: show what can be read
            f1 = f"entity F1 {with_ci(b, 'entity_f1')}, " if "entity_f1" in b else ""
            rows.append((f"tagging: every token {b['tag']}", f"{f1}token accuracy {with_ci(b, 'token_accuracy')}"))
            break  # the first (all-O) is the one that matters; the majority tag is O in the demo
    if PRETRAINED in evals and RANDOM in evals:
        rows.append(("tagging: pretraining effect", paired_effect(evals[PRETRAINED], evals[RANDOM])))
    return rows


def _predictions(d: Path):
    """(gold, predicted) tag lists per sentence; None when missing, empty or not readable."""
    try:
        lines = [safe_json.loads(x) for x in (d / PREDICTIONS).read_text().splitlines() if x.strip()]
        gold, pred = [x["gold"] for x in lines], [x["predicted"] for x in lines]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = all(isinstance(s, list) and all(isinstance(t, str) for t in s) for s in gold + pred)
    return (gold, pred) if gold and ok else None  # nothing to resample, or a hand-edited file


def all_o_effect(eval_dir: Path) -> str:
    """The tagger's token accuracy minus every-token-`O`'s, paired over the test sentences: the
    constant guess a tagger must beat (its entity F1 is 0, so entity F1 cannot show it)."""
    import numpy as np

    from mlmctl.token_data import sentence_counts

    got = _predictions(eval_dir)
    if not got:
        return "not compared (needs a readable predictions.jsonl: eval `predictions: true`)"
    gold, pred = got
    # columns: correct tokens, tokens (the tagger); correct tokens of every-token-O (its gold Os)
    x = np.column_stack([sentence_counts(gold, pred, None)[:, :2],
                         [sum(t == "O" for t in g) for g in gold]]).reshape(-1, 3)

    def diff(s):
        return (s[..., 0] - s[..., 2]) / np.maximum(s[..., 1], 1)

    text, lo, hi = _paired_text(eval_dir, x, diff, "token accuracy")
    if lo > 0:
        return f"beats every token O: {text}"
    if hi < 0:
        return f"does not beat every token O; every token O is better: {text}"
    return f"does not beat every token O (the 95% interval includes 0): {text}"


def _paired_text(eval_dir: Path, x, stat, name: str) -> tuple[str, float, float]:
    """`stat` of the per-sentence count rows `x` summed, with its 95% interval resampling the
    sentences (the eval's own resamples and seed), as a report phrase."""
    import numpy as np

    from mlmctl.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resample_blocks
    from mlmctl.report import _load

    ev = _load(eval_dir / EVAL_JSON)
    note = (ev.get("intervals") if isinstance(ev, dict) else None) or {}
    values = np.concatenate([stat(w @ x) for w in resample_blocks(
        len(x), note.get("resamples") or DEFAULT_RESAMPLES, note.get("seed", 0))])
    lo, hi = percentile_interval(values)
    d = float(stat(x.sum(0)))
    return f"{name} {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired bootstrap, {len(x)} test sentences)", lo, hi


def paired_effect(pre_dir: Path, rand_dir: Path) -> str:
    """Pretrained minus random-init entity F1, with a paired 95% bootstrap interval over sentences."""
    import numpy as np

    from mlmctl.report import _load
    from mlmctl.token_data import sentence_counts

    pre, rand = _predictions(pre_dir), _predictions(rand_dir)
    ev = _load(pre_dir / EVAL_JSON)
    if not (pre and rand) or not isinstance(ev, dict) or "entity_f1" not in ev:
        return "not compared (needs predictions.jsonl with entity figures from both tagger evals)"
    if pre[0] != rand[0]:
        return "not compared (the two evals scored different test files)"
    scheme = {"iob1": "iob2"}.get(ev.get("tag_scheme", "iob2"), ev.get("tag_scheme", "iob2"))
    # columns 0-4 pretrained, 5-9 random: correct, tokens, tp, predicted, gold
    x = np.hstack([sentence_counts(pre[0], pre[1], scheme), sentence_counts(rand[0], rand[1], scheme)])

    def f1(s):
        p = np.divide(s[..., 2], s[..., 3], out=np.zeros_like(s[..., 2]), where=s[..., 3] > 0)
        r = np.divide(s[..., 2], s[..., 4], out=np.zeros_like(s[..., 2]), where=s[..., 4] > 0)
        return np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0)

    text, lo, hi = _paired_text(pre_dir, x, lambda s: f1(s[..., :5]) - f1(s[..., 5:]), "entity F1")
    if lo > 0:
        return f"pretraining helps: {text}"
    if hi < 0:
        return f"pretraining hurts: {text}"
    return f"not significant: {text}; the 95% interval includes 0"
