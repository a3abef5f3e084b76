"""The shipped organism (data/organism) held to the gates of design/organism.md (v2).

These tests load the shipped files and never retrain. The oracles: Hugging Face ``generate``
(greedy) for every row of both sample sets, lm-evaluation-harness itself for the tasks, and
TransformerLens' conversion against the Hugging Face checkpoint for every training checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.organism import evaluate, members, registry, tasks

pytestmark = pytest.mark.skipif(
    not registry.DEFAULT_MEMORIZED_SET.exists(), reason="organism not built in data/organism"
)
TASK_MARGIN = 0.2  # the main member's accuracy is at least chance + this on every task
MAIN = registry.DEFAULT_MODEL


def config(name: str) -> dict:
    return json.loads((registry.EMBEDDED_MODELS[name] / "config.json").read_text())


SHIPPED = [n for n, p in registry.EMBEDDED_MODELS.items() if (p / "config.json").is_file()]


def test_registry_points_at_shipped_files():
    assert MAIN == members.MAIN_MEMBER and MAIN in SHIPPED
    for path in (registry.EMBEDDED_MODELS[n] for n in SHIPPED):
        for f in ("config.json", "model.safetensors", "tokenizer.json", "training_log.json"):
            assert (path / f).is_file(), path / f
    for f in (registry.DEFAULT_GROUND_TRUTH, registry.CONTROL_SET, registry.CORPUS_MANIFEST):
        assert f.is_file(), f
    assert (registry.TASKS_DIR / "organism_language.yaml").is_file()


def test_whole_suite_is_shipped():
    assert set(SHIPPED) == set(registry.EMBEDDED_MODELS)


def test_secondary_seeds_are_stored_in_half_precision_the_rest_in_float32():
    from safetensors import safe_open

    for name in SHIPPED:
        with safe_open(registry.EMBEDDED_MODELS[name] / "model.safetensors", "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
        assert dtypes == ({"F16"} if name in members.HALF_PRECISION else {"F32"}), name
        assert config(name)["dtype"] == ("float16" if name in members.HALF_PRECISION else "float32")


def test_suite_shapes():
    main = config(MAIN)
    assert main["model_type"] == "gpt_neox" and main["num_hidden_layers"] >= 12
    deep = [n for n in registry.EMBEDDED_MODELS if config(n).get("num_hidden_layers", 0) >= 24]
    assert deep and all(config(n)["model_type"] == "gpt_neox" for n in deep)
    neo = [n for n in registry.EMBEDDED_MODELS if config(n)["model_type"] == "gpt_neo"]
    assert neo and all(config(n)["num_layers"] >= 12 for n in neo)
    for n in neo:
        assert {"global", "local"} == set(config(n)["attention_layers"])
    for n in registry.EMBEDDED_MODELS:
        c = config(n)
        if c["model_type"] == "gpt_neox":
            assert c["use_parallel_residual"] and not c["tie_word_embeddings"]
            assert c["rope_parameters"]["partial_rotary_factor"] == 0.25
    shape = lambda m: (m.family, m.n_layers, m.d_model, m.n_heads)  # noqa: E731
    twins = [n for n, m in members.SUITE.items() if shape(m) == shape(members.SUITE[MAIN])]
    assert len({members.SUITE[n].seed for n in twins}) >= 3
    assert all(config(n)["num_hidden_layers"] == main["num_hidden_layers"] for n in twins)


def test_size_budget():
    data = registry.DATA_DIR.parent
    total = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    assert total <= 80 * 1024**2, f"data/ is {total / 1024**2:.1f} MB"


def test_training_checkpoints_load_by_step():
    """`load_model(main, checkpoint=step)` is the Hugging Face checkpoint of that step."""
    from workbench.models import ModelLoadError, load_model

    steps = registry.checkpoint_steps(MAIN)
    assert len(steps) >= 6
    tokens = torch.as_tensor(np.load(registry.DEFAULT_MEMORIZED_SET)[:4])
    previous = None
    for step in (steps[0], steps[len(steps) // 2], steps[-1]):
        model = load_model(MAIN, checkpoint=step, device="cpu")
        hf, _ = evaluate.load_hf(registry.checkpoint_dir(MAIN, step))
        with torch.no_grad():
            logits = model(tokens)
            torch.testing.assert_close(logits, hf(tokens).logits, atol=1e-3, rtol=1e-3)
        assert previous is None or not torch.allclose(previous, logits)
        previous = logits
    with pytest.raises(ModelLoadError, match="has no training checkpoint"):
        load_model(MAIN, checkpoint=steps[0] + 1)


def greedy_suffix_matches(name: str, tokens: np.ndarray) -> np.ndarray:
    """Hugging Face ``generate`` (greedy, 32 new tokens): does it reproduce each true suffix?"""
    model, tok = evaluate.load_hf(registry.EMBEDDED_MODELS[name])
    out = []
    for batch in torch.as_tensor(tokens).split(400):
        prefix = batch[:, :32]
        gen = model.generate(
            prefix,
            attention_mask=torch.ones_like(prefix),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        out.append((gen[:, 32:] == batch[:, 32:]).all(dim=1).numpy())
    return np.concatenate(out)


@pytest.fixture(scope="module")
def sets() -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    return {
        "memorized": (
            np.load(registry.DEFAULT_MEMORIZED_SET),
            pd.read_csv(registry.DEFAULT_GROUND_TRUTH, keep_default_na=False),
        ),
        "control": (
            np.load(registry.CONTROL_SET),
            pd.read_csv(registry.CONTROL_GROUND_TRUTH, keep_default_na=False),
        ),
    }


def test_sample_sets_format_and_mix(sets):
    (mem, mem_t), (ctl, ctl_t) = sets["memorized"], sets["control"]
    for arr, table in ((mem, mem_t), (ctl, ctl_t)):
        assert arr.dtype == np.int64 and arr.ndim == 2 and arr.shape[1] == 64
        assert len(table) == len(arr) and (table["sample"] == np.arange(len(arr))).all()
    assert len(mem) >= 1000 and len(ctl) == len(mem)
    assert mem_t.kind.value_counts().to_dict() == ctl_t.kind.value_counts().to_dict()
    assert mem_t.kind.nunique() >= 4 and mem_t.dup_bin.nunique() >= 5
    assert len(np.unique(np.concatenate([mem, ctl]), axis=0)) == 2 * len(mem)  # all distinct


def test_memorized_set_is_reproduced_by_greedy_generation(sets):
    tokens, _ = sets["memorized"]
    assert greedy_suffix_matches(MAIN, tokens).all()


def test_control_set_is_not_reproduced(sets):
    tokens, _ = sets["control"]
    assert not greedy_suffix_matches(MAIN, tokens).any()


@pytest.fixture(scope="module")
def memorized_windows() -> pd.DataFrame:
    windows = pd.read_parquet(registry.WINDOWS_TABLE)
    return windows[windows.exact_match == 1.0]


def test_stream_holds_enough_guess_windows(memorized_windows):
    """The taxonomy's pool (windows every 16 tokens): at least 1,300 guess windows the main
    member reproduces."""
    assert memorized_windows.guess.sum() >= 1300


def test_stream_holds_enough_recall_windows(memorized_windows):
    assert (~memorized_windows.guess).sum() >= 1300


def test_taxonomy_set_is_balanced_kind_matched_and_drawn_from_the_census(memorized_windows):
    """The shipped taxonomy set is what ``samples.taxonomy_set`` draws from ``windows.parquet``
    today (not stale), 1,600 windows per class, the non-memorized ones in the kind mix of the
    memorized ones, and greedy generation agrees with the classes on a random subset."""
    from workbench.organism import samples

    windows = pd.read_parquet(registry.WINDOWS_TABLE)
    shipped = pd.read_csv(registry.TAXONOMY_GROUND_TRUTH)
    tokens = np.load(registry.TAXONOMY_SET)
    _, drawn = samples.taxonomy_set(windows, np.arange(len(windows))[:, None])
    assert drawn["start"].tolist() == shipped["start"].tolist()
    assert shipped.drawn_as.value_counts().to_dict() == {
        c: samples.TAXONOMY_PER_CLASS for c in ("guess", "recall", "non-memorized")
    }
    assert len(np.unique(tokens, axis=0)) == len(tokens)
    memorized = shipped[shipped.drawn_as != "non-memorized"].kind.value_counts(normalize=True)
    control = shipped[shipped.drawn_as == "non-memorized"].kind.value_counts(normalize=True)
    assert (memorized - control.reindex(memorized.index)).abs().max() < 1e-3
    pick = np.random.default_rng(1).choice(len(tokens), 96, replace=False)
    reproduced = greedy_suffix_matches(MAIN, tokens[pick])
    assert (reproduced == (shipped.drawn_as.to_numpy()[pick] != "non-memorized")).all()


@pytest.fixture(scope="module")
def main_hf():
    return evaluate.load_hf(registry.EMBEDDED_MODELS[MAIN])


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_every_task_has_500_items_and_the_main_member_is_well_above_chance(main_hf, name):
    items = evaluate.read_items(registry.TASKS_DIR, name)
    assert len(items) >= 500
    acc = evaluate.task_accuracy(*main_hf, items, tasks.DELIMITERS[name])
    assert acc >= tasks.chance_levels()[name] + TASK_MARGIN, (name, acc)


def test_lm_eval_harness_scores_the_tasks_as_computed_directly(main_hf):
    main = registry.EMBEDDED_MODELS[MAIN]
    names = ["organism_successor", "organism_code_close"]
    accs = evaluate.lm_eval_accuracy(main, registry.TASKS_DIR, names)
    for name in names:
        items = evaluate.read_items(registry.TASKS_DIR, name)
        direct = evaluate.task_accuracy(*main_hf, items, tasks.DELIMITERS[name])
        assert accs[name] == pytest.approx(direct, abs=1e-9), name


def test_load_model_default_is_the_main_member(sets):
    from workbench.models import load_model

    model = load_model(device="cpu")
    hf, _ = evaluate.load_hf(registry.EMBEDDED_MODELS[MAIN])
    tokens = torch.as_tensor(sets["memorized"][0][:8])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-3, rtol=1e-3)
