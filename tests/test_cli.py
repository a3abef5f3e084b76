"""The command-line layer: validation, one-line errors with exit 2, Ctrl-C, quiet loads, fast
help; one test per case of issue 13's "Why" list that it covers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import cli, memorization
from workbench.commands import TaxonomyConfig
from workbench.interventions import ShortCircuit

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def command(module: str, *args: str, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"workbench.{module}", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
        user=user,
    )


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("module", "args", "says"),
    [
        ("benchmarks", ["--batch-size", "-1"], "--batch-size: must be at least 1"),
        ("memorization", ["--batch-size", "0"], "--batch-size: must be at least 1"),
        ("memorization", ["--blocks", "3-1"], "reversed"),
        ("memorization", ["--blocks", "1.5"], "cannot read block spec"),
        ("bounds", ["--sigma-floor", "-1"], "--sigma-floor: must be a positive finite"),
        ("bounds", ["--sigma-floor", "0"], "--sigma-floor: must be a positive finite"),
        ("bounds", ["--sigma-floor", "nan"], "--sigma-floor: must be a positive finite"),
        ("taxonomy", ["--seeds", "0"], "--seeds: must be at least 1"),
        ("taxonomy", ["--batch-size", "0"], "--batch-size: must be at least 1"),
        ("taxonomy", ["--test-fraction", "1.5"], "open interval (0, 1)"),
        ("benchmarks", ["--limit", "0"], "--limit: must be an integer ≥ 1 or a fraction"),
        ("benchmarks", ["--limit", "-5"], "--limit: must be an integer ≥ 1 or a fraction"),
        ("memorization", ["--max-samples", "0"], "--max-samples: must be at least 1"),
        ("reproduce", ["--task-limit", "0"], "--task-limit: must be at least 1"),
        ("benchmarks", ["--groups", "nogroup"], "--groups takes GROUP=TASK,TASK"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(module, args, says):
    res = command(module, *args)
    assert res.returncode == 2 and says in one_error_line(res.stderr)


@pytest.mark.parametrize(
    "module",
    ["memorization", "bounds", "benchmarks", "taxonomy", "reproduce", "figures", "task_data"],
)
def test_help_shows_defaults_and_imports_nothing_heavy(module):
    probe = (
        "import runpy, sys; sys.argv = ['x', '--help']\n"
        "try:\n"
        f"    runpy.run_module('workbench.{module}', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'transformer_lens', 'lm_eval')"
        " if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("[]")  # argparse answered before any heavy import
    assert "--batch-size" not in res.stdout or "(default: " in res.stdout
    assert "--out" in res.stdout and "--threads" in res.stdout and "--debug" in res.stdout


def test_short_circuit_refuses_non_integer_blocks():
    for bad in (1.5, True, (1.0,), (False, 2)):
        with pytest.raises(TypeError):
            ShortCircuit(bad)
    assert ShortCircuit([2, 2, 1]).blocks == (1, 2) and ShortCircuit(3).blocks == (3,)


def test_taxonomy_defaults_equal_the_cnn_training_defaults():
    from workbench.taxonomy.cnn import TrainConfig

    cfg, train = TaxonomyConfig(), TrainConfig()
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.train_batch_size, cfg.test_fraction) == (
        train.epochs,
        train.lr,
        train.weight_decay,
        train.batch_size,
        train.test_fraction,
    )


def test_dtypes_are_those_the_loader_knows():
    from workbench.models import DTYPES

    assert set(cli.DTYPES) == set(DTYPES)


# --------------------------------------------------------------- errors from the inputs
def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = np.arange(2 * 40).reshape(2, 40) % 90
    cases = {}
    (tmp / "empty.npy").write_bytes(b"")
    cases["empty npy"] = (tmp / "empty.npy", "empty.npy: not a readable .npy array")
    np.save(tmp / "trunc.npy", good)
    (tmp / "trunc.npy").write_bytes((tmp / "trunc.npy").read_bytes()[:-40])
    cases["truncated npy"] = (tmp / "trunc.npy", "trunc.npy: not a readable .npy array")
    np.save(tmp / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases["pickled npy"] = (tmp / "pickled.npy", "pickled.npy: not a readable .npy array")
    rows = [json.dumps(r.tolist()) for r in good]
    (tmp / "bad.jsonl").write_text(rows[0] + "\n" + rows[1][:-3] + "\n")
    cases["bad jsonl line"] = (tmp / "bad.jsonl", "bad.jsonl: line 2 is not JSON")
    (tmp / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    cases["BOM"] = (tmp / "bom.jsonl", "bom.jsonl: starts with a UTF-8 byte-order mark")
    (tmp / "latin.jsonl").write_bytes(('{"text": "ok"}\n{"text": "café"}\n').encode("latin-1"))
    cases["latin-1"] = (tmp / "latin.jsonl", "latin.jsonl: line 2 is not UTF-8")
    big = [*good[0].tolist()[:-1], 2**70]
    (tmp / "big.jsonl").write_text(rows[0] + "\n" + json.dumps(big) + "\n")
    cases["id 2**70"] = (
        tmp / "big.jsonl",
        "big.jsonl: line 2 holds token id 1180591620717411303424",
    )
    np.save(tmp / "vocab.npy", good + 1000)
    cases["id outside the vocabulary"] = (tmp / "vocab.npy", "outside the vocabulary")
    return cases


def test_bad_data_files_are_one_line_errors(tiny_neox_dir, tmp_path, capsys):
    for name, (path, says) in _bad_inputs(tmp_path).items():
        argv = ["--model", str(tiny_neox_dir), "--data", str(path), "--device", "cpu"]
        with pytest.raises(SystemExit) as exit_:
            memorization.main([*argv, "--out", str(tmp_path / f"run-{path.stem}")])
        assert exit_.value.code == 2, name
        assert says in one_error_line(capsys.readouterr().err), name


def test_missing_model_is_one_line(tmp_path):
    res = command("memorization", "--model", "no-such-model-anywhere", "--out", str(tmp_path))
    assert res.returncode == 2 and "unknown model 'no-such-model-anywhere'" in one_error_line(
        res.stderr
    )


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    from workbench.data import SampleSetError

    with pytest.raises(SampleSetError):
        memorization.main(["--data", str(tmp_path / "empty.npy"), "--debug", "--device", "cpu",
                           "--out", str(tmp_path / "run")])  # fmt: skip


def _set(model_dir: Path, path: Path, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).integers(1, 90, (4, 40)))
    return path


def test_changed_data_under_the_same_path_is_refused(tiny_neox_dir, tmp_path, capsys):
    data = _set(tiny_neox_dir, tmp_path / "set.npy")
    argv = ["--model", str(tiny_neox_dir), "--data", str(data), "--prefix-len", "20"]
    argv += ["--device", "cpu", "--blocks", "0", "--out", str(tmp_path / "run")]
    memorization.main(argv)
    _set(tiny_neox_dir, data, seed=1)  # before: resumed and printed the old result
    with pytest.raises(SystemExit) as exit_:
        memorization.main(argv)
    assert exit_.value.code == 2
    assert "identity.data_sha256" in one_error_line(capsys.readouterr().err)
    memorization.main([*argv, "--overwrite"])  # starts afresh


def test_read_only_out_is_refused_before_any_work(tiny_neox_dir, tmp_path, monkeypatch, capsys):
    data = _set(tiny_neox_dir, tmp_path / "set.npy")
    (tmp_path / "ro").mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: (m != os.W_OK and real(p, m)) or
                            (m == os.W_OK and "ro" not in Path(p).parts))  # fmt: skip
    monkeypatch.setattr(memorization, "load_inputs", lambda *a, **k: pytest.fail("loaded"))
    argv = ["--model", str(tiny_neox_dir), "--data", str(data), "--out", str(tmp_path / "ro" / "r")]
    with pytest.raises(SystemExit) as exit_:
        memorization.main(argv)  # before: PermissionError at the final write
    assert exit_.value.code == 2 and "is read-only" in one_error_line(capsys.readouterr().err)


def test_ctrl_c_keeps_finished_units_and_exits_130(tiny_neox_dir, tmp_path, monkeypatch, capsys):
    data = _set(tiny_neox_dir, tmp_path / "set.npy")
    real = memorization.evaluate_batch
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(memorization, "evaluate_batch", interrupted)
    out = tmp_path / "run"
    argv = ["--model", str(tiny_neox_dir), "--data", str(data), "--prefix-len", "20"]
    argv += ["--batch-size", "2", "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        memorization.main(argv)
    assert exit_.value.code == 130
    assert "interrupted" in one_error_line(capsys.readouterr().err)
    assert len(list((out / "parts" / "memorization").glob("*.parquet"))) == 1  # batch 0's unit


def test_threads_sets_torchs_threads(tiny_neox_dir, tmp_path, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    data = _set(tiny_neox_dir, tmp_path / "set.npy")
    argv = ["--model", str(tiny_neox_dir), "--data", str(data), "--prefix-len", "20"]
    memorization.main([*argv, "--blocks", "none", "--threads", "3", "--out", str(tmp_path / "r")])
    assert seen == [3]


def test_a_model_load_is_quiet(tiny_neox_dir, tmp_path):
    data = _set(tiny_neox_dir, tmp_path / "set.npy")
    res = command("memorization", "--model", str(tiny_neox_dir), "--data", str(data),
                  "--prefix-len", "20", "--blocks", "0", "--out", str(tmp_path / "r"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Loading weights" not in res.stderr and "Loading model config" not in res.stderr
    assert "\r" not in res.stderr  # no progress bar when stderr is not a terminal


def test_the_lm_eval_custom_kwargs_warning_is_shown_once():
    """setup() puts one once-only filter on lm-eval's task logger (its state is per process, so
    the filter is checked on its own logger here, whatever earlier tests logged)."""
    cli.setup(cli.Runtime(progress=False))
    cli.setup(cli.Runtime(progress=False))
    task_log = logging.getLogger("lm_eval.api.task")
    (once,) = [f for f in task_log.filters if isinstance(f, cli._Once)]
    log = logging.getLogger("test.once")
    log.addFilter(cli._Once(once.marker))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    try:
        for task in ("a", "b", "c"):
            log.warning(f"{task}: Custom kwargs can be passed to `--metadata` in console")
        log.warning("another warning")
    finally:
        log.removeHandler(handler)
    assert [r.getMessage().split(":")[0] for r in records] == ["a", "another warning"]


def test_taxonomy_refuses_verdicts_of_another_model_or_data(tmp_path):
    from workbench.errors import UserError
    from workbench.runs import Run
    from workbench.taxonomy.pipeline import reused_verdicts

    ours = {"model": "m", "identity": {"weights_sha256": "w1", "data_sha256": "d1"}}
    for theirs, says in (
        ({"weights_sha256": "w2", "data_sha256": "d1"}, "another model"),
        ({"weights_sha256": "w1", "data_sha256": "d2"}, "another data"),
    ):
        run = Run.open(tmp_path / says.replace(" ", "-"), {"identity": theirs})
        run.save("memorization", "all", pd.DataFrame({"model": ["m"], "sample": [0]}))
        run.finish("memorization")
        with pytest.raises(UserError, match=says):
            reused_verdicts(run.path, ours, 4)
    bare = tmp_path / "other.parquet"  # a table without a run: its model column decides
    pd.DataFrame({"model": ["other"], "sample": [0]}).to_parquet(bare)
    with pytest.raises(UserError, match="verdicts of"):
        reused_verdicts(bare, ours, 4)
    pd.DataFrame({"sample": [0]}).to_parquet(bare)  # nothing says whose verdicts they are
    with pytest.raises(UserError, match="no model column"):
        reused_verdicts(bare, ours, 4)
    pd.DataFrame({"model": ["m"], "sample": [0]}).to_parquet(bare)
    assert len(reused_verdicts(bare, ours, 4)) == 1


def test_reproduce_compares_configs_before_trusting_a_table(tiny_neox_dir, tmp_path):
    from workbench import reproduce
    from workbench.benchmarks import BenchmarkConfig, run_record
    from workbench.commands import ReproduceConfig
    from workbench.runs import Run, RunConfigMismatch

    name, out = str(tiny_neox_dir), tmp_path / "benchmarks-x"
    old = BenchmarkConfig(model=name, blocks="all", limit=5, bootstrap_iters=0, batch_size=64)
    run = Run.open(out, run_record(old, [(name, None)]))
    (run.path / "benchmarks.parquet").write_bytes(b"an old table")
    with pytest.raises(RunConfigMismatch, match="limit"):  # before: kept the old benchmarks
        reproduce.run_benchmarks(None, name, ReproduceConfig(task_limit=3), out)


def test_bounds_without_a_block_is_one_line(tiny_neox, capsys):
    from workbench import bounds

    with pytest.raises(SystemExit) as exit_:  # refused while parsing, before any model loads
        bounds.main(["--blocks", "none", "--device", "cpu"])
    assert exit_.value.code == 2
    assert "--blocks none: the bounds are about a short-circuited block" in one_error_line(
        capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="at least one block"):  # the library: ValueError
        bounds.compute_bounds(tiny_neox, np.ones((2, 32), dtype=np.int64), blocks=[])


def _tiny_benchmarks(tiny_neox_dir: Path, tasks: Path, out: Path, *extra: str) -> list[str]:
    argv = f"--model {tiny_neox_dir} --include-path {tasks} --device cpu --out {out}"
    return [*argv.split(), *extra]  # paths under pytest's tmp_path hold no spaces


def test_an_unknown_task_is_one_line_naming_the_tasks(tiny_neox_dir, tmp_path, capsys):
    from test_lm_eval_adapter import write_tiny_tasks

    from workbench import benchmarks

    tasks = write_tiny_tasks(tmp_path / "tasks")
    argv = _tiny_benchmarks(tiny_neox_dir, tasks, tmp_path / "run", "--tasks", "tiny_mc9")
    with pytest.raises(SystemExit) as exit_:
        benchmarks.main(argv)
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: unknown task 'tiny_mc9'; the local tasks: ")
    local = line.split("the local tasks: ")[1].split(";")[0].split(", ")
    assert {"tiny_mc1", "tiny_gen"} <= set(local)  # the tasks of the folder, by name
    assert "closest: " in line and "tiny_mc1" in line.split("closest: ")[1]
    assert not (tmp_path / "run").exists()  # refused before the run was made


def test_lm_eval_bars_only_when_asked_for(tiny_neox_dir, tmp_path, capsys):
    """lm-eval's bars (tokenizing, our scoring, its bootstrap) and the runner's: with --progress
    only; none under --no-progress or when stderr is not a terminal (capsys: it is not)."""
    from test_lm_eval_adapter import write_tiny_tasks

    from workbench import benchmarks

    tasks = write_tiny_tasks(tmp_path / "tasks")
    common = ["--tasks", "tiny_mc1", "--blocks", "1", "--limit", "2", "--bootstrap-iters", "10"]
    stderr = {}
    for flag in ("--progress", "--no-progress", None):
        out = tmp_path / f"run{flag}"  # a fresh run each: a resumed one would evaluate nothing
        benchmarks.main(_tiny_benchmarks(tiny_neox_dir, tasks, out, *common, *[flag] * bool(flag)))
        stderr[flag] = capsys.readouterr().err
    shown = stderr["--progress"]
    assert "Tokenizing inputs" in shown and "loglikelihood x2 configs" in shown, shown
    for flag in ("--no-progress", None):
        assert "it/s" not in stderr[flag] and "%|" not in stderr[flag], stderr[flag]
