"""Entity-level metrics (mlmctl/seq_metrics.py) against hand-computed cases and against a
reference written here from seqeval's strict-mode definition (enumerate every span, keep the
ones the definition accepts) on random IOB2 / IOBES sequences."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.seq_metrics import entities, entity_report, split_tag


def _ref_entities(tags, scheme, s=0):
    """Every span (i, j) that the strict definition accepts, by brute force.

    IOB2: tags[i] = B-T, tags[i+1:j] all I-T, and tags[j] (or the end) is not I-T.
    IOBES: S-T alone; or B-T, tags[i+1:j-1] all I-T, tags[j-1] = E-T."""
    out = set()
    n = len(tags)
    for i in range(n):
        for j in range(i + 1, n + 1):
            first = tags[i]
            if first == "O":
                continue
            t = first[2:]
            if scheme == "iob2":
                if (first == f"B-{t}" and all(x == f"I-{t}" for x in tags[i + 1:j])
                        and (j == n or tags[j] != f"I-{t}")):
                    out.add((s, i, j, t))
            else:
                if j == i + 1 and first == f"S-{t}":
                    out.add((s, i, j, t))
                if (j >= i + 2 and first == f"B-{t}" and tags[j - 1] == f"E-{t}"
                        and all(x == f"I-{t}" for x in tags[i + 1:j - 1])):
                    out.add((s, i, j, t))
    return out


def _ref_f1(gold, pred, scheme):
    g = set().union(*[_ref_entities(t, scheme, s) for s, t in enumerate(gold)])
    p = set().union(*[_ref_entities(t, scheme, s) for s, t in enumerate(pred)])
    tp = len(g & p)
    prec = tp / len(p) if p else 0.0
    rec = tp / len(g) if g else 0.0
    return 2 * prec * rec / (prec + rec) if prec + rec else 0.0


def _tags(scheme):
    prefixes = "BI" if scheme == "iob2" else "BIES"
    return st.sampled_from(["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC")])


def _corpus(scheme):
    sent = st.lists(st.tuples(_tags(scheme), _tags(scheme)), min_size=0, max_size=12)
    return st.lists(sent, min_size=1, max_size=4)


@pytest.mark.parametrize("scheme", ["iob2", "iobes"])
def test_entity_f1_equals_reference(scheme):
    @settings(max_examples=300, deadline=None)
    @given(_corpus(scheme))
    def check(corpus):
        gold = [[a for a, _ in s] for s in corpus]
        pred = [[b for _, b in s] for s in corpus]
        for s, tags in enumerate(gold):
            assert set(entities(tags, scheme, s)) == _ref_entities(tags, scheme, s)
        rep = entity_report(gold, pred, scheme)
        assert rep["micro_f1"] == pytest.approx(_ref_f1(gold, pred, scheme))
        for kind, v in rep["per_type"].items():
            assert 0.0 <= v["f1"] <= 1.0

    check()


def test_strict_iob2_hand_cases():
    # I-PER after O starts no entity; B-PER I-LOC is a one-token PER, the I-LOC nothing.
    assert entities(["O", "I-PER", "I-PER"], "iob2") == []
    assert entities(["B-PER", "I-LOC", "B-LOC", "I-LOC", "O"], "iob2") == [(0, 0, 1, "PER"), (0, 2, 4, "LOC")]
    assert entities(["B-PER", "B-PER"], "iob2") == [(0, 0, 1, "PER"), (0, 1, 2, "PER")]
    assert entities(["B-MISC-X", "I-MISC-X"], "iob2") == [(0, 0, 2, "MISC-X")]  # hyphen inside the type


def test_strict_iobes_hand_cases():
    assert entities(["S-PER", "B-LOC", "I-LOC", "E-LOC"], "iobes") == [(0, 0, 1, "PER"), (0, 1, 4, "LOC")]
    assert entities(["B-LOC", "I-LOC", "O"], "iobes") == []  # never closed
    assert entities(["B-LOC", "E-PER"], "iobes") == []  # closed by another type
    assert entities(["I-LOC", "E-LOC"], "iobes") == []


def test_report_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    rep = entity_report(gold, pred)
    # gold: PER, LOC, ORG; pred: PER, ORG, ORG(wrong type at 0:3); correct: PER, ORG(1)
    assert rep["micro_precision"] == pytest.approx(2 / 3) and rep["micro_recall"] == pytest.approx(2 / 3)
    assert rep["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert rep["per_type"]["ORG"]["precision"] == pytest.approx(0.5)
    assert rep["per_type"]["ORG"]["recall"] == pytest.approx(1.0)
    assert rep["macro_f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)
    assert rep["weighted_f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)  # support 1 each
    assert rep["accuracy"] == pytest.approx(5 / 6)
    assert rep["n_sentences"] == 2 and rep["n_tokens"] == 6


def test_tag_outside_scheme_and_mismatched_lengths():
    with pytest.raises(ValueError, match="not in the IOB2 scheme"):
        entities(["B-PER", "E-PER"], "iob2")
    with pytest.raises(ValueError, match="not in the IOBES scheme"):
        split_tag("PER", "iobes")
    with pytest.raises(ValueError, match="2 gold tags but 1"):
        entity_report([["O", "O"]], [["O"]])
