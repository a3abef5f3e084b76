"""workbench.taxonomy: labels, features, CNN, localization, per-class short-circuit effects, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench.runs import Run
from workbench.taxonomy import cnn, features, labels, localize, split_effects
from workbench.taxonomy.features import attention_features, head_patterns, stream_features

rng = np.random.default_rng(0)


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (list(range(7, 71)), ("incrementing", 1, 1)),
        (list(range(200, 136, -1)), ("incrementing", 1, -1)),
        ([5, 9, 2] * 22, ("repeating", 3, 0)),
        ([4] * 64, ("repeating", 1, 0)),
        ([50, 1, 50, 2, 50, 3, 50, 4, 50, 5], ("incrementing", 2, 1)),  # a count in a frame
        (list(range(0, 128, 2)), ("incrementing", 1, 2)),
    ],
)
def test_template_detects_incrementing_and_repeating(ids, expected):
    assert labels.template(ids) == expected


def test_template_rejects_random_and_long_periods():
    assert labels.template(rng.integers(0, 1000, 64)) == (None, 0, 0)
    pattern = list(rng.integers(0, 1000, 12))
    ids = (pattern * 6)[:64]
    assert labels.template(ids, max_period=8)[0] is None
    assert labels.template(ids, max_period=12) == ("repeating", 12, 0)
    broken = list(range(64))
    broken[40] = 999
    assert labels.template(broken)[0] is None
    assert labels.template(broken, min_match=0.95)[0] == "incrementing"


def test_rouge_by_hand_and_against_rouge_score():
    assert labels.rouge_l([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert labels.rouge_l([1, 2, 3, 4], [5, 6, 7, 8]) == 0.0
    assert labels.rouge_l([1, 3, 2, 4, 5, 6], [1, 2, 3, 4, 5]) == pytest.approx(2 * 4 / 11)
    # ROUGE-3: candidate trigrams (1,2,3),(2,3,9); reference (1,2,3),(2,3,4): overlap 1 of 2 each
    assert labels.rouge_n([1, 2, 3, 9], [1, 2, 3, 4], 3) == pytest.approx(0.5)
    assert labels.rouge_n([1, 1, 1, 1], [1, 1, 1], 3) == pytest.approx(2 * 0.5 * 1 / 1.5)  # clip
    scorer = pytest.importorskip("rouge_score.rouge_scorer").RougeScorer(["rougeL", "rouge3"])
    for _ in range(20):
        a, b = rng.integers(0, 6, 32), rng.integers(0, 6, 32)
        ref = scorer.score(" ".join(f"t{i}" for i in b), " ".join(f"t{i}" for i in a))
        assert labels.rouge_l(a, b) == pytest.approx(ref["rougeL"].fmeasure)
        assert labels.rouge_n(a, b, 3) == pytest.approx(ref["rouge3"].fmeasure)


def _sample(prefix, suffix):
    return np.concatenate([np.asarray(prefix), np.asarray(suffix)])


def test_guess_recall_labels_on_hand_made_cases():
    rand = lambda: rng.integers(1000, 5000, 32)  # noqa: E731
    p = rand()
    half = p.copy()
    half[16:] = rand()[16:]  # suffix shares half of the prefix in order: ROUGE-L = 0.5
    below = p.copy()
    below[15:] = rand()[15:]  # 15 of 32: below the threshold
    tri = np.concatenate([p[:18], rand()[:14]])  # 16 of 30 trigrams shared, ROUGE-3 ≈ 0.53
    samples = np.stack(
        [
            _sample(range(0, 32), range(32, 64)),  # incrementing template → guess
            _sample([3, 4] * 16, [3, 4] * 16),  # repeating → guess
            _sample(p, half),  # ROUGE-L = 0.5 → guess
            _sample(p, below),  # no template, ROUGE < 0.5 → recall
            _sample(p, tri),
            _sample(rand(), rand()),  # random, memorized → recall
            _sample(range(0, 32), range(32, 64)),  # a template but not memorized
        ]
    )
    memorized = np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool)
    table = labels.label_samples(samples, memorized)
    assert table["rouge_l"][2] == pytest.approx(0.5)
    assert table["rouge_l"][3] < 0.5 and table["rouge_3"][3] < 0.5
    assert table["rouge_3"][4] >= 0.5
    assert table[labels.GUESS_RECALL].tolist() == [
        "guess",
        "guess",
        "guess",
        "recall",
        "guess",
        "recall",
        "non-memorized",
    ]
    assert labels.RECITE_RECONSTRUCT_RECOLLECT not in table


def test_recite_reconstruct_recollect():
    memorized = np.array([1, 1, 1, 1, 0, 1], dtype=bool)
    template = np.array([0, 1, 1, 0, 0, 0], dtype=bool)
    dup = np.array([6, 6, 5, 1, 100, np.nan])
    out = labels.recite_reconstruct_recollect(memorized, template, dup)
    assert out.tolist() == ["recite", "recite", "reconstruct", "recollect", "non-memorized", None]
    assert labels.class_indices(out.tolist(), labels.RECITE_RECONSTRUCT_RECOLLECT).tolist() == [
        1,
        1,
        2,
        3,
        0,
        -1,
    ]


def test_numeric_values_make_counts_templates_whatever_their_ids():
    words = {i: str(n) for i, n in enumerate(rng.permutation(100))}  # numbers with shuffled ids
    words[100] = "apple"

    class Tok:
        def decode(self, ids):
            return " " + words[ids[0]]

    ids_of = {w: i for i, w in words.items()}
    row = np.array([ids_of[str(n)] for n in range(10, 74)])
    assert labels.template(row)[0] is None
    values = labels.numeric_values(row[None], Tok())
    assert labels.template(values[0]) == ("incrementing", 1, 1)
    assert labels.numeric_values(np.array([[100]]), Tok())[0, 0] == labels.NON_NUMERIC_OFFSET + 100


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("batch_size", [3])
def test_features_equal_pooling_of_a_full_cache(tiny_model, tmp_path, batch_size):
    tokens = torch.as_tensor(rng.integers(0, 96, (5, 64)))
    mem = attention_features(tiny_model, tokens, batch_size=batch_size, progress=False)
    disk = attention_features(
        tiny_model, tokens.numpy(), batch_size=batch_size, out_dir=tmp_path, progress=False
    )
    _, cache = tiny_model.run_with_cache(tokens)
    full = torch.stack([cache["pattern", layer] for layer in range(tiny_model.cfg.n_layers)], 1)
    assert mem["mean"].shape == (5, tiny_model.cfg.n_layers, 64, 64)
    torch.testing.assert_close(torch.from_numpy(mem["mean"]), full.mean(2))
    torch.testing.assert_close(torch.from_numpy(mem["max"]), full.amax(2))
    assert isinstance(disk["max"], np.memmap) and (tmp_path / "attention_max.npy").exists()
    np.testing.assert_array_equal(disk["max"], mem["max"])
    torch.testing.assert_close(head_patterns(tiny_model, tokens[:2]), full[:2])


class Interrupted:
    """``attention_features`` that raises on its ``crash_at``-th call; counts the calls."""

    def __init__(self, crash_at: int | None = None):
        self.crash_at, self.calls = crash_at, 0

    def __call__(self, *args, **kw):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt
        return attention_features(*args, **kw)


def test_features_in_a_run_resume_to_the_uninterrupted_arrays(tiny_neox, tmp_path, monkeypatch):
    tokens = rng.integers(0, 96, (7, 64))
    # one pass, stored as the run stores them (half precision)
    whole = attention_features(tiny_neox, tokens, batch_size=3, progress=False, dtype=np.float16)
    assert whole["mean"].dtype == np.float16
    a = stream_features(tiny_neox, tokens, Run.open(tmp_path / "a", {"t": 1}), batch_size=3)
    for pooling in ("mean", "max"):
        np.testing.assert_array_equal(a[pooling], whole[pooling])  # bit for bit
    table = pd.read_parquet(tmp_path / "a" / f"{features.FEATURES}.parquet")
    assert table["sample"].tolist() == list(range(7))
    np.testing.assert_array_equal(table["max_sum"], whole["max"].sum((1, 2, 3), dtype=np.float64))

    monkeypatch.setattr(features, "attention_features", Interrupted(crash_at=2))
    with pytest.raises(KeyboardInterrupt):
        stream_features(tiny_neox, tokens, Run.open(tmp_path / "b", {"t": 1}), batch_size=3)
    resumed = Interrupted()
    monkeypatch.setattr(features, "attention_features", resumed)
    b = stream_features(tiny_neox, tokens, Run.open(tmp_path / "b", {"t": 1}), batch_size=3)
    assert resumed.calls == 2  # of 3 units, the first was saved before the interruption
    for pooling in ("mean", "max"):
        np.testing.assert_array_equal(b[pooling], whole[pooling])
    assert pd.read_parquet(tmp_path / "b" / f"{features.FEATURES}.parquet").equals(table)

    (tmp_path / "b" / "features" / "attention_mean.npy").unlink()  # its rows are gone
    again = Interrupted()
    monkeypatch.setattr(features, "attention_features", again)
    c = stream_features(tiny_neox, tokens, Run.open(tmp_path / "b", {"t": 1}), batch_size=3)
    assert again.calls == 3
    np.testing.assert_array_equal(c["mean"], whole["mean"])


# ---------------------------------------------------------------- CNN and localization


def planted(n: int = 96, layers: int = 3, seed: int = 0):
    """Noise everywhere; class 1 carries a bright suffix→prefix block in layer 1 only."""
    g = np.random.default_rng(seed)
    x = g.uniform(0, 0.3, (n, layers, 64, 64)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, 1, 40:56, 8:24] += 0.7
    return x, y


@pytest.fixture(scope="module")
def planted_cnns():
    """One CNN variant, two seeds, trained on the planted set (shared: CPU time is scarce)."""
    x, y = planted()
    variant = cnn.CNNVariant(6, 10, "max")
    config = cnn.TrainConfig(epochs=4)
    scores, confusion, trained = cnn.evaluate(
        {"max": x}, y, ["plain", "planted"], variants=[variant], seeds=[0, 1], config=config
    )
    return x, y, scores, confusion, trained


def test_cnn_learns_a_planted_pattern(planted_cnns):
    _, _, scores, confusion, trained = planted_cnns
    assert (scores.drop_duplicates("seed")["min_f1"] >= 0.9).all()
    for seed, entry in enumerate(trained):
        n_test = confusion[confusion["seed"] == seed]["count"].sum()
        assert n_test == len(entry["test_idx"]) == 28
    assert set(scores["class"]) == {"plain", "planted"}


def test_min_f1_and_confusion_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = cnn.confusion_matrix(y_true, y_pred, 3)
    assert m.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    f1 = cnn.per_class_f1(m)["f1"].to_numpy()
    np.testing.assert_allclose(f1, [2 / 3, 0.8, 0.0])
    assert cnn.min_f1(y_true, y_pred, 3) == 0.0


def test_balanced_order_and_split():
    labels_ = np.array([0] * 90 + [1] * 10 + [-1] * 5)
    train, test = cnn.stratified_split(labels_, 0.3, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and (labels_[np.r_[train, test]] >= 0).all()
    assert (labels_[test] == 1).sum() == 3
    order = cnn.balanced_order(labels_[:100], 4000, np.random.default_rng(0))
    assert abs((labels_[order] == 1).mean() - 0.5) < 0.05
    assert cnn.CNNVariant.parse("k8-c16-max") == cnn.CNNVariant(8, 16, "max")
    assert len(cnn.VARIANTS) == 8


def test_guided_gradients_match_the_formula_and_leave_no_hooks():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 1, 2, 2)
    g = localize.guided_gradients(net, x)
    w1, b1, w2 = net[1].weight, net[1].bias, net[3].weight
    h = x.flatten(1) @ w1.T + b1
    for c in range(2):
        back = (w2[c] * (h > 0)).clamp(min=0)  # ReLU gate, then negative gradients dropped
        np.testing.assert_allclose(g[:, c].flatten(1), (back @ w1).detach(), atol=1e-6)
    assert all(not m._backward_hooks for m in net.modules())


def test_localization_maps_shape_normalization_and_planted_layer(planted_cnns):
    x, y, _, _, trained = planted_cnns
    grads = localize.guided_gradients(trained[0]["model"], torch.tensor(x[:4]))
    sal = localize.class_saliency(grads)
    assert sal.shape == (4, 2, 3, 64, 64) and (sal >= 0).all()
    peaks = sal.flatten(2).amax(-1)
    assert ((peaks == 0) | (peaks - 1).abs().lt(1e-6)).all() and (peaks > 0).any()

    heads = lambda idx: torch.ones(len(idx), 3, 2, 64, 64)  # noqa: E731 (uniform attention)
    maps, seen = localize.localization_maps(trained, {"max": x}, y, 2, heads)
    assert maps.shape == (2, 3, 64, 64) and seen.tolist() == [2, 2]
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    summary = localize.layer_summary(maps, ["plain", "planted"])
    assert set(summary.columns) >= {"class", "layer", "share", "suffix_to_prefix"}
    np.testing.assert_allclose(summary.groupby("class")["share"].sum(), 1.0, rtol=1e-5)
    assert localize.top_layers(summary, 1)["planted"] == [1]


# ---------------------------------------------------------------- short-circuit effects by class


def hand_memorization(n: int, memorized: np.ndarray, n_blocks: int) -> pd.DataFrame:
    """A memorization-engine-shaped table: block b breaks every sample with index % 3 == b % 3."""
    rows = []
    for label, blocks in [("none", ""), *[(f"identity:{b}", str(b)) for b in range(n_blocks)]]:
        for s in range(n):
            em = bool(memorized[s]) and (label == "none" or s % 3 != int(blocks) % 3)
            rows.append(
                {
                    "intervention": label,
                    "blocks": blocks,
                    "sample": s,
                    "exact_match": em,
                    "token_accuracy": 1.0 if em else 0.25,
                }
            )
    return pd.DataFrame(rows)


def test_class_drop_on_a_hand_made_table():
    memorized = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)
    mem = hand_memorization(9, memorized, 3)
    np.testing.assert_array_equal(split_effects.clean_verdicts(mem), memorized)
    table = pd.DataFrame(
        {
            "sample": range(9),
            labels.GUESS_RECALL: ["guess"] * 3 + ["recall"] * 3 + ["non-memorized"] * 3,
        }
    )
    drops = split_effects.class_drop(mem, table)
    guess0 = drops[(drops["class"] == "guess") & (drops["block"] == 0)].iloc[0]
    assert guess0["n"] == 3 and guess0["clean_exact_match"] == 1.0
    assert guess0["drop"] == pytest.approx(1 / 3)  # sample 0 of {0, 1, 2} breaks
    assert guess0["token_accuracy_drop"] == pytest.approx(0.25)
    assert (drops[drops["class"] == "non-memorized"]["drop"] == 0).all()
    wide = split_effects.drop_matrix(drops, labels.GUESS_RECALL)
    assert list(wide.index) == ["non-memorized", "guess", "recall"]
    assert list(wide.columns) == ["block 0", "block 1", "block 2"]
    assert split_effects.drop_figure(drops).data
    # a head subset of block 0 is not block 0: it gets no block, and the matrix keeps block 0's
    heads = mem[mem["intervention"] == "identity:0"].assign(
        intervention="identity:0[h1]", exact_match=False
    )
    drops = split_effects.class_drop(pd.concat([mem, heads]), table)
    assert drops[drops["intervention"] == "identity:0[h1]"]["block"].isna().all()
    assert split_effects.drop_matrix(drops, labels.GUESS_RECALL).loc["guess", "block 0"] == (
        pytest.approx(1 / 3)
    )


# ---------------------------------------------------------------- CLI


def test_cli_on_a_tiny_model_with_hand_made_verdicts(tiny_neox_dir, tmp_path):
    from workbench.taxonomy.__main__ import main

    n = 36
    tokens = rng.integers(1, 96, (n, 64))
    tokens[:12] = np.tile([5, 6, 7], 22)[:64]  # repeating templates
    data = tmp_path / "set.npy"
    np.save(data, tokens)
    memorized = np.r_[np.ones(24, bool), np.zeros(12, bool)]
    mem = tmp_path / "mem.parquet"
    hand_memorization(n, memorized, 3).assign(model=str(tiny_neox_dir)).to_parquet(mem)
    gt = tmp_path / "gt.csv"
    pd.DataFrame({"kind": ["k"] * n, "dup_count": np.r_[np.full(18, 8), np.full(18, 1)]}).to_csv(
        gt, index=False
    )
    out = tmp_path / "run"
    argv = (
        f"--model {tiny_neox_dir} --data {data} --ground-truth {gt} --memorization {mem} "
        f"--variants k6-c10-mean --seeds 1 --splits 2 --epochs 1 --min-class-size 3 --out {out} "
        "--no-progress --device cpu"
    ).split()  # paths under pytest's tmp_path hold no spaces
    results = main(argv)
    assert results["labels"][labels.GUESS_RECALL].value_counts().to_dict() == {
        "non-memorized": 12,
        "recall": 12,
        "guess": 12,
    }
    assert set(results["scores"]["taxonomy"]) == set(labels.TAXONOMIES)
    for name in ("labels", "scores", "confusion", "localization", "class_drop", "min_f1"):
        assert (out / f"{name}.parquet").exists()
    for name in ("min_f1", "class_drop", f"localization_{labels.GUESS_RECALL}"):
        assert (out / f"{name}.html").exists()
    maps = np.load(out / f"localization_{labels.GUESS_RECALL}.npy")
    assert maps.shape == (3, 3, 64, 64)
    assert (out / "features" / "attention_mean.npy").exists()
    assert main(argv)["scores"].equals(results["scores"])  # resumes: same config, same results


def test_cli_runs_the_memorization_engine_itself(tiny_neox_dir, tmp_path):
    from workbench.taxonomy.__main__ import main

    data = tmp_path / "set.npy"
    np.save(data, rng.integers(1, 96, (4, 64)))
    out = tmp_path / "run"
    argv = f"--model {tiny_neox_dir} --data {data} --variants k6-c10-mean --seeds 1 --splits 2"
    argv += " --blocks 0,2 --decode"
    results = main([*argv.split(), "--out", str(out), "--no-progress", "--no-localize"])
    assert (out / "memorization.parquet").exists()
    assert set(results["class_drop"]["intervention"]) == {"none", "identity:0", "identity:2"}


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(-500, 5000),
    step=st.integers(-7, 7).filter(bool),
    n=st.integers(8, 40),
    sep=st.sampled_from([" ", ", ", "\n", " | "]),
)
def test_text_incrementing_reads_any_written_progression(start, step, n, sep):
    numbers = [start + i * step for i in range(n)]
    assert labels.text_incrementing(sep.join(map(str, numbers))) == step
    assert labels.text_incrementing(sep.join(map(str, numbers[:7]))) == 0  # too few numbers
    interleaved = numbers[::2] + numbers[1::2]  # steps of 2·step, and one jump back
    assert labels.text_incrementing(sep.join(map(str, interleaved))) in (0, 2 * step)


def _lcs_table(a: list[int], b: list[int]) -> int:
    """The textbook O(len(a)·len(b)) dynamic programme."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
            )
    return table[-1][-1]


@settings(max_examples=300, deadline=None)
@given(
    a=st.lists(st.integers(0, 5), max_size=70),
    b=st.lists(st.integers(0, 5), max_size=70),
)
def test_lcs_length_equals_the_dynamic_programme(a, b):
    assert labels.lcs_length(a, b) == _lcs_table(a, b)
