"""The sweep runner: skip / resume / merge against the uninterrupted run, unit keys, the GPU rule,
sweeps over training checkpoints of the organism, and the Ray executor against serial runs and
the golden tables (a local Ray cluster of 2 workers, started once for this module)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench import memorization
from workbench.interventions import CLEAN, ShortCircuit, single_block_sweep
from workbench.runner import Loader, Unit, gpus_per_task, run_units, slices
from workbench.runs import Run, part_name

GOLDEN = Path(__file__).parent / "golden"
ORGANISM = "organism-neox-m"


def _tokens(model, n: int = 10, seed: int = 0) -> np.ndarray:
    """The model's own greedy continuations of random prefixes (some rows memorized)."""
    import torch

    from workbench.decode import naive_greedy

    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(1, model.cfg.d_vocab, (n, 16), generator=g)
    tokens = torch.cat([prefix, naive_greedy(model, prefix, 16)], dim=1)
    tokens[::3, 20] = (tokens[::3, 20] + 1) % model.cfg.d_vocab
    return tokens.numpy()


class Crashing:
    """A job that raises on its ``crash_at``-th call (an interruption mid-sweep); counts calls."""

    def __init__(self, job, crash_at: int | None = None):
        self.job, self.crash_at, self.calls = job, crash_at, []

    def __call__(self, model, unit):
        self.calls.append(unit)
        if len(self.calls) == self.crash_at:
            raise KeyboardInterrupt
        return self.job(model, unit)


def _memorization_units(model, tokens, batch_size=3):
    name = model.cfg.model_name
    ivs = {name: [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]}
    return memorization.units_for([(name, None)], ivs, len(tokens), batch_size)


def _run(units, job, model, run=None):
    tables = run_units(
        units,
        job,
        tables=[memorization.TABLE],
        run=run,
        sort_by={memorization.TABLE: memorization.SORT},
        preloaded={(model.cfg.model_name, None): model},
    )
    return tables[memorization.TABLE]


def test_runner_skips_finished_units_and_resumes_after_an_interruption(tiny_neox, tmp_path):
    tokens = _tokens(tiny_neox)
    units = _memorization_units(tiny_neox, tokens)
    job = memorization.MemorizationJob(tokens, prefix_len=16, batch_size=3)
    assert len(units) == 4
    whole = _run(units, job, tiny_neox, Run.open(tmp_path / "whole", {"t": 1}))

    crashing = Crashing(job, crash_at=3)
    with pytest.raises(KeyboardInterrupt):
        _run(units, crashing, tiny_neox, Run.open(tmp_path / "run", {"t": 1}))
    parts = list((tmp_path / "run" / "parts" / memorization.TABLE).glob("*.parquet"))
    assert sorted(p.stem for p in parts) == sorted(part_name(u.key) for u in units[:2])

    resumed = Crashing(job)
    again = _run(units, resumed, tiny_neox, Run.open(tmp_path / "run", {"t": 1}))
    assert resumed.calls == units[2:]  # only the unfinished units
    assert again.equals(whole)
    stored = pd.read_parquet(tmp_path / "run" / f"{memorization.TABLE}.parquet")
    assert stored.equals(pd.read_parquet(tmp_path / "whole" / f"{memorization.TABLE}.parquet"))

    finished = Crashing(job)
    _run(units, finished, tiny_neox, Run.open(tmp_path / "run", {"t": 1}))
    assert finished.calls == []
    # without a run directory: the same table, from memory (generated ids as arrays)
    in_memory = _run(units, job, tiny_neox)
    assert in_memory.drop(columns="generated").equals(whole.drop(columns="generated"))


def test_the_runner_is_what_the_sweep_was(tiny_neox):
    """One unit per batch: the merged table is the engine's rows, intervention-major."""
    tokens = _tokens(tiny_neox, n=7)
    ivs = [CLEAN, ShortCircuit(1), ShortCircuit((0, 2), kind="zero")]
    df = memorization.sweep(tiny_neox, tokens, ivs, prefix_len=16, batch_size=3, progress=False)
    assert list(df.intervention) == [sc.label for sc in ivs for _ in range(7)]
    assert list(df["sample"]) == list(range(7)) * 3
    one = memorization.sweep(tiny_neox, tokens, ivs, prefix_len=16, batch_size=7, progress=False)
    assert df.drop(columns="generated").equals(one.drop(columns="generated"))


def test_a_subset_keeps_the_rows_of_the_set(tiny_neox, tmp_path):
    """reproduce's subsets: ``sample`` is the row of the whole set, resumable like any run."""
    tokens = _tokens(tiny_neox, n=12)
    rows = np.array([0, 3, 4, 8, 11])
    ivs = [CLEAN, ShortCircuit(2)]
    kw = dict(prefix_len=16, batch_size=2, progress=False)
    run = Run.open(tmp_path / "run", {"t": 1})
    ours = memorization.sweep(tiny_neox, tokens[rows], ivs, run=run, sample_ids=rows, **kw)
    plain = memorization.sweep(tiny_neox, tokens[rows], ivs, run=Run.open(tmp_path / "p", {}), **kw)
    assert list(ours["sample"]) == list(rows) * 2
    assert ours.drop(columns="sample").equals(plain.drop(columns="sample"))


interventions = st.builds(
    ShortCircuit,
    st.lists(st.integers(0, 40), max_size=3),
    st.none() | st.lists(st.integers(0, 15), min_size=1, max_size=2),
    st.sampled_from(["identity", "zero"]),
).map(lambda sc: CLEAN if sc.is_clean else sc)  # every record without a block is `none`
units = st.builds(
    Unit,
    st.text(min_size=1, max_size=12),
    st.none() | st.integers(0, 10**6),
    st.lists(interventions, max_size=3).map(tuple),
    st.integers(0, 10**6),
    st.none() | st.integers(0, 10**6),
    st.none() | st.text(max_size=8),
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # beartype
@given(units, units)
def test_unit_keys_are_stable_and_unique(a, b):
    assert Unit.from_key(a.key) == a  # the key names the unit: distinct units, distinct keys
    assert (a.key == b.key) == (a == b)
    assert (part_name(a.key) == part_name(b.key)) == (a == b)


def test_unit_keys_do_not_change_between_versions():
    """Part names of stored runs depend on the key: this one is pinned."""
    unit = Unit("organism-neox-m", 300, (CLEAN, ShortCircuit(3)), 64, 128)
    assert unit.key == '["organism-neox-m",300,["none","identity:3"],64,128,null]'
    assert slices(7, 3) == [(0, 3), (3, 6), (6, 7)]


def test_gpus_are_asked_for_only_where_the_cluster_has_them():
    assert gpus_per_task(0, "auto") == 0  # a CPU-only cluster: a GPU task would never schedule
    assert gpus_per_task(0.0, "cuda") == 0
    assert gpus_per_task(2, "auto") == 1
    assert gpus_per_task(1, "cuda") == 1
    assert gpus_per_task(4, "cuda:1") == 1
    assert gpus_per_task(4, "cpu") == 0  # a CPU run on a GPU cluster leaves the GPUs free


def test_executor_ray_without_ray_is_one_line(tiny_neox_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    argv = ["--model", str(tiny_neox_dir), "--data", str(GOLDEN / "inputs.npy"), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_:
        memorization.main([*argv, "--out", str(tmp_path / "run"), "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "pip install -e '.[ray]'" in err[0]


@pytest.fixture(scope="module")
def organism_set(tmp_path_factory) -> Path:
    from workbench.organism import registry

    path = tmp_path_factory.mktemp("organism") / "memorized8.npy"
    np.save(path, np.load(registry.DEFAULT_MEMORIZED_SET, mmap_mode="r")[:8])
    return path


def _checkpoint_sweep(organism_set, out, *extra) -> pd.DataFrame:
    argv = ["--model", ORGANISM, "--checkpoints", "100", "300", "--blocks", "0-1"]
    argv += ["--data", str(organism_set), "--batch-size", "4", "--device", "cpu"]
    return memorization.main([*argv, "--out", str(out), "--no-progress", *extra])


def test_a_sweep_over_checkpoints_of_the_organism(organism_set, tmp_path, capsys):
    from workbench.models import load_model

    df = _checkpoint_sweep(organism_set, tmp_path / "run")
    labels = ["none", "identity:0", "identity:1"]
    assert list(df.columns[:3]) == ["model", "checkpoint", "dataset"]
    sets = df.groupby(["checkpoint", "intervention"])["sample"].apply(list)
    assert sorted(sets.index) == sorted((c, lab) for c in (100, 300) for lab in labels)
    assert all(rows == list(range(8)) for rows in sets)
    assert "checkpoint" in capsys.readouterr().out  # the summary is per checkpoint
    tokens = np.load(organism_set)
    ivs = [CLEAN, ShortCircuit(0), ShortCircuit(1)]
    for step in (100, 300):  # the oracle: a plain sweep of that checkpoint
        model = load_model(ORGANISM, checkpoint=step, device="cpu")
        alone = memorization.sweep(
            model, tokens, ivs, progress=False, model_name=ORGANISM, dataset_name="memorized8"
        )
        ours = df[df.checkpoint == step].drop(columns="checkpoint").reset_index(drop=True)
        assert ours.drop(columns="generated").equals(alone.drop(columns="generated"))
    nll = df[df.intervention == "none"].groupby("checkpoint").suffix_nll.mean()
    assert nll[300] < nll[100]  # the checkpoints are different weights (training goes on)


def test_a_sweep_over_models(tiny_neox_dir, tiny_neo_dir, tiny_neox, tiny_neo, tmp_path, capsys):
    """--models: each model's rows (its own blocks) are those of a sweep of that model alone."""
    tokens = np.load(GOLDEN / "inputs.npy")[:6]
    np.save(tmp_path / "set.npy", tokens)
    names = [str(tiny_neox_dir), str(tiny_neo_dir)]
    argv = ["--models", *names, "--data", str(tmp_path / "set.npy"), "--batch-size", "4"]
    df = memorization.main([*argv, "--device", "cpu", "--out", str(tmp_path / "r"), "--no-decode"])
    assert list(dict.fromkeys(df.model)) == names
    for name, model in zip(names, (tiny_neox, tiny_neo), strict=True):
        ivs = [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]
        alone = memorization.sweep(
            model, tokens, ivs, decode=False, progress=False, model_name=name, dataset_name="set"
        )
        assert df[df.model == name].reset_index(drop=True).equals(alone)


def test_bounds_over_models(tiny_neox_dir, tiny_neo_dir, tiny_neox, tiny_neo, tmp_path, capsys):
    """bounds --models: each model's tables are those of compute_bounds on that model alone."""
    from workbench import bounds

    tokens = np.load(GOLDEN / "inputs.npy")[:5]
    np.save(tmp_path / "set.npy", tokens)
    names = [str(tiny_neox_dir), str(tiny_neo_dir)]
    argv = ["--models", *names, "--data", str(tmp_path / "set.npy"), "--batch-size", "3"]
    argv += ["--prefix-len", "16", "--blocks", "0-1", "--jacobian-iters", "2", "--no-decode"]
    tables = bounds.main([*argv, "--device", "cpu", "--out", str(tmp_path / "r")])
    printed = capsys.readouterr().out
    assert all(f"{name} on set" in printed for name in names)  # a summary per model
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert list(dict.fromkeys(summary.model)) == names
    for name, model in zip(names, (tiny_neox, tiny_neo), strict=True):
        alone = bounds.compute_bounds(
            model,
            tokens,
            [0, 1],
            prefix_len=16,
            batch_size=3,
            jacobian_iters=2,
            decode=False,
            model_name=name,
        )
        for table in ("layers", "tokens", "samples", "memorization", "jacobian"):
            ours = tables[table][tables[table].model == name].reset_index(drop=True)
            assert ours.equals(alone[table]), table
        assert (tmp_path / "r" / f"bounds-{names.index(name)}-{Path(name).name}.html").is_file()


def test_model_and_models_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        memorization.main(["--model", ORGANISM, "--models", ORGANISM, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: give --model or --models, not both"


def test_benchmarks_over_checkpoints(tmp_path, capsys):
    """Each checkpoint's rows are those of a plain benchmark run of that checkpoint."""
    from test_lm_eval_adapter import write_tiny_tasks

    from workbench import benchmarks
    from workbench.models import load_model

    tasks = write_tiny_tasks(tmp_path / "tasks")
    kw = dict(
        tasks=["tiny_mc", "tiny_ppl"], include_path=[str(tasks)], blocks="0", limit=3, device="cpu"
    )
    kw.update(bootstrap_iters=0, batch_size=4)
    cfg = benchmarks.BenchmarkConfig(
        model=ORGANISM, checkpoints=[100, 300], out=str(tmp_path / "r")
    )
    for name, value in kw.items():
        setattr(cfg, name, value)
    table, summary = benchmarks.run_benchmarks(cfg)
    assert sorted(zip(summary.checkpoint, summary.intervention, strict=True)) == [
        (100, "identity:0"),
        (100, "none"),
        (300, "identity:0"),
        (300, "none"),
    ]
    assert (summary[summary.intervention == "none"].relative_drop == 0).all()
    assert list(table.columns[:2]) == ["model", "checkpoint"]
    assert set(zip(table.checkpoint, table.intervention, strict=True)) == {
        (c, lab) for c in (100, 300) for lab in ("none", "identity:0")
    }
    for step in (100, 300):
        one = benchmarks.BenchmarkConfig(model=ORGANISM, out=str(tmp_path / f"s{step}"), **kw)
        alone, _ = benchmarks.run_benchmarks(
            one, model=load_model(ORGANISM, checkpoint=step, device="cpu")
        )
        ours = table[table.checkpoint == step].drop(columns="checkpoint").reset_index(drop=True)
        assert ours.equals(alone)
    ppl = table[table.metric == "word_perplexity"].set_index(["checkpoint", "intervention"])
    assert ppl.value[100, "none"] != ppl.value[300, "none"]  # two different sets of weights


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_equals_the_golden_tables(ray_cluster, tmp_path):
    """Each command on Ray tasks writes the tables the golden files pin (serial, old code)."""
    sys.path.insert(0, str(GOLDEN))
    from make_golden import BENCHMARK_TABLES, COMMANDS, run_benchmarks
    from test_golden import _same
    from tiny_models import write_tiny_neox

    from workbench import bounds

    model_dir = write_tiny_neox(tmp_path / "tiny-neox")
    out = run_benchmarks(model_dir, tmp_path, "--executor", "ray")
    for table in BENCHMARK_TABLES:
        new = pd.read_parquet(out / f"{table}.parquet")
        _same(new, pd.read_parquet(GOLDEN / f"benchmarks.{table}.parquet"))
    for name in ("memorization", "bounds"):
        cmd = bounds if name == "bounds" else memorization
        out = tmp_path / name
        argv = ["--model", str(model_dir), "--data", str(GOLDEN / "inputs.npy"), "--out", str(out)]
        cmd.main([*argv, "--device", "cpu", "--executor", "ray", *COMMANDS[name].split()])
        tables = ["layers", "samples", "memorization"] if name == "bounds" else ["memorization"]
        for table in tables:
            _same(
                pd.read_parquet(out / f"{table}.parquet"),
                pd.read_parquet(GOLDEN / f"{name}.{table}.parquet"),
            )


def test_ray_equals_serial_on_a_checkpoint_sweep(ray_cluster, organism_set, tmp_path, capsys):
    serial = _checkpoint_sweep(organism_set, tmp_path / "serial")
    on_ray = _checkpoint_sweep(organism_set, tmp_path / "ray", "--executor", "ray")
    assert on_ray.equals(serial)
    a, b = (pd.read_parquet(tmp_path / d / "memorization.parquet") for d in ("serial", "ray"))
    assert a.equals(b)


def test_ray_resumes_an_interrupted_serial_run(ray_cluster, tiny_neox_dir, tiny_neox, tmp_path):
    name = str(tiny_neox_dir)  # Ray tasks load the model by name: its directory here
    tokens = _tokens(tiny_neox)
    ivs = {name: [CLEAN, *single_block_sweep(range(tiny_neox.cfg.n_layers))]}
    units = memorization.units_for([(name, None)], ivs, len(tokens), 3)
    job = memorization.MemorizationJob(tokens, prefix_len=16, batch_size=3)
    kw = dict(
        tables=[memorization.TABLE],
        sort_by={memorization.TABLE: memorization.SORT},
        load=Loader(device="cpu"),
    )
    whole = run_units(units, job, run=Run.open(tmp_path / "whole", {"t": 1}), **kw)
    with pytest.raises(KeyboardInterrupt):
        run_units(
            units,
            Crashing(job, crash_at=2),
            run=Run.open(tmp_path / "run", {"t": 1}),
            preloaded={(name, None): tiny_neox},
            **kw,
        )
    run = Run.open(tmp_path / "run", {"t": 1})
    assert sum(run.has(memorization.TABLE, u.key) for u in units) == 1
    resumed = run_units(units, job, run=run, executor="ray", **kw)
    assert resumed[memorization.TABLE].equals(whole[memorization.TABLE])
    in_memory = run_units(units, job, executor="ray", **kw)[memorization.TABLE]  # no run dir
    assert in_memory.drop(columns="generated").equals(
        whole[memorization.TABLE].drop(columns="generated")
    )


def test_ray_features_of_the_taxonomy_equal_serial(ray_cluster, tiny_neox_dir, tiny_neox, tmp_path):
    from workbench.taxonomy.features import attention_features, stream_features

    tokens = _tokens(tiny_neox, n=7)
    kw = dict(batch_size=3, model_name=str(tiny_neox_dir), load=Loader(device="cpu"))
    on_ray = stream_features(
        tiny_neox, tokens, Run.open(tmp_path / "ray", {"t": 1}), executor="ray", **kw
    )
    whole = attention_features(tiny_neox, tokens, batch_size=3, progress=False, dtype=np.float16)
    for pooling in ("mean", "max"):
        np.testing.assert_array_equal(on_ray[pooling], whole[pooling])


def test_reproduce_on_ray_equals_serial(ray_cluster, tmp_path, monkeypatch):
    """``reproduce --executor ray``: its memorization and bounds runs are the serial ones."""
    from workbench import reproduce, runner
    from workbench.commands import ReproduceConfig
    from workbench.models import load_model

    on_ray_calls = []
    ray_executor = runner._run_ray
    monkeypatch.setattr(
        runner,
        "_run_ray",
        lambda todo, *a: on_ray_calls.append(len(todo)) or ray_executor(todo, *a),
    )
    model = load_model(ORGANISM, device="cpu")
    tables = {}
    for executor in ("serial", "ray"):
        cfg = ReproduceConfig(max_samples=6, bounds_samples=3, batch_size=2, executor=executor)
        reproduce.run_memorization(model, ORGANISM, cfg, tmp_path / executor / "mem")
        reproduce.run_bounds(model, ORGANISM, cfg, tmp_path / executor / "bounds")
        tables[executor] = [
            pd.read_parquet(tmp_path / executor / "mem" / "memorization.parquet"),
            pd.read_parquet(tmp_path / executor / "bounds" / "layers.parquet"),
        ]
    assert on_ray_calls == [3, 1]  # memorization: 3 batches of 2; bounds: 1 of 3 samples
    assert len(tables["serial"][0]) == 6 * (model.cfg.n_layers + 1)
    for serial, on_ray in zip(tables["serial"], tables["ray"], strict=True):
        assert on_ray.equals(serial)
