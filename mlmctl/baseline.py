"""A bag-of-words baseline beside every classifier: tf-idf features and logistic regression
(ridge regression for a regression task), trained on the same train file as the encoder.

    bow = BowBaseline().fit(train.texts, train_ids, pairs=train.pairs, num_labels=len(labels))
    pred = bow.predict(test.texts, test.pairs)
    report = baseline_report(train, test, labels)       # metrics.classification_report of it

Why a few lines of torch and not scikit-learn: the baseline runs beside every `eval` of a
classifier, so it must not depend on an optional extra, and scikit-learn pulls in SciPy
(`pip download scikit-learn`: 9 MB + SciPy 35 MB of wheels, ~150 MB installed) for what is a
sparse matrix product and a convex fit. torch (a core dependency) has both: sparse COO tensors
and `torch.optim.LBFGS`, the solver scikit-learn's `LogisticRegression` uses by default. The
objective is scikit-learn's, so a correct solver reaches the same optimum:

- features as `TfidfVectorizer` defaults, plus bigrams: lower-cased tokens of 2+ word
  characters (`(?u)\\b\\w\\w+\\b`), word uni- and bigrams, idf = ln((1 + n) / (1 + df)) + 1,
  raw counts times idf, each row scaled to unit L2 norm. The second text of a pair gets its own
  features (prefix `b:`), so "word in the premise" and "word in the hypothesis" differ. At most
  `max_features` features, the most frequent in the train file (ties alphabetical).
- classification: multinomial logistic regression, `C * sum(cross-entropy) + ||W||^2 / 2`
  (divided by C * n here, same minimum); regression: ridge, `sum(squared error) + alpha ||w||^2`.
  No penalty on the bias, as in scikit-learn. C = 10, not scikit-learn's default 1: with a few
  hundred training examples C = 1 underfits badly (the 3-class toy task of tests/test_baseline.py:
  test accuracy 0.69 at C = 1, 0.94 at C = 10, both at the optimum); C is fixed, not tuned on
  dev, so the baseline stays one cheap, reproducible fit.

Deterministic: no random init (weights start at 0), full-batch L-BFGS in float64.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlmctl.metrics import classification_report

if TYPE_CHECKING:
    from mlmctl.labelled import LabelledData

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _features(text: str, prefix: str = "") -> list[str]:
    words = _TOKEN.findall(text.lower())
    return [prefix + w for w in words] + [f"{prefix}{a} {b}" for a, b in zip(words, words[1:])]


class BowBaseline:
    def __init__(self, max_features: int = 100_000, c: float = 10.0, max_iter: int = 300):
        self.max_features, self.c, self.max_iter = max_features, c, max_iter
        self.vocab: dict[str, int] = {}
        self.idf: list[float] = []
        self.regression = False

    def _docs(self, texts: Sequence[str], pairs: Sequence[str] | None) -> list[list[str]]:
        if pairs is None:
            return [_features(t) for t in texts]
        return [_features(a) + _features(b, "b:") for a, b in zip(texts, pairs, strict=True)]

    def _matrix(self, docs: list[list[str]]):
        """Rows of L2-normalised tf-idf as a sparse (n, V) float64 tensor."""
        import torch

        rows, cols, vals = [], [], []
        for r, doc in enumerate(docs):
            counts = Counter(self.vocab[f] for f in doc if f in self.vocab)
            weights = {j: n * self.idf[j] for j, n in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for j in sorted(weights):
                rows.append(r)
                cols.append(j)
                vals.append(weights[j] / norm)
        idx = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
        return torch.sparse_coo_tensor(idx, torch.tensor(vals, dtype=torch.float64),
                                       (len(docs), len(self.vocab)), check_invariants=False).coalesce()

    def fit(self, texts: Sequence[str], labels: Sequence[int] | Sequence[float], pairs: Sequence[str] | None = None,
            num_labels: int | None = None) -> BowBaseline:
        """Fit on label ids (`num_labels` classes), or on float targets when `num_labels` is None."""
        import torch

        if not texts or len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        docs = self._docs(texts, pairs)
        df = Counter(f for doc in docs for f in set(doc))
        kept = sorted(df, key=lambda f: (-df[f], f))[: self.max_features]
        self.vocab = {f: i for i, f in enumerate(sorted(kept))}
        n = len(docs)
        self.idf = [math.log((1 + n) / (1 + df[f])) + 1 for f in sorted(kept)]
        X = self._matrix(docs)
        self.regression = num_labels is None
        k = 1 if self.regression else num_labels
        self.W = torch.zeros(len(self.vocab), k, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        y = torch.tensor(labels, dtype=torch.float64 if self.regression else torch.long)
        opt = torch.optim.LBFGS([self.W, self.b], lr=1, max_iter=self.max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = self._objective(X, y, n)
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def _objective(self, X, y, n: int):
        import torch.nn.functional as F

        out = self._scores(X)
        if self.regression:  # ridge, alpha = 1: (sum sq. error + ||w||^2) / n
            return (F.mse_loss(out[:, 0], y, reduction="sum") + (self.W**2).sum()) / n
        return F.cross_entropy(out, y) + (self.W**2).sum() / (2 * self.c * n)

    def _scores(self, X):
        import torch

        return torch.sparse.mm(X, self.W) + self.b  # (n, V) @ (V, K) -> (n, K)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
        """Label ids (ties go to the lowest id), or floats for a regression fit."""
        import torch

        with torch.no_grad():
            out = self._scores(self._matrix(self._docs(texts, pairs)))
        return out[:, 0].tolist() if self.regression else out.argmax(dim=1).tolist()


def baseline_report(train: LabelledData, test: LabelledData, labels: Sequence[str]) -> dict:
    """`metrics.classification_report` of the bag-of-words baseline trained on `train`."""
    label2id = {lab: i for i, lab in enumerate(labels)}
    bow = BowBaseline().fit(train.texts, [label2id[x] for x in train.labels], train.pairs, len(labels))
    return classification_report([label2id[x] for x in test.labels], bow.predict(test.texts, test.pairs), labels)
