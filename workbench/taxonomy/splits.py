"""Repeated stratified splits that keep related windows on one side.

The organism's taxonomy windows are cut every 16 tokens, so windows of one row overlap by up to
48 tokens, and a planted canary recurs in many rows at shifts of 16. A split that puts one of
them in training and its neighbour in test measures recognition, not classification. Groups
(union-find): windows of one ``stream_row``; windows with an identical 32-token prefix or an
identical 32-token suffix; windows of a canary (``kind`` starting with ``canary``) sharing any
32-token run. Memorized text is duplicated text by nature (licences recur across packages,
reasoning lines share phrasing), so near-duplicates beyond these links remain across a split:
:func:`overlap_with_training` measures how many test windows share a 32-token run with training.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from jaxtyping import Int

log = logging.getLogger(__name__)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def link(self, keys) -> None:
        """Join every two rows that have a key in common (``keys[i]``: row ``i``'s key, or a
        list of its keys)."""
        first: dict = {}
        for i, row_keys in enumerate(keys):
            for key in row_keys if isinstance(row_keys, list) else [row_keys]:
                j = first.setdefault(key, i)
                if j != i:
                    self.parent[self.find(i)] = self.find(j)


def _runs(row: np.ndarray, n: int):
    return [row[s : s + n].tobytes() for s in range(len(row) - n + 1)]


def sample_groups(
    tokens: Int[np.ndarray, "n seq"], truth: pd.DataFrame | None, prefix_len: int = 32
) -> Int[np.ndarray, " n"]:
    """A group id per sample (the smallest sample index of its group)."""
    uf = _UnionFind(len(tokens))
    uf.link([r[:prefix_len].tobytes() for r in tokens])
    uf.link([r[prefix_len:].tobytes() for r in tokens])
    if truth is not None and "stream_row" in truth:
        uf.link(truth["stream_row"].tolist())
    if truth is not None and "kind" in truth:
        canary = truth["kind"].astype(str).str.startswith("canary").to_numpy()
        uf.link([_runs(r, prefix_len) if c else [] for r, c in zip(tokens, canary, strict=True)])
    roots = np.array([uf.find(i) for i in range(len(tokens))])
    _, first = np.unique(roots, return_index=True)
    return first[np.unique(roots, return_inverse=True)[1]]


def grouped_splits(
    labels: Int[np.ndarray, " n"],
    groups: Int[np.ndarray, " n"] | None,
    n_splits: int = 5,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` train / test index pairs, split ``s`` drawn with seed ``seed + s``: groups in
    a random order go to test while the class most of their samples belong to has fewer than
    ``test_fraction`` of its samples there; no group is on both sides. Labels -1 go to neither;
    without groups every sample is its own group."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    kept = np.flatnonzero(labels >= 0)
    ids, inverse = np.unique(groups[kept], return_inverse=True)
    n_classes = int(labels[kept].max()) + 1 if len(kept) else 0
    counts = np.zeros((len(ids), n_classes), dtype=np.int64)
    np.add.at(counts, (inverse, labels[kept]), 1)
    target = test_fraction * counts.sum(0)
    out = []
    for split in range(n_splits):
        rng = np.random.default_rng(seed + split)
        in_test = np.zeros(len(ids), dtype=bool)
        have = np.zeros(n_classes)
        for g in rng.permutation(len(ids)):
            main = counts[g].argmax()
            if have[main] + counts[g, main] / 2 <= target[main]:
                in_test[g] = True
                have += counts[g]
        test = kept[in_test[inverse]]
        train = kept[~in_test[inverse]]
        out.append((np.sort(train), np.sort(test)))
        share = np.round(have / np.maximum(counts.sum(0), 1), 3)
        log.info("split %d: test fraction per class %s", split, share)
    return out


def overlap_with_training(
    tokens: Int[np.ndarray, "n seq"], train: np.ndarray, test: np.ndarray, n: int = 32
) -> np.ndarray:
    """Per test sample: whether it shares an ``n``-token run with some training sample."""
    seen = {run for i in train for run in _runs(tokens[i], n)}
    return np.array([any(run in seen for run in _runs(tokens[i], n)) for i in test], dtype=bool)
