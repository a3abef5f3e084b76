"""Write the golden tables of ``tests/test_golden.py``: run once, with the code of commit 750a033
(before the command-line layer and the run identity changed), to pin what the commands write.

    PYTHONPATH=. python tests/golden/make_golden.py
    PYTHONPATH=. python tests/golden/make_golden.py benchmarks   # at f58ed32: benchmarks only

Inputs are rebuilt by the test itself: the tiny GPT-NeoX of ``tests/tiny_models.py`` (seed 0) and
``inputs.npy`` stored here (12 rows of 64 ids: the model's own greedy continuations, some
perturbed, some random).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tiny_models import write_tiny_neox  # noqa: E402

# the commands of each golden table, after --model DIR --data inputs.npy --out RUN
COMMANDS = {
    "memorization": "--prefix-len 32 --batch-size 5 --blocks all --no-progress",
    "memorization_zero": "--prefix-len 32 --batch-size 4 --blocks 0,2 --kind zero --no-decode "
    "--no-progress",
    "bounds": "--prefix-len 32 --batch-size 5 --jacobian-samples 2",
}
# benchmarks (written at commit f58ed32, before the sweep runner), after --model DIR
# --include-path TASKS --out RUN; the tasks are those of tests/test_lm_eval_adapter.py
BENCHMARKS = (
    "--tasks tiny_language tiny_reasoning --limit 4 --batch-size 3 --blocks all --block-sets 0-1 "
    "--bootstrap-iters 10 --device cpu --no-progress"
)
BENCHMARK_TABLES = ("benchmarks", "summary")


def inputs(model) -> np.ndarray:
    import torch

    from workbench.decode import naive_greedy

    g = torch.Generator().manual_seed(13)
    prefix = torch.randint(1, model.cfg.d_vocab, (12, 32), generator=g)
    tokens = torch.cat([prefix, naive_greedy(model, prefix, 32)], dim=1)
    for row, j in [(3, 0), (4, 5), (5, 31), (6, 16)]:
        tokens[row, 32 + j] = (tokens[row, 32 + j] + 1) % model.cfg.d_vocab
    tokens[9:, 32:] = torch.randint(1, model.cfg.d_vocab, (3, 32), generator=g)
    return tokens.numpy()


def run_benchmarks(model_dir: Path, tmp: Path, *extra: str) -> Path:
    """The golden benchmark command into ``tmp / "benchmarks"``; returns the run directory."""
    from test_lm_eval_adapter import write_tiny_tasks

    from workbench import benchmarks

    tasks, out = write_tiny_tasks(tmp / "tasks"), tmp / "benchmarks"
    argv = ["--model", str(model_dir), "--include-path", str(tasks), "--out", str(out)]
    benchmarks.main([*argv, *BENCHMARKS.split(), *extra])
    return out


def main(only: str | None = None) -> None:
    from workbench import bounds, memorization
    from workbench.models import load_model

    tmp = Path(tempfile.mkdtemp())
    model_dir = write_tiny_neox(tmp / "tiny-neox")
    if only == "benchmarks":
        out = run_benchmarks(model_dir, tmp)
        for table in BENCHMARK_TABLES:
            shutil.copy(out / f"{table}.parquet", HERE / f"benchmarks.{table}.parquet")
        shutil.rmtree(tmp)
        return
    np.save(HERE / "inputs.npy", inputs(load_model(model_dir, device="cpu")))
    for name, extra in COMMANDS.items():
        cmd = bounds if name == "bounds" else memorization
        out = tmp / name
        argv = ["--model", str(model_dir), "--data", str(HERE / "inputs.npy"), "--out", str(out)]
        cmd.main([*argv, "--device", "cpu", *extra.split()])
        tables = ["layers", "samples", "memorization"] if name == "bounds" else ["memorization"]
        for table in tables:
            shutil.copy(out / f"{table}.parquet", HERE / f"{name}.{table}.parquet")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main(*sys.argv[1:])  # `benchmarks`: the benchmark tables only
