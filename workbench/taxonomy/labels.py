"""Memorization taxonomies on token ids: templates, ROUGE between prefix and suffix, class labels.

Two taxonomies of a memorized sample (32-extractable: the 32 greedy tokens after a 32-token prefix
equal the true suffix, Biderman et al. 2023 / Carlini et al. 2023):

- **guess / recall** (Dentan, Buscaldi, Vanier 2025, "Guess or Recall? Training CNNs to Classify
  and Localize Memorization in LLMs", arXiv 2508.02573): a memorized sample is a *guess* when the
  model could have produced its suffix from the prefix alone: the sample follows an incrementing
  or repeating template, or the suffix overlaps the prefix strongly (ROUGE-L ≥ 0.5 or
  ROUGE-3 ≥ 0.5, between prefix and suffix token ids); every other memorized sample is a
  *recall*. Samples that are not extractable are *non-memorized*.
- **recite / reconstruct / recollect** (Prashanth et al. 2024, "Recite, Reconstruct, Recollect:
  Memorization in LMs as a Multifaceted Phenomenon", arXiv 2406.17746): *recite* = memorized and
  duplicated more than 5 times in the training data; *reconstruct* = memorized, not recited, and
  following a template (incrementing or repeating); *recollect* = the other memorized samples.
  It needs duplication counts, which we know for the embedded organism.

Both keep a third (fourth) class, *non-memorized*, so that a classifier has to tell memorized
samples from the others too, as in Dentan et al.

Templates on token ids (our operationalisation of the papers' text heuristics): a sequence
follows a template of period ``p`` when each phase moves by a constant step,
``x[t + p] - x[t] == c_(t mod p)``, for a fraction ``min_match`` of all ``t``. All steps zero is
*repeating* (a pattern of at most ``max_period`` tokens, repeated); some nonzero step is
*incrementing* (``p == 1``: a constant nonzero difference between consecutive ids, as in
``7 8 9 10``; ``p > 1``: a count inside a fixed frame, as in ``a 1 a 2 a 3`` when the ids of the
numbers are consecutive). Token ids of numbers are rarely consecutive (a trained vocabulary orders
them by frequency), so templates are looked for in *values*: :func:`numeric_values` maps every
token that spells an integer to that integer and every other token to ``OFFSET + id``, which makes
``17 18 19`` incrementing whatever its ids. Without a tokenizer, values are the ids.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from jaxtyping import Bool, Int

IdsLike = Sequence[int] | Sequence[np.integer] | np.ndarray
"""Token ids: a list of ints or numpy integers, or an array."""

GUESS_RECALL = "guess-recall"
RECITE_RECONSTRUCT_RECOLLECT = "recite-reconstruct-recollect"
TAXONOMIES: dict[str, tuple[str, ...]] = {
    GUESS_RECALL: ("non-memorized", "guess", "recall"),
    RECITE_RECONSTRUCT_RECOLLECT: ("non-memorized", "recite", "reconstruct", "recollect"),
}
"""Each taxonomy's classes, in a fixed order (class index = position)."""


@dataclass(frozen=True)
class LabelConfig:
    """Thresholds of both taxonomies; the defaults are the papers'."""

    prefix_len: int = 32
    rouge_threshold: float = 0.5  # Dentan et al.: ROUGE-L ≥ 0.5 or ROUGE-3 ≥ 0.5 → guess
    rouge_n: int = 3
    max_period: int = 8  # longest repeated / interleaved pattern counted as a template
    min_match: float = 1.0  # fraction of positions that must follow the template
    template_scope: str = "sample"  # "sample" (all 64 tokens) or "suffix"
    recite_min_duplicates: int = 6  # Prashanth et al.: duplicated more than 5 times


def _as_ids(x: IdsLike) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).ravel()


def template(
    ids: IdsLike, *, max_period: int = 8, min_match: float = 1.0
) -> tuple[str | None, int, int]:
    """The simplest template ``ids`` follows: ``(kind, period, step)`` or ``(None, 0, 0)``.

    With period ``p`` each phase ``j`` (positions ``j, j + p, j + 2p, ...``) must move by a
    constant step ``c_j`` (``x[t + p] - x[t] == c_j``); at least a fraction ``min_match`` of the
    positions must follow their phase's step. All steps zero is ``"repeating"``; any nonzero step
    is ``"incrementing"`` and ``step`` is the largest step in absolute value. The shortest period
    wins, and a period must leave at least two full repetitions (``p ≤ n / 2``).
    """
    x = _as_ids(ids)
    n = len(x)
    for p in range(1, min(max_period, n // 2) + 1):
        diff = x[p:] - x[:-p]
        hits, steps = 0, []
        for j in range(p):
            values, counts = np.unique(diff[j::p], return_counts=True)
            hits += int(counts.max())
            steps.append(int(values[np.argmax(counts)]))
        if hits / len(diff) >= min_match:
            step = max(steps, key=abs)
            return ("repeating" if step == 0 else "incrementing"), p, step
    return None, 0, 0


def lcs_length(a: IdsLike, b: IdsLike) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986, Hyyrö 2004).

    Bit j of ``v`` is 0 where the LCS row gains a unit at column j; one addition per token of
    ``a`` updates the whole row, so a 32 × 32 pair costs 32 big-integer steps, not 1,024 cells.
    """
    a, b = _as_ids(a).tolist(), _as_ids(b).tolist()
    if not a or not b:
        return 0
    masks: dict[int, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if overlap == 0 or n_candidate == 0 or n_reference == 0:
        return 0.0
    p, r = overlap / n_candidate, overlap / n_reference
    return 2 * p * r / (p + r)


def rouge_l(candidate: IdsLike, reference: IdsLike) -> float:
    """ROUGE-L F-measure (Lin 2004) between two token-id sequences."""
    c, r = _as_ids(candidate), _as_ids(reference)
    return _f1(lcs_length(c, r), len(c), len(r))


def rouge_n(candidate: IdsLike, reference: IdsLike, n: int = 3) -> float:
    """ROUGE-N F-measure: clipped n-gram overlap between two token-id sequences."""
    c, r = _as_ids(candidate).tolist(), _as_ids(reference).tolist()
    cg = Counter(tuple(c[i : i + n]) for i in range(len(c) - n + 1))
    rg = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
    overlap = sum((cg & rg).values())
    return _f1(overlap, sum(cg.values()), sum(rg.values()))


_INTEGER = re.compile(r"(?<![\w.])-?\d+(?![\w.])")


def text_incrementing(text: str, min_numbers: int = 8, min_match: float = 0.9) -> int:
    """The step of an incrementing run of integers written in ``text`` (0 if none).

    Subword vocabularies split most numbers into several tokens (``" 117"`` → ``" 1"``,
    ``"17"``), so a count on token values misses ``115 116 117 ...``; read in the text, the
    integers move by one constant nonzero step between at least ``min_match`` of their
    neighbours, and there are at least ``min_numbers`` of them. A number touching either end of
    the text may be cut (a window starts or ends inside ``" 447"``): the run is also read
    without those.
    """
    found = [m for m in _INTEGER.finditer(text) if len(m.group().lstrip("-")) < 12]
    inner = found[1:] if found and found[0].start() == 0 else found
    inner = inner[:-1] if inner and inner[-1].end() == len(text) else inner
    for run in (found, inner):
        if step := _constant_step([int(m.group()) for m in run], min_numbers, min_match):
            return step
    return 0


def _constant_step(numbers: list[int], min_numbers: int, min_match: float) -> int:
    if len(numbers) < min_numbers:
        return 0
    diffs = np.diff(numbers)
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    return step if step != 0 and counts.max() >= min_match * len(diffs) else 0


NON_NUMERIC_OFFSET = 1 << 40


def numeric_values(samples: Int[np.ndarray, "n seq"], tokenizer=None) -> Int[np.ndarray, "n seq"]:
    """Integer value of each token that spells one (``"17"``, ``" 17"``), else ``OFFSET + id``."""
    samples = np.asarray(samples, dtype=np.int64)
    if tokenizer is None:
        return samples
    ids = np.unique(samples)
    lookup = {}
    for i in ids.tolist():
        text = tokenizer.decode([i]).strip()
        is_int = text.lstrip("-").isdigit() and len(text) < 12
        lookup[i] = int(text) if is_int else NON_NUMERIC_OFFSET + i
    return np.vectorize(lookup.__getitem__, otypes=[np.int64])(samples)


def sample_features(
    samples: Int[np.ndarray, "n seq"],
    config: LabelConfig = LabelConfig(),
    values: Int[np.ndarray, "n seq"] | None = None,
    suffix_texts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per sample: template kind/period/step (on ``values``, default the ids; a sample with no
    template there whose decoded suffix, ``suffix_texts``, is an incrementing run of written
    integers is incrementing: the model could write that suffix from its prefix alone, see
    :func:`text_incrementing`) and ROUGE-L / ROUGE-N between prefix and suffix ids."""
    samples = np.asarray(samples)
    values = samples if values is None else np.asarray(values)
    if values.shape != samples.shape:
        raise ValueError(f"values {values.shape} must have the samples' shape {samples.shape}")
    if samples.ndim != 2 or samples.shape[1] <= config.prefix_len:
        raise ValueError(
            f"samples must be [n, seq] with seq > prefix_len={config.prefix_len}, "
            f"got {samples.shape}"
        )
    if config.template_scope not in ("sample", "suffix"):
        raise ValueError(f"template_scope must be sample or suffix, not {config.template_scope!r}")
    rows = []
    for row, vals in zip(samples, values, strict=True):
        prefix, suffix = row[: config.prefix_len], row[config.prefix_len :]
        scope = vals if config.template_scope == "sample" else vals[config.prefix_len :]
        kind, period, step = template(
            scope, max_period=config.max_period, min_match=config.min_match
        )
        suffix_text = suffix_texts[len(rows)] if suffix_texts is not None else ""
        if kind is None and (step := text_incrementing(suffix_text)):
            kind, period = "incrementing", 1
        rows.append(
            {
                "template": kind or "none",
                "template_period": period,
                "template_step": step,
                "rouge_l": rouge_l(suffix, prefix),
                f"rouge_{config.rouge_n}": rouge_n(suffix, prefix, config.rouge_n),
            }
        )
    out = pd.DataFrame(rows)
    out.insert(0, "sample", np.arange(len(samples)))
    return out


def guess_recall(
    memorized: Bool[np.ndarray, " n"],
    is_template: Bool[np.ndarray, " n"],
    rouge_l_score: np.ndarray,
    rouge_3_score: np.ndarray,
    threshold: float = 0.5,
) -> np.ndarray:
    """Dentan et al. 2025: guess / recall / non-memorized, one string per sample."""
    memorized = np.asarray(memorized, dtype=bool)
    guess = (
        np.asarray(is_template, dtype=bool)
        | (np.asarray(rouge_l_score) >= threshold)
        | (np.asarray(rouge_3_score) >= threshold)
    )
    return np.where(~memorized, "non-memorized", np.where(guess, "guess", "recall")).astype(object)


def recite_reconstruct_recollect(
    memorized: Bool[np.ndarray, " n"],
    is_template: Bool[np.ndarray, " n"],
    duplicates: np.ndarray,
    min_duplicates: int = 6,
) -> np.ndarray:
    """Prashanth et al. 2024: recite (duplicates > 5) / reconstruct (template) / recollect.

    Samples with an unknown duplication count (NaN) are labelled ``None`` when memorized.
    """
    memorized = np.asarray(memorized, dtype=bool)
    dup = np.asarray(duplicates, dtype=float)
    recite = dup >= min_duplicates
    label = np.where(
        recite, "recite", np.where(np.asarray(is_template, dtype=bool), "reconstruct", "recollect")
    ).astype(object)
    label[np.isnan(dup)] = None
    label[~memorized] = "non-memorized"
    return label


def label_samples(
    samples: Int[np.ndarray, "n seq"],
    memorized: Bool[np.ndarray, " n"],
    duplicates: np.ndarray | None = None,
    config: LabelConfig = LabelConfig(),
    tokenizer=None,
) -> pd.DataFrame:
    """One row per sample: the template / ROUGE evidence and the label in each taxonomy.

    ``memorized`` is the memorization engine's clean-model exact match (32-extractable);
    ``duplicates`` (training-set copies per sample) enables the Prashanth et al. taxonomy;
    ``tokenizer`` makes template detection read numbers (:func:`numeric_values`, and the
    decoded text: :func:`text_incrementing`).
    """
    memorized = np.asarray(memorized, dtype=bool)
    if len(memorized) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(memorized)} memorization verdicts")
    suffixes = None
    if tokenizer is not None:
        suffixes = [tokenizer.decode(row[config.prefix_len :]) for row in samples]
    table = sample_features(samples, config, numeric_values(samples, tokenizer), suffixes)
    is_template = (table["template"] != "none").to_numpy()
    table["memorized"] = memorized
    table[GUESS_RECALL] = guess_recall(
        memorized,
        is_template,
        table["rouge_l"].to_numpy(),
        table[f"rouge_{config.rouge_n}"].to_numpy(),
        config.rouge_threshold,
    )
    if duplicates is not None:
        duplicates = np.asarray(duplicates, dtype=float)
        if len(duplicates) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(duplicates)} duplication counts")
        table["duplicates"] = duplicates
        table[RECITE_RECONSTRUCT_RECOLLECT] = recite_reconstruct_recollect(
            memorized, is_template, duplicates, config.recite_min_duplicates
        )
    return table


def class_indices(labels: Sequence[str | None], taxonomy: str) -> np.ndarray:
    """Labels → class indices in ``TAXONOMIES[taxonomy]`` order (-1 for a missing label)."""
    classes = TAXONOMIES[taxonomy]
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(lab, -1) if lab is not None else -1 for lab in labels])
