"""The organism's sample sets: training windows the main member does and does not reproduce.

A *window* is a run of 64 tokens starting at offset 0, 32 or 64 of a row of the training stream
(``start``: its flat stream position; ``stream_row``, ``offset``). Pythia's memorization
evaluations cut their sequences at offset 0; Dentan et al. draw windows from anywhere. The sample
sets are drawn from the windows every ``STRIDE`` tokens; the taxonomy's census adds those every
``CENSUS_STRIDE`` tokens that are not among them (``window_table(..., exclude=...)``).
``window_table`` describes every distinct window: where it first occurs, what it is made of (the
kind and source of most of its tokens, the canary it is), how often it occurs in the whole stream
(``duplicates.py``), when it is first trained on, and the guess evidence of the taxonomy (template,
ROUGE between prefix and suffix). ``build.score_windows`` adds the clean main member's verdicts
(exact match of the greedy 32-token suffix, teacher-forced token accuracy). ``select`` draws

* ``memorized.npy``: windows with exact match 1.0, spread over kinds and duplication bins;
* ``control.npy``: windows with exact match 0.0, the same number from each kind;

both int64 ``[N, 64]`` (32-token prefix + 32-token suffix), with their rows of the table; and
``taxonomy_set`` draws the taxonomy's balanced set from the whole census.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jaxtyping import Int

from workbench.organism import duplicates
from workbench.organism.corpus import EOS_KIND, KINDS, PREFIX_LEN, SLOT, Corpus
from workbench.organism.train import TrainConfig, training_order
from workbench.taxonomy.labels import LabelConfig, numeric_values, sample_features

STRIDE = PREFIX_LEN  # windows start every 32 tokens of a row
CENSUS_STRIDE = PREFIX_LEN // 2  # the census for the taxonomy adds the windows in between
DUP_BINS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def dup_bin(counts: np.ndarray) -> np.ndarray:
    """The largest power-of-two bin edge at most each count (1, 2, 4, ..., 512)."""
    edges = np.array(DUP_BINS)
    return edges[np.searchsorted(edges, counts, side="right") - 1]


def window_starts(rows: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Flat stream positions of every window: offsets 0, ``stride``, ... inside each row."""
    offsets = np.arange(0, rows.shape[1] - SLOT + 1, stride)
    return (np.arange(len(rows))[:, None] * rows.shape[1] + offsets[None]).ravel()


def _windows(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    flat = a.ravel()
    return flat[starts[:, None] + np.arange(SLOT)[None]]


def _row_keys(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def window_table(
    corpus: Corpus,
    batch_size: int = TrainConfig.batch_size,
    stride: int = STRIDE,
    exclude: np.ndarray | None = None,
) -> tuple[pd.DataFrame, Int[np.ndarray, "n 64"]]:
    """Every distinct window of the stream, first occurrence first; none whose tokens are a
    row of ``exclude`` (the windows of an earlier table)."""
    seq_len = corpus.rows.shape[1]
    every = window_starts(corpus.rows, stride)
    windows = _windows(corpus.rows, every)
    _, first = np.unique(windows, axis=0, return_index=True)
    first = np.sort(first)
    if exclude is not None:
        first = first[~np.isin(_row_keys(windows[first]), _row_keys(exclude))]
    starts, tokens = every[first], windows[first]
    kinds = _windows(corpus.kinds, starts)
    docs = _windows(corpus.doc_ids, starts)
    counts = np.stack([np.bincount(k[k != EOS_KIND], minlength=len(KINDS)) for k in kinds])
    main_kind = counts.argmax(1)
    canary_at = {s * SLOT: c["canary_id"] for c in corpus.canaries for s in c["slots"]}
    step_of_row = np.empty(len(corpus.rows), dtype=np.int64)
    step_of_row[training_order(len(corpus.rows))] = np.arange(len(corpus.rows)) // batch_size
    source = []
    for d in docs:
        d = d[d >= 0]
        source.append(corpus.documents[np.bincount(d).argmax()]["source"] if len(d) else "")
    table = pd.DataFrame(
        {
            "start": starts,
            "stream_row": starts // seq_len,
            "offset": starts % seq_len,
            "kind": np.array(KINDS)[main_kind],
            "kind_share": counts.max(1) / SLOT,
            "source": source,
            "canary_id": [canary_at.get(int(s), -1) for s in starts],
            "dup_count": duplicates.window_counts(corpus.rows, tokens),
            "first_step": step_of_row[starts // seq_len],
        }
    )
    table["dup_bin"] = dup_bin(table.dup_count.to_numpy())
    values = numeric_values(tokens, corpus.tokenizer)
    suffixes = corpus.tokenizer.batch_decode(tokens[:, PREFIX_LEN:])
    evidence = sample_features(tokens, LabelConfig(prefix_len=PREFIX_LEN), values, suffixes)
    table["template"] = evidence["template"].to_numpy()
    table["rouge_l"] = evidence["rouge_l"].to_numpy()
    table["rouge_3"] = evidence["rouge_3"].to_numpy()
    table["guess"] = (
        (table.template != "none") | (table.rouge_l >= 0.5) | (table.rouge_3 >= 0.5)
    ).to_numpy()
    return table, tokens


def select(
    table: pd.DataFrame,
    tokens: np.ndarray,
    n: int = 1200,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """``memorized`` and ``control`` sets: round-robin over (kind, dup_bin) cells, seeded."""
    rng = np.random.default_rng(seed)
    out = {}
    memorized = table[table.exact_match == 1.0]
    chosen = _round_robin(memorized, ["kind", "dup_bin"], n, rng)
    per_kind = memorized.loc[chosen].kind.value_counts()
    control_rows = []
    for kind, k in per_kind.items():
        pool = table[(table.exact_match == 0.0) & (table.kind == kind)]
        control_rows += _round_robin(pool, ["dup_bin"], k, rng)
    for name, rows in (("memorized", chosen), ("control", control_rows)):
        sub = table.loc[rows].reset_index(drop=True)
        sub.insert(0, "sample", np.arange(len(sub)))
        out[name] = (tokens[rows].astype(np.int64), sub)
    return out


TAXONOMY_PER_CLASS = 1600  # >= 1,000 training + 300 test per class after a 0.3 split, with room


def taxonomy_set(
    table: pd.DataFrame, tokens: np.ndarray, per_class: int = TAXONOMY_PER_CLASS, seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame]:
    """The taxonomy's balanced set (Dentan et al. sample each class alike): ``per_class`` guess,
    recall and non-memorized windows of the census, uniformly within a class, seeded. The
    non-memorized windows follow the kind mix of the memorized ones drawn (a classifier must
    tell memorized reasoning from unmemorized reasoning, not reasoning from code). The column
    ``drawn_as`` names the class each window was drawn for."""
    rng = np.random.default_rng(seed)
    memorized = table.exact_match == 1.0
    picked = {}
    for name, pool in (("guess", memorized & table.guess), ("recall", memorized & ~table.guess)):
        index = table.index[pool.to_numpy()]
        if len(index) < per_class:
            raise ValueError(f"the census has {len(index)} {name} windows, < {per_class}")
        picked[name] = rng.choice(index, per_class, replace=False)
    drawn = table.loc[np.concatenate(list(picked.values()))]
    shares = drawn.kind.value_counts().sort_index()
    quota = np.floor(shares / shares.sum() * per_class).astype(int)
    quota.iloc[np.argsort(-shares.to_numpy())[: per_class - quota.sum()]] += 1  # largest first
    control = []
    for kind, k in quota.items():
        pool = table.index[((table.exact_match == 0.0) & (table.kind == kind)).to_numpy()]
        control.append(rng.choice(pool, k, replace=False))
    picked["non-memorized"] = np.concatenate(control)
    rows = np.concatenate(list(picked.values()))
    sub = table.loc[rows].reset_index(drop=True)
    sub.insert(0, "sample", np.arange(len(sub)))
    sub["drawn_as"] = np.repeat(list(picked), [len(v) for v in picked.values()])
    return tokens[table.index.get_indexer(rows)].astype(np.int64), sub


def _round_robin(pool: pd.DataFrame, by: list[str], n: int, rng: np.random.Generator) -> list:
    """Up to ``n`` index labels of ``pool``, one from each cell of ``by`` in turn."""
    cells = [list(rng.permutation(g.index.to_numpy())) for _, g in pool.groupby(by)]
    picked: list = []
    while len(picked) < n and any(cells):
        for cell in cells:
            if cell and len(picked) < n:
                picked.append(cell.pop())
    return sorted(picked)
