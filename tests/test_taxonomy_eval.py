"""The taxonomy's evaluation: grouped splits, baselines, intervals, peaks, bootstrap drops."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from workbench.taxonomy import baselines, cnn, localize, split_effects, splits

rng = np.random.default_rng(0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(10, 120),
    n_groups=st.integers(1, 40),
    n_classes=st.integers(2, 4),
    seed=st.integers(0, 1000),
)
def test_grouped_splits_never_put_a_group_on_both_sides(n, n_groups, n_classes, seed):
    g = np.random.default_rng(seed)
    labels = g.integers(-1, n_classes, n)
    groups = g.integers(0, n_groups, n)
    for train, test in splits.grouped_splits(labels, groups, n_splits=3, seed=seed):
        assert not set(groups[train]) & set(groups[test])
        assert np.array_equal(np.sort(np.r_[train, test]), np.flatnonzero(labels >= 0))


def test_grouped_splits_of_singletons_hit_the_test_fraction():
    labels = np.repeat([0, 1, 2], [300, 200, 100])
    parts = splits.grouped_splits(labels, None, n_splits=5, test_fraction=0.3)
    for _train, test in parts:
        assert np.allclose(np.bincount(labels[test]) / np.bincount(labels), 0.3, atol=0.01)
    assert len({tuple(test) for _, test in parts}) == 5  # each split its own draw


def test_sample_groups_join_rows_halves_and_canaries():
    tokens = rng.integers(0, 10_000, (6, 64))
    tokens[1, :32] = tokens[0, :32]  # same prefix as 0
    tokens[3, 16:48] = tokens[2, 32:]  # a canary seen at a shift of 16
    truth = pd.DataFrame(
        {"stream_row": [0, 1, 2, 3, 4, 4], "kind": ["code"] * 2 + ["canary_random"] * 2 + ["x"] * 2}
    )
    groups = splits.sample_groups(tokens, truth)
    assert groups.tolist() == [0, 0, 2, 2, 4, 4]
    truth.loc[3, "kind"] = "code"  # no longer a canary: the shared run alone does not join
    assert splits.sample_groups(tokens, truth).tolist() == [0, 0, 2, 3, 4, 4]


def test_overlap_with_training_by_hand():
    tokens = rng.integers(0, 10_000, (3, 64))
    tokens[2, 10:42] = tokens[0, 20:52]
    assert splits.overlap_with_training(tokens, np.array([0]), np.array([1, 2])).tolist() == [
        False,
        True,
    ]


def test_attention_mass_equals_a_direct_loop():
    maps = rng.random((3, 2, 8, 8))
    got = baselines.attention_mass(maps, prefix_len=4, chunk=2).reshape(3, 2, 2, 3)
    for i in range(3):
        for layer in range(2):
            for part, rows in enumerate((range(1, 4), range(4, 8))):
                diag = np.mean([maps[i, layer, q, q] for q in rows])
                prev = np.mean([maps[i, layer, q, q - 1] for q in rows])
                rest = np.mean([maps[i, layer, q].sum() for q in rows]) - diag - prev
                np.testing.assert_allclose(got[i, layer, part], [diag, prev, rest])


def test_baselines_find_what_is_planted():
    n = 300
    y = np.repeat([0, 1, 2], n // 3)
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    nll = np.array([0.5, 2.0, 4.0])[y] + rng.normal(0, 0.1, n)  # three separate intervals
    evidence = y == 1
    mass = rng.normal(0, 1, (n, 6))
    mass[:, 0] += 6 * y  # the diagonal mass tells the classes apart
    fits = baselines.baselines(nll, evidence, mass, 3)
    pred = baselines.predict_all(fits, y, train, test)
    assert cnn.min_f1(y[test], pred["majority"], 3) == 0.0
    assert cnn.min_f1(y[test], pred["suffix-nll"], 3) == 1.0
    assert (pred["rouge-rule"][y[test] == 1] == 1).all()  # evidence → its class
    assert set(pred["rouge-rule"][y[test] != 1]) == {int(pred["rouge-rule"][y[test] == 0][0])}
    assert cnn.min_f1(y[test], pred["attention-mass"], 3) > 0.9
    shuffled = baselines.attention_logreg(rng.normal(0, 1, (n, 6)))
    assert cnn.min_f1(y[test], shuffled(train, y[train], test), 3) < 0.6  # noise is not signal


def test_t_interval_is_scipys():
    values = np.array([0.61, 0.55, 0.7, 0.58, 0.64])
    _, low, high = cnn.t_interval(values)
    ref = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    np.testing.assert_allclose([low, high], ref)
    assert cnn.t_interval(np.array([0.99, 1.0, 0.2]))[2] == 1.0  # clipped to a score's range


def test_summary_says_whether_a_cnn_beats_every_baseline():
    rows = []
    for split in range(5):
        for method, score, base in (("cnn", 0.8 + 0.01 * split, False), ("nll", 0.5, True)):
            for c in ("a", "b"):
                run = {"method": method, "baseline": base, "split": split, "seed": 0}
                rows.append(run | {"class": c, "f1": score, "min_f1": score, "accuracy": score})
    out = cnn.summarize(pd.DataFrame(rows)).set_index("method")
    assert out.loc["cnn", "beats_baselines"] and not out.loc["nll", "beats_baselines"]
    assert out.loc["cnn", "min_f1"] == pytest.approx(0.82)
    rows = [r | {"min_f1": 0.9} if r["method"] == "nll" else r for r in rows]
    assert not cnn.summarize(pd.DataFrame(rows)).set_index("method").loc["cnn", "beats_baselines"]


def test_class_drop_intervals_hold_the_estimate_and_pin_certain_drops():
    n = 200
    labels = pd.DataFrame({"sample": range(n), "guess-recall": ["guess"] * 100 + ["recall"] * 100})
    em = np.r_[rng.random(100) < 0.6, np.zeros(100, bool)]  # recall: every sample lost
    mem = pd.DataFrame(
        {
            "intervention": ["none"] * n + ["identity:3"] * n,
            "blocks": ["none"] * n + ["3"] * n,
            "sample": list(range(n)) * 2,
            "exact_match": np.r_[np.ones(n), em].astype(float),
            "token_accuracy": np.r_[np.ones(n), em * 0.5 + 0.25],
        }
    )
    out = split_effects.class_drop(mem, labels, ["guess-recall"]).set_index(
        ["intervention", "class"]
    )
    row = out.loc[("identity:3", "guess")]
    assert row["drop_low"] < row["drop"] < row["drop_high"]
    se = np.sqrt(row["drop"] * (1 - row["drop"]) / 100)  # the binomial standard error
    assert row["drop_high"] - row["drop_low"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert out.loc[("identity:3", "recall"), ["drop_low", "drop_high"]].tolist() == [1.0, 1.0]


def test_layer_peaks_and_their_interval():
    per_model = rng.random((8, 2, 6)) * 0.1
    per_model[:, 0, 4] += 1.0  # class 0 peaks at layer 4 in every CNN
    per_model[:4, 1, 1] += 1.0  # class 1: half the CNNs at layer 1, half at 5
    per_model[4:, 1, 5] += 1.0
    out = localize.layer_peaks(per_model, ["guess", "recall"]).set_index("class")
    assert out.loc["guess", ["peak_layer", "peak_low", "peak_high"]].tolist() == [4, 4, 4]
    assert out.loc["recall", "peak_low"] == 1 and out.loc["recall", "peak_high"] == 5
    assert out.loc["recall", ["cnn_peak_min", "cnn_peak_max"]].tolist() == [1, 5]
    assert out.loc["guess", "paper_relative_depth"] == pytest.approx(6 / 36)
