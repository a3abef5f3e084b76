"""Baselines beside the attention-map CNN, fit on a split's training part, scored like it.

- ``majority``: the most frequent training class, always;
- ``suffix-nll``: the clean model's suffix NLL alone, cut into intervals by a decision tree with
  at most one leaf per class and class-balanced weights;
- ``rouge-rule``: the guess evidence alone (a template, or ROUGE-L / ROUGE-3 ≥ 0.5 between prefix
  and suffix), each of its two values mapped to the class most frequent there after balancing;
- ``attention-mass``: logistic regression (balanced, standardized) on per-layer attention mass
  of the head-pooled maps: self-attention (diagonal), previous-token (first sub-diagonal) and the
  rest, averaged over prefix and over suffix query positions (6 numbers per layer).

A CNN counts as informative only where it beats every one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Bool, Float, Int

Fit = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``fit(train_idx, y_train, test_idx) -> predicted classes of the test samples``."""


def attention_mass(
    maps: Float[np.ndarray, "n layer seq seq"], prefix_len: int = 32, chunk: int = 512
) -> Float[np.ndarray, "n features"]:
    """Per sample and layer: mean diagonal, sub-diagonal and remaining mass of the query rows
    of the prefix (positions 1 .. prefix_len - 1) and of the suffix."""
    n, layers, seq, _ = maps.shape
    out = np.empty((n, layers, 2, 3), dtype=np.float64)
    eye, sub = np.eye(seq, dtype=bool), np.eye(seq, k=-1, dtype=bool)
    for start in range(0, n, chunk):
        x = np.asarray(maps[start : start + chunk], dtype=np.float64)
        diag, prev = (x * eye).sum(-1), (x * sub).sum(-1)  # [b, layer, query]
        rest = x.sum(-1) - diag - prev
        for part, rows in enumerate((slice(1, prefix_len), slice(prefix_len, seq))):
            for j, v in enumerate((diag, prev, rest)):
                out[start : start + chunk, :, part, j] = v[..., rows].mean(-1)
    return out.reshape(n, -1)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y)
    return 1.0 / counts[y]


def majority() -> Fit:
    def fit(train, y_train, test):
        return np.full(len(test), np.bincount(y_train).argmax())

    return fit


def suffix_nll(nll: Float[np.ndarray, " n"], n_classes: int) -> Fit:
    from sklearn.tree import DecisionTreeClassifier

    def fit(train, y_train, test):
        tree = DecisionTreeClassifier(
            max_leaf_nodes=max(2, n_classes), class_weight="balanced", random_state=0
        )
        tree.fit(nll[train, None], y_train)
        return tree.predict(nll[test, None])

    return fit


def rouge_rule(evidence: Bool[np.ndarray, " n"], n_classes: int) -> Fit:
    def fit(train, y_train, test):
        w = _balanced_weights(y_train)
        pick = {}
        for value in (False, True):
            here = evidence[train] == value
            mass = np.bincount(y_train[here], weights=w[here], minlength=n_classes)
            pick[value] = int(mass.argmax()) if here.any() else int(np.bincount(y_train).argmax())
        return np.where(evidence[test], pick[True], pick[False])

    return fit


def attention_logreg(x: Float[np.ndarray, "n features"]) -> Fit:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(train, y_train, test):
        model = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        model.fit(x[train], y_train)
        return model.predict(x[test])

    return fit


def baselines(
    nll: Float[np.ndarray, " n"] | None,
    evidence: Bool[np.ndarray, " n"],
    mass: Float[np.ndarray, "n features"],
    n_classes: int,
) -> dict[str, Fit]:
    """The four baselines, by the name the tables give them (no suffix-NLL one without NLLs)."""
    fits = {"majority": majority()}
    if nll is not None:
        fits["suffix-nll"] = suffix_nll(np.asarray(nll, dtype=float), n_classes)
    fits["rouge-rule"] = rouge_rule(np.asarray(evidence, dtype=bool), n_classes)
    fits["attention-mass"] = attention_logreg(mass)
    return fits


def predict_all(fits: dict[str, Fit], y: Int[np.ndarray, " n"], train, test) -> dict:
    """Each baseline's predictions on ``test`` after fitting on ``train``."""
    return {name: fit(train, y[train], test) for name, fit in fits.items()}
