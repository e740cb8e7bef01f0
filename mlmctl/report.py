"""`mlmctl report`: one table that sums up a whole chain (what `make demo` ends with).

Reads only what the stages wrote: manifests, `stats.json`, `metrics.jsonl` and `eval.json` files
under the chain's data and runs directories, as laid out by `scripts/chain.sh`:

    DATA/{clean,tokens,vocab,task}
    RUNS/{pretrain,eval-mlm,finetune-pretrained,finetune-random,eval-pretrained,eval-random}

A part that is missing is shown as missing, never guessed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _extra(stage_dir: Path) -> dict:
    manifest = _load(stage_dir / "manifest.json")
    return manifest.get("extra", {}) if manifest else {}


def _metrics(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _majority_macro_f1(counts: dict[str, int], majority: str) -> float:
    """Macro-F1 of always predicting `majority`: only that class scores, F1 = 2p/(1+p)."""
    total = sum(counts.values())
    if not total or majority not in counts:
        return 0.0
    p = counts[majority] / total
    return (2 * p / (1 + p)) / len(counts)


def summary_rows(data: Path, runs: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(facts, downstream table rows) for the chain under `data` and `runs`."""
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
    vocab = _load(data / "vocab" / "stats.json") if _extra(data / "vocab") else None
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
    pre = _extra(runs / "pretrain")
    metrics = _metrics(runs / "pretrain" / "metrics.jsonl")
    if pre:
        losses = [m["loss"] for m in metrics if "loss" in m]
        vals = [m["val_ppl"] for m in metrics if "val_ppl" in m]
        tps = [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m]
        loss = f"loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else "no loss logged"
        speed = f", {sorted(tps)[len(tps) // 2]:,.0f} tokens/s" if tps else ""
        rows.append(("pretraining", f"{pre.get('steps', 0):,} steps, {pre.get('tokens', 0):,} tokens, {loss}{speed}"))
        if vals:
            rows.append(("validation ppl", f"{vals[0]:.1f} -> {vals[-1]:.1f}"))
    else:
        rows.append(("pretraining", "missing (pretrain did not finish)"))
    mlm = _load(runs / "eval-mlm" / "eval.json")
    if mlm:
        text = f"{mlm['mlm_ppl']:.1f} (unigram baseline {mlm['unigram_ppl']:.1f})"
        if mlm.get("pppl") is not None:
            text += f", pseudo-ppl {mlm['pppl']:.1f}"
        rows.append(("held-out MLM ppl", text))

    table: list[tuple[str, str, str]] = []
    task = _extra(data / "task")
    if task:
        counts = task.get("counts", {})
        test = counts.get("test", {})
        rows.append((
            "downstream task",
            f"{len(task.get('labels', []))} classes ({', '.join(task.get('labels', []))}); "
            f"{sum(counts.get('train', {}).values())} train / {sum(test.values())} test examples",
        ))
        if "majority_test_accuracy" in task:
            table.append((
                "majority class",
                f"{task['majority_test_accuracy']:.3f}",
                f"{_majority_macro_f1(test, task.get('majority_label', '')):.3f}",
            ))
    for init, label in (("random", "random init + finetune"), ("pretrained", "pretrained + finetune")):
        ev = _load(runs / f"eval-{init}" / "eval.json")
        if ev:
            table.append((label, f"{ev['accuracy']:.3f}", f"{ev['macro_f1']:.3f}"))
        else:
            table.append((label, "missing", "missing"))
    return rows, table


def run(data: Path, runs: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows, table = summary_rows(data, runs)
    console = Console(file=sys.stdout, soft_wrap=True)
    facts = Table(title=f"mlmctl chain summary ({data}, {runs})", show_header=False, box=None,
                  title_justify="left", pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in rows:
        facts.add_row(key, value)
    console.print(facts)
    if table:
        scores = Table(title="test set", title_justify="left")
        scores.add_column("model")
        scores.add_column("accuracy", justify="right")
        scores.add_column("macro-F1", justify="right")
        for row in table:
            scores.add_row(*row)
        console.print(scores)
