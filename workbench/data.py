"""Memorized-sample sets: load, validate, describe.

A sample set is an int64 array of token ids ``[N, T]``, each row a prefix of length P followed by
a true suffix of length T − P (the original paper and Pythia's memorization evals use 32 + 32).
Formats:

- ``.npy``: a 2-D integer array (the original paper's format);
- ``.jsonl``: one sample a line, either a JSON list of ids, ``{"tokens": [...]}`` or
  ``{"text": "..."}`` (tokenized with the model's tokenizer, no BOS added);
- the Hugging Face data set ``EleutherAI/pythia-memorized-evals`` (``hf:<split>``), when it is in
  the local cache (``load_pythia_memorized_evals``).

Every loader ends in ``validate``, which raises ``SampleSetError`` with the reason: wrong rank,
non-integer dtype, ids outside the vocabulary, prefix length ≥ T, an empty set, rows of different
lengths.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import UserError

log = logging.getLogger(__name__)


class SampleSetError(UserError, ValueError):
    """A memorized-sample set the workbench cannot evaluate."""


@dataclass(frozen=True)
class SampleSet:
    tokens: np.ndarray  # int64 [N, T]
    name: str

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]


def validate(
    tokens: np.ndarray,
    *,
    prefix_len: int | None = None,
    vocab_size: int | None = None,
    n_ctx: int | None = None,
    name: str = "samples",
) -> np.ndarray:
    """Check a token array and return it as a C-contiguous int64 ``[N, T]`` array."""
    arr = np.asarray(tokens)
    if arr.dtype == object:
        raise SampleSetError(f"{name}: rows have different lengths (or are not numbers).")
    if arr.ndim != 2:
        raise SampleSetError(
            f"{name}: expected a 2-D array [samples, tokens], got rank {arr.ndim} "
            f"with shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise SampleSetError(f"{name}: the sample set is empty.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SampleSetError(f"{name}: token ids must be integers, got dtype {arr.dtype}.")
    if prefix_len is not None and (prefix_len < 1 or prefix_len >= arr.shape[1]):
        raise SampleSetError(
            f"{name}: prefix length {prefix_len} must be in [1, T) with "
            f"T = {arr.shape[1]} tokens per sample (no suffix left otherwise)."
        )
    if n_ctx is not None and arr.shape[1] > n_ctx:
        raise SampleSetError(
            f"{name}: {arr.shape[1]} tokens per sample, but the model's context is {n_ctx}."
        )
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        bad = np.argwhere(arr > np.iinfo(np.int64).max)[0]
        raise SampleSetError(
            f"{name}: token id {int(arr[tuple(bad)])} at row {bad[0]}, column {bad[1]} does not "
            "fit in int64."
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bad = np.argwhere((arr < 0) | (arr >= (vocab_size or np.iinfo(np.int64).max)))[0]
        raise SampleSetError(
            f"{name}: token id {int(arr[tuple(bad)])} at row {bad[0]}, column "
            f"{bad[1]} is outside the vocabulary [0, {vocab_size})."
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def load_npy(path: str | Path, **check) -> SampleSet:
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (EOFError, OSError, ValueError) as err:  # empty, truncated, pickled or not .npy
        why = "it is empty" if path.stat().st_size == 0 else str(err).rstrip(".")
        raise SampleSetError(f"{path}: not a readable .npy array of token ids ({why}).") from None
    return SampleSet(validate(arr, name=path.name, **check), path.stem)


def load_jsonl(path: str | Path, tokenizer=None, **check) -> SampleSet:
    """One sample a line: a list of ids, ``{"tokens": [...]}`` or ``{"text": ...}``."""
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise SampleSetError(f"{path}: starts with a UTF-8 byte-order mark; save it without one.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw[: err.start].count(b"\n") + 1
        raise SampleSetError(f"{path}: line {line_no} is not UTF-8 (latin-1?).") from None
    rows = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SampleSetError(f"{path}: line {i + 1} is not JSON ({err.msg}).") from None
        if isinstance(item, dict) and "text" in item:
            if tokenizer is None:
                raise SampleSetError(
                    f"{path.name}: line {i + 1} holds text, but there is no tokenizer (the "
                    'model has none); give token ids: .npy, or jsonl lists / {"tokens": [...]}.'
                )
            item = tokenizer(item["text"], add_special_tokens=False)["input_ids"]
        elif isinstance(item, dict):
            item = item.get("tokens", item.get("input_ids"))
        if not isinstance(item, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            raise SampleSetError(f"{path.name}: line {i + 1} is not a list of integer token ids.")
        big = [t for t in item if not 0 <= t < 2**63]
        if big:
            raise SampleSetError(
                f"{path}: line {i + 1} holds token id {big[0]}, outside [0, 2**63)."
            )
        rows.append(item)
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise SampleSetError(f"{path.name}: rows have different lengths {sorted(lengths)}.")
    arr = np.array(rows, dtype=np.int64) if rows else np.zeros((0, 0), dtype=np.int64)
    return SampleSet(validate(arr, name=path.name, **check), path.stem)


def load_pythia_memorized_evals(split: str, **check) -> SampleSet:
    """``EleutherAI/pythia-memorized-evals`` (a split such as ``duped.1.4b``), from the HF cache.

    Each row holds ``tokens`` (64 ids, 32 prefix + 32 suffix). Needs the ``datasets`` package and
    the data set in the local Hugging Face cache (no download is attempted here).
    """
    try:
        import datasets
    except ImportError as err:
        raise SampleSetError(
            "loading pythia-memorized-evals needs `pip install datasets`."
        ) from err
    ds = datasets.load_dataset(
        "EleutherAI/pythia-memorized-evals", split=split, download_mode="reuse_cache_if_exists"
    )
    arr = np.array(ds["tokens"], dtype=np.int64)
    return SampleSet(
        validate(arr, name=f"pythia-memorized-evals:{split}", **check),
        f"pythia-memorized-evals-{split}",
    )


def load_samples(
    spec: str | Path,
    *,
    tokenizer=None,
    prefix_len: int | None = None,
    vocab_size: int | None = None,
) -> SampleSet:
    """Dispatch on the file: ``*.npy``, ``*.jsonl`` or ``hf:<split>`` (pythia-memorized-evals)."""
    check = {"prefix_len": prefix_len, "vocab_size": vocab_size}
    spec_str = str(spec)
    if spec_str.startswith("hf:"):
        return load_pythia_memorized_evals(spec_str[3:], **check)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SampleSetError(f"no sample set at {path}.")
    if path.suffix == ".npy":
        return load_npy(path, **check)
    if path.suffix in (".jsonl", ".json"):
        return load_jsonl(path, tokenizer, **check)
    raise SampleSetError(f"{path.name}: unknown format; use .npy, .jsonl or hf:<split>.")
