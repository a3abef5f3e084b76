"""Memorized-sample sets: formats and the errors a user can hit (workbench.data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.data import SampleSetError, load_jsonl, load_samples, validate


def test_npy_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(3, 8)
    np.save(tmp_path / "set.npy", arr)
    s = load_samples(tmp_path / "set.npy", prefix_len=4, vocab_size=100)
    assert s.tokens.dtype == np.int64 and s.tokens.shape == (3, 8) and s.name == "set"
    assert (s.tokens == arr).all() and len(s) == 3 and s.seq_len == 8


@pytest.mark.parametrize(
    ("arr", "kwargs", "message"),
    [
        (np.arange(8), {}, "rank 1"),
        (np.zeros((2, 3, 4), dtype=np.int64), {}, "rank 3"),
        (np.zeros((2, 8), dtype=np.float32), {}, "integers"),
        (np.zeros((0, 8), dtype=np.int64), {}, "empty"),
        (np.full((2, 8), 100), {"vocab_size": 100}, "outside the vocabulary"),
        (np.full((2, 8), -1), {}, "outside the vocabulary"),
        (np.zeros((2, 8), dtype=np.int64), {"prefix_len": 8}, "prefix length 8"),
        (np.zeros((2, 8), dtype=np.int64), {"prefix_len": 0}, "prefix length 0"),
        (np.array([[1, 2], [3]], dtype=object), {}, "different lengths"),
        (np.zeros((2, 8), dtype=np.int64), {"n_ctx": 6}, "context is 6"),
    ],
)
def test_bad_sets_raise_clear_errors(arr, kwargs, message):
    with pytest.raises(SampleSetError, match=message):
        validate(arr, **kwargs)


def test_jsonl_ids_and_dicts(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("[1, 2, 3, 4]\n" + json.dumps({"tokens": [5, 6, 7, 8]}) + "\n\n")
    s = load_jsonl(path, prefix_len=2)
    assert s.tokens.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_jsonl_ragged_and_non_ids(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("[1, 2, 3]\n[1, 2]\n")
    with pytest.raises(SampleSetError, match="different lengths"):
        load_jsonl(path)
    path.write_text('["a", "b"]\n')
    with pytest.raises(SampleSetError, match="not a list of integer"):
        load_jsonl(path)
    path.write_text("")
    with pytest.raises(SampleSetError, match="empty"):
        load_jsonl(path)


def test_jsonl_text_uses_the_model_tokenizer(tmp_path, tiny_neox):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"text": "w1 w2 w3 w4"}) + "\n" + json.dumps({"text": "w5 w6 w7 w8"})
    )
    s = load_samples(path, tokenizer=tiny_neox.tokenizer, prefix_len=2, vocab_size=96)
    assert s.tokens.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # no BOS added
    with pytest.raises(SampleSetError, match="no tokenizer"):
        load_jsonl(path)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(SampleSetError, match="unknown format"):
        load_samples(tmp_path / "x.csv")
    with pytest.raises(SampleSetError, match="no sample set"):
        load_samples(tmp_path / "missing.npy")


def test_pythia_memorized_evals_without_datasets(monkeypatch):
    import sys

    for module in ("datasets", "datasets.data_files"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(SampleSetError, match="pip install datasets"):
        load_samples("hf:duped.70m")
