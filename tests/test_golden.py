"""The tables the commands write are bit-identical to those of the code before the command-line
layer (``tests/golden/``, written by ``tests/golden/make_golden.py`` at commit 750a033) and, for
benchmarks, before the sweep runner (at commit f58ed32)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))

from make_golden import BENCHMARK_TABLES, COMMANDS, run_benchmarks  # noqa: E402
from tiny_models import write_tiny_neox  # noqa: E402


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory) -> Path:
    return write_tiny_neox(tmp_path_factory.mktemp("golden") / "tiny-neox")


def _same(new: pd.DataFrame, old: pd.DataFrame) -> None:
    assert list(new.columns) == list(old.columns) and len(new) == len(old)
    new, old = new.assign(model="m"), old.assign(model="m")  # the checkpoint's path differs
    if "generated" in old:
        assert [None if g is None else list(g) for g in new.pop("generated")] == [
            None if g is None else list(g) for g in old.pop("generated")
        ]
    assert new.dtypes.equals(old.dtypes)
    floats = [c for c in old.columns if pd.api.types.is_float_dtype(old[c])]
    assert new.drop(columns=floats).equals(old.drop(columns=floats))  # exact
    for c in floats:  # NaN where NaN; the last bits of float32 BLAS sums depend on the CPU
        np.testing.assert_allclose(new[c], old[c], rtol=FLOAT_RTOL, atol=FLOAT_ATOL, err_msg=c)


FLOAT_RTOL, FLOAT_ATOL = 1e-6, 1e-5  # atol: differences of logits (margins) cancel
"""Bit-identical on the machine that wrote them; on another CPU the BLAS kernels sum in another
order (measured on an AMD EPYC: up to 2.4e-7 absolute on logit margins, 1e-7 relative
elsewhere), so floats are held to a few float32 ulps of the logits."""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_tables_are_bit_identical_to_the_golden_ones(name, golden_model, tmp_path, capsys):
    from workbench import bounds, memorization

    cmd = bounds if name == "bounds" else memorization
    argv = ["--model", str(golden_model), "--data", str(GOLDEN / "inputs.npy")]
    cmd.main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu", *COMMANDS[name].split()])
    tables = ["layers", "samples", "memorization"] if name == "bounds" else ["memorization"]
    for table in tables:
        new = pd.read_parquet(tmp_path / "run" / f"{table}.parquet")
        _same(new, pd.read_parquet(GOLDEN / f"{name}.{table}.parquet"))


def test_benchmark_tables_are_bit_identical_to_the_golden_ones(golden_model, tmp_path, capsys):
    out = run_benchmarks(golden_model, tmp_path)
    for table in BENCHMARK_TABLES:
        new = pd.read_parquet(out / f"{table}.parquet")
        _same(new, pd.read_parquet(GOLDEN / f"benchmarks.{table}.parquet"))


def test_the_golden_inputs_are_what_the_script_makes(golden_model):
    from make_golden import inputs

    from workbench.models import load_model

    stored = np.load(GOLDEN / "inputs.npy")
    assert np.array_equal(inputs(load_model(golden_model, device="cpu")), stored)
