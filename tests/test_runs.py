"""Run directories: identity by content, atomic creation, collision-free part names."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.runs import (
    Run,
    RunConfigMismatch,
    RunError,
    changed_keys,
    default_out,
    identity,
    part_name,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=2, max_size=6, unique=True))
def test_part_names_are_injective_and_file_safe(keys):
    names = [part_name(k) for k in keys]
    assert len(set(names)) == len(keys)
    assert all("/" not in n and "\0" not in n and len(n.encode()) < 200 for n in names)


def test_colliding_slugs_keep_both_parts(tmp_path):
    run = Run.open(tmp_path / "run", {"x": 1})
    run.save("t", "col:lide", pd.DataFrame({"v": [1]}))
    run.save("t", "col_lide", pd.DataFrame({"v": [2]}))
    assert sorted(run.table("t")["v"]) == [1, 2]  # before: one file, the first task's rows lost
    assert run.has("t", "col:lide") and run.has("t", "col_lide") and not run.has("t", "col-lide")


def test_changed_config_names_the_keys(tmp_path):
    Run.open(tmp_path / "run", {"a": 1, "identity": {"data_sha256": "x", "w": 1}})
    with pytest.raises(RunConfigMismatch, match=r"differs in identity\.data_sha256\)"):
        Run.open(tmp_path / "run", {"a": 1, "identity": {"data_sha256": "y", "w": 1}})
    assert changed_keys({"a": 1, "b": 2}, {"a": 1, "c": None}) == ["b", "c"]
    run = Run.open(tmp_path / "run", {"a": 2}, overwrite=True)  # starts afresh
    assert json.loads((run.path / "config.json").read_text())["config"]["a"] == 2


def test_data_and_weights_are_identified_by_content(tmp_path, tiny_neox_dir):
    data = tmp_path / "set.npy"
    np.save(data, np.zeros((2, 4), dtype=np.int64))
    first = identity(str(tiny_neox_dir), data)
    assert first == identity(str(tiny_neox_dir), data)
    np.save(data, np.ones((2, 4), dtype=np.int64))  # same path, other contents
    second = identity(str(tiny_neox_dir), data)
    assert changed_keys(first, second) == ["data_sha256"]
    assert first["weights_sha256"] and first["workbench"]
    hub = identity("pythia-no-such-model-here")
    assert hub["weights_sha256"] is None and hub["hub"] == "pythia-no-such-model-here"


def test_default_out_differs_between_configs_of_a_model():
    a = default_out("memorization", "dir/tiny", {"prefix_len": 16})
    b = default_out("memorization", "dir/tiny", {"prefix_len": 32})
    assert a != b and a.startswith("runs/memorization-tiny-")
    assert default_out("benchmarks", "tiny", {}).startswith("runs/benchmarks-tiny-")


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a run directory"):
        Run.open(tmp_path, {"a": 1})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _race(path, value, barrier, results):
    barrier.wait()
    try:
        Run.open(path, {"prefix_len": value})
        results.put((value, "opened"))
    except RunConfigMismatch:
        results.put((value, "refused"))


def test_of_two_racing_processes_exactly_one_creates_the_run(tmp_path):
    ctx = mp.get_context("fork")
    for trial in range(25):
        path = tmp_path / f"run{trial}"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(path, v, barrier, results)) for v in (16, 32)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcome = dict(results.get(timeout=5) for _ in procs)
        assert sorted(outcome.values()) == ["opened", "refused"], outcome
        winner = next(v for v, o in outcome.items() if o == "opened")
        assert json.loads((path / "config.json").read_text())["config"]["prefix_len"] == winner
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_benchmark_run_records_the_task_files_it_reads(tmp_path):
    """Edited task items change the run's identity, so a rerun does not resume stale results."""
    from workbench.benchmarks import run_record
    from workbench.commands import BenchmarkConfig
    from workbench.runs import tree_digest

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\n")
    (tasks / "t.jsonl").write_text('{"context": "a", "choices": ["b"], "gold": 0}\n')
    record = lambda: run_record(BenchmarkConfig(include_path=[str(tasks)]), [("m", None)])  # noqa: E731
    before = record()["identity"]["tasks_sha256"]
    assert before[-1] == tree_digest(tasks)
    assert record()["identity"]["tasks_sha256"] == before
    (tasks / "t.jsonl").write_text('{"context": "a", "choices": ["c"], "gold": 0}\n')
    after = record()["identity"]["tasks_sha256"]
    assert after[-1] != before[-1] and after[:-1] == before[:-1]
    moved = tmp_path / "elsewhere"
    tasks.rename(moved)
    record = lambda: run_record(BenchmarkConfig(include_path=[str(moved)]), [("m", None)])  # noqa: E731
    assert record()["identity"]["tasks_sha256"] == after  # the same files in another folder
