"""The organism's recipe pieces against independent oracles: naive counting, byte round trips,
an uninterrupted training run, and (when the locked wheels are at hand) the shipped manifest."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.organism import duplicates, registry, sources
from workbench.organism.corpus import Corpus, CorpusConfig, build_corpus, train_tokenizer
from workbench.organism.train import TrainConfig, train_member


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 12),
    width=st.integers(2, 6),
    vocab=st.integers(2, 4),
)
def test_window_counts_equal_naive_counting(seed, n_rows, width, vocab):
    """Small vocabularies make repeats (and near misses) common; runs across rows never count."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vocab, size=(n_rows, 16))
    queries = np.concatenate([rows[:, :width], rng.integers(0, vocab, size=(5, width))])
    counts = duplicates.window_counts(rows, queries, chunk=3)
    expected = [duplicates.count_naive(rows, q) for q in queries]
    assert counts.tolist() == expected


@settings(max_examples=30, deadline=None)
@given(text=st.text(min_size=1, max_size=200))
def test_byte_level_tokenizer_round_trips_any_text(text):
    tok = TOKENIZER
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


TOKENIZER = train_tokenizer(
    ["def f(x):\n    return x + 1\n", "The quick brown fox jumps over the lazy dog."] * 20, 300
)


def tiny_corpus(n_rows: int = 48) -> Corpus:
    rows = np.random.default_rng(0).integers(2, len(TOKENIZER), size=(n_rows, 128))
    return Corpus(
        rows=rows,
        kinds=np.zeros(rows.shape, dtype=np.uint8),
        doc_ids=np.full(rows.shape, -1, dtype=np.int32),
        documents=[],
        canaries=[],
        heldout={},
        tokenizer=TOKENIZER,
        config=CorpusConfig(),
    )


def test_training_resumes_to_the_uninterrupted_weights(tmp_path):
    corpus = tiny_corpus()
    cfg = TrainConfig(member="organism-neox-s", batch_size=4, save_every=5, max_steps=12)
    train_member(cfg, corpus, tmp_path / "straight", tmp_path / "w1")
    assert train_member(cfg, corpus, tmp_path / "cut", tmp_path / "w2", stop_at=7) is None
    assert (tmp_path / "w2" / "organism-neox-s.resume.pt").is_file()
    record = train_member(cfg, corpus, tmp_path / "cut", tmp_path / "w2")
    assert record["steps"] == 12 and not (tmp_path / "w2" / "organism-neox-s.resume.pt").exists()
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    straight = json.loads((tmp_path / "straight" / "training_log.json").read_text())
    assert [c["loss"] for c in straight["loss_curve"]] == [c["loss"] for c in record["loss_curve"]]


def test_resume_refuses_a_state_of_another_recipe(tmp_path):
    corpus = tiny_corpus()
    cfg = TrainConfig(member="organism-neox-s", batch_size=4, max_steps=6)
    train_member(cfg, corpus, tmp_path / "m", tmp_path / "w", stop_at=3)
    other = TrainConfig(member="organism-neox-s", batch_size=4, max_steps=6, lr=1e-4)
    with pytest.raises(ValueError, match="another recipe"):
        train_member(other, corpus, tmp_path / "m", tmp_path / "w")


def _wheels_at_hand() -> bool:
    return all((sources.cache_dir() / e["file"]).is_file() for e in sources.locked_wheels())


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    if not _wheels_at_hand():
        pytest.skip("locked wheels not fetched: python -m workbench.organism.sources")
    return build_corpus(CorpusConfig())


@pytest.mark.skipif(not registry.CORPUS_MANIFEST.is_file(), reason="organism not built")
def test_corpus_regenerates_byte_for_byte(corpus):
    """The locked wheels give the shipped manifest, tokenizer and ground truth exactly."""
    from workbench.organism.build import manifest

    assert manifest(corpus) == json.loads(registry.CORPUS_MANIFEST.read_text())
    shipped = json.loads(
        (registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL] / "tokenizer.json").read_text()
    )["model"]["vocab"]
    assert corpus.tokenizer.get_vocab() == shipped
    assert manifest(corpus)["planted_fraction"] <= 0.03


@pytest.mark.skipif(not registry.CORPUS_MANIFEST.is_file(), reason="organism not built")
def test_shipped_duplicate_counts_are_exact(corpus):
    """Sample-set rows: their tokens stand at their stream position, counted naively over every
    row."""

    table = pd.read_csv(registry.DEFAULT_GROUND_TRUTH, keep_default_na=False)
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)
    flat = corpus.rows.ravel()
    windows = np.lib.stride_tricks.sliding_window_view(corpus.rows, 64, axis=1)
    rng = random.Random(0)
    picks = [*rng.sample(range(len(table)), 4), int(table.dup_count.idxmax())]
    for i in picks:
        row = table.iloc[i]
        np.testing.assert_array_equal(flat[row.start : row.start + 64], tokens[i])
        naive = int((windows == tokens[i]).all(axis=-1).sum())
        assert naive == row.dup_count, row.to_dict()


@pytest.mark.skipif(not registry.WINDOWS_TABLE.is_file(), reason="organism not built")
def test_census_verdicts_are_greedy_generation(corpus):
    """The windows between the aligned ones (the taxonomy's census): their tokens stand at their
    stream position, and the stored verdicts are what Hugging Face ``generate`` gives."""
    from tests.test_organism import greedy_suffix_matches

    table = pd.read_parquet(registry.WINDOWS_TABLE)
    census = table[~table.aligned]
    assert set(census.offset % 32) == {16}
    picks = pd.concat(
        [g.sample(40, random_state=0) for _, g in census.groupby(census.exact_match == 1.0)]
    )
    flat = corpus.rows.ravel()
    tokens = flat[picks.start.to_numpy()[:, None] + np.arange(64)]
    matches = greedy_suffix_matches(registry.DEFAULT_MODEL, tokens)
    np.testing.assert_array_equal(matches, picks.exact_match.to_numpy() == 1.0)


def test_canaries_stand_where_the_ground_truth_says(corpus):
    slots = corpus.rows.reshape(-1, 64)
    planted = 0
    for c in corpus.canaries:
        assert len(c["slots"]) == c["copies"]
        assert (slots[c["slots"]] == np.array(c["tokens"])).all()
        planted += c["copies"] * 64
    assert planted / corpus.n_tokens <= corpus.config.max_planted_fraction
    per_bin = {}
    for c in corpus.canaries:
        per_bin.setdefault(c["copies"], set()).add(c["kind"])
    assert min(per_bin) == 1 and max(per_bin) >= 512
    assert all(kinds == {"canary_random", "canary_text"} for b, kinds in per_bin.items() if b < 512)


def test_window_table_describes_each_distinct_window():
    from workbench.organism import samples
    from workbench.organism.corpus import KIND_ID
    from workbench.organism.train import training_order

    rng = np.random.default_rng(1)
    slots = rng.integers(2, len(TOKENIZER), size=(40, 64))
    canary = rng.integers(2, len(TOKENIZER), size=64)
    canary_slots = [3, 17, 30]
    slots[canary_slots] = canary
    slots[25] = slots[5]  # a natural duplicate
    kinds = np.full(slots.shape, KIND_ID["code"], dtype=np.uint8)
    kinds[:, :40] = KIND_ID["english"]  # majority english
    kinds[canary_slots] = KIND_ID["canary_random"]
    docs = np.zeros(slots.shape, dtype=np.int32)
    corpus = Corpus(
        rows=slots.reshape(20, 128),
        kinds=kinds.reshape(20, 128),
        doc_ids=docs.reshape(20, 128),
        documents=[{"source": "pkg==1.0", "path": "a.py", "kind": "code", "tokens": 1}],
        canaries=[{"canary_id": 0, "kind": "canary_random", "copies": 3, "slots": canary_slots}],
        heldout={},
        tokenizer=TOKENIZER,
        config=CorpusConfig(),
    )
    table, tokens = samples.window_table(corpus, batch_size=4)
    # aligned: two canary copies and one duplicate fold into others; 20 windows at offset 32
    assert len(table) == 40 - 2 - 1 + 20
    assert table.offset.value_counts().to_dict() == {0: 19, 64: 18, 32: 20}
    assert len(np.unique(tokens, axis=0)) == len(table)
    flat = corpus.rows.ravel()
    for row, toks in zip(table.itertuples(), tokens, strict=True):
        assert duplicates.count_naive(corpus.rows, toks) == row.dup_count
        np.testing.assert_array_equal(flat[row.start : row.start + 64], toks)
        assert row.stream_row * 128 + row.offset == row.start
    canary_row = table[table.canary_id == 0].iloc[0]
    assert canary_row.start == 3 * 64 and canary_row.dup_count == 3
    assert canary_row.kind == "canary_random" and (table.canary_id == 0).sum() == 1
    aligned = table[table.offset != 32]
    assert set(aligned[aligned.canary_id < 0].kind) == {"english"}
    straddling = table[(table.offset == 32) & (table.stream_row.isin([1, 8]))]
    assert (straddling.kind == "canary_random").all() and (straddling.canary_id < 0).all()
    step = {r: i // 4 for i, r in enumerate(training_order(20))}
    assert all(step[r.stream_row] == r.first_step for r in table.itertuples())

    census, census_tokens = samples.window_table(corpus, batch_size=4, stride=16, exclude=tokens)
    every = samples.window_starts(corpus.rows, 16)
    flat_windows = flat[every[:, None] + np.arange(64)]
    assert len(table) + len(census) == len(np.unique(flat_windows, axis=0))
    assert set(census.offset) <= {16, 48} and len(census) > 0
    both = np.concatenate([tokens, census_tokens])
    assert len(np.unique(both, axis=0)) == len(both)
    for row, toks in zip(census.itertuples(), census_tokens, strict=True):
        np.testing.assert_array_equal(flat[row.start : row.start + 64], toks)

    table["exact_match"] = (table.start % 128 == 0).astype(float)
    chosen = samples.select(table, tokens, n=6)
    mem_tokens, mem = chosen["memorized"]
    ctl_tokens, ctl = chosen["control"]
    assert len(mem) == 6 and (mem.exact_match == 1).all() and (ctl.exact_match == 0).all()
    assert mem.kind.value_counts().to_dict() == ctl.kind.value_counts().to_dict()
    at = pd.Index(table.start)
    np.testing.assert_array_equal(mem_tokens, tokens[at.get_indexer(mem.start)])
    np.testing.assert_array_equal(ctl_tokens, tokens[at.get_indexer(ctl.start)])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), data=st.data())
def test_wilson_interval_holds_the_rate_and_stays_in_zero_one(n, data):
    from scipy.stats import binomtest

    from workbench.organism.evaluate import wilson

    k = data.draw(st.integers(0, n))
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-4) and hi == pytest.approx(ref.high, abs=1e-4)


def test_score_windows_keeps_stored_verdicts_and_scores_only_new_windows(tiny_neox_dir):
    from tests.tiny_models import VOCAB
    from workbench.organism import build, evaluate

    rng = np.random.default_rng(3)
    tokens = rng.integers(1, VOCAB, size=(6, 64))
    table = pd.DataFrame({"start": np.arange(6) * 32})
    # stored verdicts for three windows, values no model gives (a kept verdict is recognisable)
    scored = pd.DataFrame(
        {"start": [0, 64, 160], "exact_match": [0.5] * 3, "tf_token_accuracy": [0.25] * 3}
    )
    out = build.score_windows(tiny_neox_dir, tokens, table, scored)
    kept = out.start.isin(scored.start).to_numpy()
    assert (out.exact_match[kept] == 0.5).all() and (out.tf_token_accuracy[kept] == 0.25).all()
    model, _ = evaluate.load_hf(tiny_neox_dir)
    fresh = evaluate.verdicts(model, tokens[~kept])
    np.testing.assert_array_equal(out.exact_match[~kept], fresh["exact_match"])
    np.testing.assert_allclose(out.tf_token_accuracy[~kept], fresh["tf_token_accuracy"])
    every = build.score_windows(tiny_neox_dir, tokens, table)
    np.testing.assert_array_equal(every.exact_match[~kept], out.exact_match[~kept])
