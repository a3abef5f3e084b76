"""Exact occurrence counts of 64-token windows over the training stream (``sequence_duplicates``).

The model sees its stream as rows; a window is a run of ``width`` consecutive tokens inside one
row (a run across two rows is never seen as one context, so it is not counted). ``window_counts``
hashes every such run with two independent 64-bit polynomial hashes (a collision needs both to
collide: probability about n²/2¹²⁸, n the number of runs) and counts each query window's pair.
``count_naive`` is the obvious quadratic count the tests hold it to.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Int

BASES = (np.uint64(0x100000001B3), np.uint64(0x9E3779B97F4A7C15))


def _hashes(rows: Int[np.ndarray, "r t"], width: int, base: np.uint64) -> np.ndarray:
    """[r, t - width + 1] hashes of every run of ``width`` tokens, wrapping mod 2**64."""
    x = rows.astype(np.uint64) + np.uint64(1)
    prefix = np.zeros((x.shape[0], x.shape[1] + 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(x.shape[1]):
            prefix[:, i + 1] = prefix[:, i] * base + x[:, i]
        shift = np.uint64(1)
        for _ in range(width):
            shift = shift * base
        return prefix[:, width:] - prefix[:, :-width] * shift


def _keys(rows: np.ndarray, width: int) -> np.ndarray:
    pair = np.stack([_hashes(rows, width, b).ravel() for b in BASES], axis=1)
    return pair.view(np.dtype([("a", np.uint64), ("b", np.uint64)])).ravel()


def window_counts(
    rows: Int[np.ndarray, "r t"], windows: Int[np.ndarray, "n w"], chunk: int = 8192
) -> np.ndarray:
    """How many times each of ``windows`` occurs as a run inside some row of ``rows``."""
    width = windows.shape[1]
    parts = [_keys(rows[i : i + chunk], width) for i in range(0, len(rows), chunk)]
    keys, counts = np.unique(np.concatenate(parts), return_counts=True)
    query = _keys(windows, width)
    idx = np.searchsorted(keys, query)
    idx = np.minimum(idx, len(keys) - 1)
    return np.where(keys[idx] == query, counts[idx], 0).astype(np.int64)


def count_naive(rows: np.ndarray, window: np.ndarray) -> int:
    """The same count, one comparison per position (slow; for tests)."""
    w = len(window)
    return sum(
        int(np.array_equal(row[s : s + w], window)) for row in rows for s in range(len(row) - w + 1)
    )
