"""`mlmctl report`'s tagging lines: entity F1 with intervals per tagger eval, the all-O baseline and
each tagger against it, and pretrained vs random init as a paired bootstrap over the same sentences."""

from __future__ import annotations

import json
import random

from mlmctl.report import summary_rows
from mlmctl.token_data import tag_baselines, tagging_intervals, tagging_report


def _tagger_eval(d, gold, pred):
    d.mkdir(parents=True)
    ev = {"mode": "tagger", "task": "token-classification", "tag_scheme": "iob2",
          **tagging_report(gold, pred, "iob2"), "baseline": tag_baselines(gold, gold, "iob2"),
          "intervals": {"resamples": 300, "seed": 0}}
    ev.update({f"{k}_ci": list(v) for k, v in tagging_intervals(gold, pred, "iob2", 300, 0).items()})
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "predictions.jsonl").write_text("".join(
        json.dumps({"index": i, "tokens": ["w"] * len(g), "gold": g, "predicted": p}) + "\n"
        for i, (g, p) in enumerate(zip(gold, pred))))


def test_summary_compares_pretrained_and_random_taggers(tmp_path):
    rng = random.Random(0)
    gold = [[rng.choice(["O", "O", "B-CODE"]) for _ in range(8)] for _ in range(80)]
    good = [[t if rng.random() < 0.95 else "O" for t in s] for s in gold]
    runs = tmp_path / "runs"
    _tagger_eval(runs / "eval-tagging-pretrained", gold, good)
    _tagger_eval(runs / "eval-tagging-random", gold, [["O"] * 8 for _ in gold])
    rows = dict(summary_rows(None, runs)[0])
    assert rows["tagging: pretrained + finetune"].startswith("entity F1 0.9")
    assert rows["tagging: random init + finetune"].startswith("entity F1 0.000 [0.000, 0.000]")
    assert rows["tagging: every token O"].startswith("entity F1 0.000, token accuracy")
    effect = rows["tagging: pretraining effect"]
    assert effect.startswith("pretraining helps: entity F1 +0.9") and "80 test sentences" in effect
    assert rows["tagging: pretrained + finetune vs every token O"].startswith("beats every token O: token accuracy +0.")
    # a tagger that answers O everywhere is every-token-O: no difference, and the report says so
    assert rows["tagging: random init + finetune vs every token O"] == (
        "does not beat every token O (the 95% interval includes 0): token accuracy +0.000 [+0.000, +0.000] "
        "(paired bootstrap, 80 test sentences)")

    _tagger_eval(runs / "x" / "eval-tagging-random", gold[:40], good[:40])  # another test file: not compared
    rows = dict(summary_rows(None, None, [runs / "eval-tagging-pretrained", runs / "x" / "eval-tagging-random"])[0])
    assert rows["tagging: pretraining effect"].startswith("not compared")


def test_a_tagger_below_every_token_o_is_called_so(tmp_path):
    """The symptom of the first demo: a tagger whose token accuracy is under the all-O guess."""
    rng = random.Random(1)
    gold = [[rng.choice(["O", "O", "O", "B-CODE"]) for _ in range(10)] for _ in range(60)]
    noisy = [[rng.choice(["O", "B-CODE"]) for _ in s] for s in gold]  # right half the time; all-O: 3 in 4
    runs = tmp_path / "runs"
    _tagger_eval(runs / "eval-tagging-pretrained", gold, noisy)
    row = dict(summary_rows(None, runs)[0])["tagging: pretrained + finetune vs every token O"]
    assert row.startswith("does not beat every token O; every token O is better: token accuracy -0.")


def test_empty_or_hand_edited_predictions_are_not_compared(tmp_path):
    gold = [["O", "B-CODE"]] * 5
    runs = tmp_path / "runs"
    for name in ("eval-tagging-pretrained", "eval-tagging-random"):
        _tagger_eval(runs / name, gold, gold)
    for body in ("", '{"index": 0, "gold": 5, "predicted": 3}\n'):  # nothing to resample; not tag lists
        (runs / "eval-tagging-pretrained" / "predictions.jsonl").write_text(body)
        rows = dict(summary_rows(None, runs)[0])
        assert rows["tagging: pretrained + finetune vs every token O"].startswith("not compared")
        assert rows["tagging: pretraining effect"].startswith("not compared")
