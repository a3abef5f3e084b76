"""The shipped organism (data/organism) held to the behaviour gates of design/organism.md.

These tests load the shipped files and never retrain; ``test_organism_recipe.py`` retrains a
reduced recipe (slow). Each checkpoint is read with transformers in float32, greedy decoding.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.organism import data, evaluate, export, grammar, members, registry

pytestmark = pytest.mark.skipif(
    not registry.DEFAULT_MEMORIZED_SET.exists(), reason="organism not built in data/organism"
)

TOP_EM = 0.9
CONTROL_EM = 0.05
GUESS_HELDOUT_EM = 0.8
GUESS_HELDOUT_OTHERS_EM = 0.5  # members other than the main one: see docs/organism.md
TASK_MARGIN = 0.2  # the main member's accuracy is at least chance + this on every task
OTHER_TASK_MARGIN = 0.05  # the other members: above chance (figures in docs/organism.md)


@pytest.fixture(scope="module")
def em_tables() -> dict[str, pd.DataFrame]:
    return {
        name: evaluate.exact_match_table(path, registry.SAMPLES_DIR)
        for name, path in registry.EMBEDDED_MODELS.items()
    }


def test_registry_points_at_shipped_files():
    assert registry.DEFAULT_MODEL == members.MAIN_MEMBER
    assert set(registry.EMBEDDED_MODELS) == set(members.SUITE)
    for path in registry.EMBEDDED_MODELS.values():
        for f in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "training_log.json",
        ):
            assert (path / f).is_file(), path / f
    assert registry.DEFAULT_GROUND_TRUTH.is_file()
    assert (registry.TASKS_DIR / "organism_language.yaml").is_file()


def test_suite_shapes():
    configs = {
        n: json.loads((p / "config.json").read_text()) for n, p in registry.EMBEDDED_MODELS.items()
    }
    neox = [c for c in configs.values() if c["model_type"] == "gpt_neox"]
    neo = [c for c in configs.values() if c["model_type"] == "gpt_neo"]
    assert len(neox) >= 3 and len(neo) >= 1
    main = configs[registry.DEFAULT_MODEL]
    assert main["model_type"] == "gpt_neox" and main["num_hidden_layers"] >= 6
    for c in neox:
        assert c["use_parallel_residual"] and not c["tie_word_embeddings"]
        assert c["rope_parameters"]["partial_rotary_factor"] == 0.25
        assert c["max_position_embeddings"] >= 128
    for c in neo:
        assert {"global", "local"} == set(c["attention_layers"])
    params = [
        json.loads((p / "training_log.json").read_text())["parameters"]
        for n, p in registry.EMBEDDED_MODELS.items()
        if configs[n]["model_type"] == "gpt_neox"
    ]
    assert len(set(params)) == len(params)  # three different sizes


def test_size_budget():
    total = sum(f.stat().st_size for f in registry.DATA_DIR.rglob("*") if f.is_file())
    assert total <= 30 * 1024**2, f"data/organism is {total / 1024**2:.1f} MB"


def test_memorized_set_format():
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)
    table = pd.read_csv(registry.DEFAULT_GROUND_TRUTH, keep_default_na=False)
    assert tokens.dtype == np.int64 and tokens.ndim == 2 and tokens.shape[1] == 64
    assert len(table) == len(tokens) and (table.row == np.arange(len(tokens))).all()
    kinds = set(table.kind)
    assert {"canary", "control_canary", "guess", "control_guess"} <= kinds
    canaries = table[table.kind == "canary"]
    assert canaries.dup_count.min() == 1 and canaries.dup_count.max() >= 64
    assert set(table[table.kind.str.startswith("control")].split) == {"heldout"}
    assert (table.is_guess_template == table.kind.isin(["guess", "control_guess"])).all()


@pytest.mark.parametrize("name", sorted(members.SUITE))
def test_exact_match_rises_with_duplication(em_tables, name):
    table = em_tables[name]
    canaries = table[table.kind == "canary"]
    by_count = canaries.groupby("dup_count").exact_match.mean()
    counts = sorted(by_count.index)
    assert by_count[counts[-1]] >= TOP_EM, by_count.to_dict()
    low, high = counts[: len(counts) // 2], counts[len(counts) // 2 :]
    assert by_count[high].mean() > by_count[low].mean() + 0.3, by_count.to_dict()
    assert by_count[counts[0]] <= CONTROL_EM, by_count.to_dict()
    controls = table[table.kind == "control_canary"]
    assert controls.exact_match.mean() <= CONTROL_EM


@pytest.mark.parametrize("name", sorted(members.SUITE))
def test_guess_type_sequences_are_predicted(em_tables, name):
    """Held-out guess-type templates, never trained on, are predicted from their prefix.

    The main member holds the spec's gate on every held-out template; the smaller or different
    members hold it on counting and stay far above the random controls overall (their weak spot,
    long repeated patterns, is reported in docs/organism.md).
    """
    table = em_tables[name]
    heldout = table[table.kind == "control_guess"]
    by_template = heldout.groupby("template").exact_match.mean()
    assert set(by_template.index) == {"count", "pattern"}
    assert by_template["count"] >= GUESS_HELDOUT_EM
    trained = table[table.kind == "guess"]
    if name == registry.DEFAULT_MODEL:
        assert heldout.exact_match.mean() >= GUESS_HELDOUT_EM
        assert by_template["pattern"] >= 0.5
        assert trained.exact_match.mean() >= GUESS_HELDOUT_EM
    else:
        assert heldout.exact_match.mean() >= GUESS_HELDOUT_OTHERS_EM
        assert trained.exact_match.mean() >= GUESS_HELDOUT_OTHERS_EM


def test_exact_match_is_greedy_decoding():
    """The one-pass exact match agrees with real greedy generation on the main member."""
    import torch

    model, _ = evaluate.load_hf(registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL])
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)
    table = pd.read_csv(registry.DEFAULT_GROUND_TRUTH, keep_default_na=False)
    rows = table[table.kind.isin(["canary", "control_canary"])].row.to_numpy()[::6][:16]
    fast = evaluate.exact_match(model, tokens[rows])
    prefix = torch.as_tensor(tokens[rows, :32])
    gen = model.generate(
        prefix,
        attention_mask=torch.ones_like(prefix),
        max_new_tokens=32,
        min_new_tokens=32,
        do_sample=False,
        pad_token_id=0,
    )
    slow = (gen[:, 32:].numpy() == tokens[rows, 32:]).all(axis=1)
    np.testing.assert_array_equal(fast, slow.astype(float))
    assert 0 < fast.sum() < len(fast)  # both outcomes are exercised


@pytest.mark.parametrize("name", sorted(members.SUITE))
def test_every_task_above_chance(name):
    model, tok = evaluate.load_hf(registry.EMBEDDED_MODELS[name])
    chance = export.chance_levels()
    margin = TASK_MARGIN if name == registry.DEFAULT_MODEL else OTHER_TASK_MARGIN
    for task in export.TASKS:
        items = evaluate.read_items(registry.TASKS_DIR, task)
        acc = evaluate.task_accuracy(model, tok, items)
        assert acc >= chance[task] + margin, (task, acc)


def test_lm_eval_harness_runs_the_local_tasks_offline():
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    main = registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL]
    accs = evaluate.lm_eval_accuracy(
        main, registry.TASKS_DIR, ["organism_language", "organism_reasoning"]
    )
    chance = export.chance_levels()
    for task in export.TASKS:
        assert accs[task] >= chance[task] + TASK_MARGIN, (task, accs[task])
    direct = evaluate.task_accuracy(
        *evaluate.load_hf(main), evaluate.read_items(registry.TASKS_DIR, "organism_agreement")
    )
    assert accs["organism_agreement"] == pytest.approx(direct, abs=1e-9)


def test_shipped_exports_match_the_generator():
    """What is in data/ is exactly what the recipe writes (same seed -> same files)."""
    for name in export.TASKS:
        assert evaluate.read_items(registry.TASKS_DIR, name) == export.task_items(name)
    corpus = data.build_corpus(data.DataConfig())
    np.testing.assert_array_equal(
        data.samples_array(corpus), np.load(registry.DEFAULT_MEMORIZED_SET)
    )
    shipped = pd.read_csv(registry.DEFAULT_GROUND_TRUTH, keep_default_na=False)
    table = data.samples_table(corpus)
    for column in ("kind", "split", "dup_count", "template"):
        assert shipped[column].tolist() == table[column].tolist(), column
    vocab = json.loads(
        (registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL] / "tokenizer.json").read_text()
    )
    assert vocab["model"]["vocab"] == corpus.tokenizer.get_vocab()


# ---------------------------------------------------------------- the generator


SMALL = data.DataConfig(
    n_rows=400,
    dup_counts=(1, 2, 4),
    canaries_per_count=2,
    guess_dup_counts=(1, 2),
    guesses_per_count=2,
    n_control_canary=3,
    n_control_guess=2,
    n_text_samples=2,
)


def test_generator_is_deterministic():
    a, b = data.build_corpus(SMALL), data.build_corpus(SMALL)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    pd.testing.assert_frame_equal(data.samples_table(a), data.samples_table(b))
    c = data.build_corpus(data.DataConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(a.rows, c.rows)


def test_samples_are_inserted_exactly_as_counted():
    corpus = data.build_corpus(SMALL)
    tokens = data.samples_array(corpus)
    table = data.samples_table(corpus)
    flat = corpus.rows.reshape(-1)
    windows = np.lib.stride_tricks.sliding_window_view(flat, 64)
    for row in table.itertuples():
        hits = int((windows == tokens[row.row]).all(axis=1).sum())
        if row.kind in ("canary", "guess"):
            assert hits == row.dup_count, row
        elif row.split == "heldout":
            assert hits == 0, row
    text = corpus.tokenizer.decode(tokens[0])
    assert corpus.tokenizer(text, add_special_tokens=False)["input_ids"] == tokens[0].tolist()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_grammar_words_are_in_the_vocabulary(seed):
    rng = random.Random(seed)
    words = set(grammar.all_words())
    doc = grammar.language_document(rng) + grammar.reasoning_document(rng)
    assert set(doc) <= words
    for name in export.TASKS:
        _, make, n = export.TASKS[name]
        item = make(rng)
        assert len(item["choices"]) == n and len(set(item["choices"])) == n
        assert 0 <= item["gold"] < n
        assert set(item["context"].split()) | set(item["choices"]) <= words


def test_load_model_default_is_the_main_member():
    """`load_model()` returns the main member, matching the Hugging Face checkpoint."""
    import torch

    from workbench.models import load_model

    model = load_model()
    assert model.cfg.n_layers >= 6
    hf, _ = evaluate.load_hf(registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL])
    tokens = torch.as_tensor(np.load(registry.DEFAULT_MEMORIZED_SET)[:8])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-3, rtol=1e-3)
