"""Memorized-sample sets: load, validate, describe.

A sample set is an int64 array of token ids ``[N, T]``, each row a prefix of length P followed by
a true suffix of length T − P (the original paper and Pythia's memorization evals use 32 + 32).
Formats:

- ``.npy``: a 2-D integer array (the original paper's format);
- ``.jsonl``: one sample a line, either a JSON list of ids, ``{"tokens": [...]}`` or
  ``{"text": "..."}`` (tokenized with the model's tokenizer, no BOS added);
- the Hugging Face data set ``EleutherAI/pythia-memorized-evals`` (``hf:<split>``, e.g.
  ``hf:duped.160m``): the split's parquet files from the local hub cache, or downloaded alone
  when the hub is reachable (``load_pythia_memorized_evals``).

Every loader ends in ``validate``, which raises ``SampleSetError`` with the reason: wrong rank,
non-integer dtype, ids outside the vocabulary, prefix length ≥ T, an empty set, rows of different
lengths.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from fnmatch import fnmatch
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


PYTHIA_MEMORIZED_EVALS = "EleutherAI/pythia-memorized-evals"
FETCH_HELP = (
    "download it where the hub is reachable (`huggingface-cli download --repo-type dataset "
    "{repo} --include 'data/{split}-*'`) and copy the cache here, or point HF_HOME / "
    "HF_HUB_CACHE at a cache that has it"
)


def _split_pattern(split: str) -> str:
    """The file names of a split in a hub data set without a loading script, as ``datasets``
    infers them (``data/duped.160m-00000-of-00002-<hash>.parquet``)."""
    try:
        from datasets.data_files import SPLIT_PATTERN_SHARDED
    except ImportError:
        raise SampleSetError("hf: data sets need `pip install datasets`.") from None
    return SPLIT_PATTERN_SHARDED.format(split=split)


def cached_split_files(split: str, repo: str = PYTHIA_MEMORIZED_EVALS) -> list[Path]:
    """The split's files in the local Hugging Face hub cache (``[]`` when absent)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    pattern = _split_pattern(split)
    try:
        root = Path(snapshot_download(repo, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError:
        return []
    return sorted(f for f in root.rglob("*") if fnmatch(f.relative_to(root).as_posix(), pattern))


def split_files(split: str, repo: str = PYTHIA_MEMORIZED_EVALS) -> list[Path]:
    """The split's parquet files: from the local hub cache, else (online) that split alone is
    downloaded into it, never the whole data set."""
    from huggingface_hub import HfApi, constants, hf_hub_download

    if files := cached_split_files(split, repo):
        return files
    where = f"hf:{split}: no split {split!r} of {repo} in the local Hugging Face cache"
    help_ = FETCH_HELP.format(repo=repo, split=split)
    if constants.HF_HUB_OFFLINE:
        raise SampleSetError(f"{where} ({constants.HF_HUB_CACHE}), and the hub is off; {help_}.")
    try:
        names = HfApi().list_repo_files(repo, repo_type="dataset")
    except OSError as err:  # unreachable: requests' ConnectionError is an OSError
        raise SampleSetError(f"{where}, and the hub is unreachable ({err}); {help_}.") from None
    pattern = _split_pattern(split)
    matched = [n for n in names if fnmatch(n, pattern)]
    if not matched:
        splits = sorted({n.split("/")[-1].split("-0")[0] for n in names if n.startswith("data/")})
        raise SampleSetError(f"{repo} has no split {split!r}; it has {', '.join(splits)}.")
    return [Path(hf_hub_download(repo, n, repo_type="dataset")) for n in matched]


def load_pythia_memorized_evals(split: str, **check) -> SampleSet:
    """``EleutherAI/pythia-memorized-evals`` (a split such as ``duped.1.4b``): its ``tokens``
    column (64 ids a row, 32 prefix + 32 suffix), read from the split's parquet files."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    name = f"pythia-memorized-evals:{split}"
    rows = []
    for f in split_files(split):
        try:
            rows.append(pq.read_table(f, columns=["tokens"]).column("tokens").combine_chunks())
        except (OSError, KeyError) as err:  # not parquet, or no tokens column
            raise SampleSetError(f"{name}: cannot read tokens from {f.name} ({err}).") from None
    lengths = {int(n) for col in rows for n in pc.unique(pc.list_value_length(col)).to_pylist()}
    if len(lengths) > 1:
        raise SampleSetError(f"{name}: rows have different lengths {sorted(lengths)}.")
    width = lengths.pop() if lengths else 0
    arr = np.concatenate([col.flatten().to_numpy().reshape(len(col), width) for col in rows])
    return SampleSet(validate(arr, name=name, **check), f"pythia-memorized-evals-{split}")


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
