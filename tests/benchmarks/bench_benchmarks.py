"""Benchmark: the per-block short-circuit sweep through lm-eval, shared passes vs the naive loop.

Naive loop (the original code's way): for each configuration (clean + each block alone), a fresh
lm-eval ``simple_evaluate`` with a fresh ``HookedLM`` for that intervention at batch size 1.
Shared: ``workbench.benchmarks.run_benchmarks`` (one clean pass per batch keeps the residual
stream; each block's intervention runs from that block on; lm-eval serves every configuration
from that cache). Both run in this process, on the same model, tasks and documents; the script
checks that they give the same numbers, then prints both times and the ratio.

    python tests/benchmarks/bench_benchmarks.py                  # organism, its local tasks
    python tests/benchmarks/bench_benchmarks.py --limit 50 --batch-size 32 --threads 1

Without the organism shipped it falls back to a random 6-block GPT-NeoX on generated tasks, and
says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch


def fallback(tmp: Path):
    """A random 6-block GPT-NeoX (d_model 128, context 256) and the tests' generated tasks."""
    from test_lm_eval_adapter import write_tiny_tasks
    from tiny_models import write_tiny

    path = write_tiny(
        tmp / "neox6",
        "neox",
        hidden_size=128,
        num_hidden_layers=6,
        intermediate_size=512,
        max_position_embeddings=256,
    )
    tasks_dir = write_tiny_tasks(tmp / "tasks", n_docs=60)
    return str(path), ["tiny_language", "tiny_reasoning"], [str(tasks_dir)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--limit", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blocks", default="all")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)

    import lm_eval

    from workbench import benchmarks as bm
    from workbench import lm_eval_tasks as lt
    from workbench.interventions import CLEAN, parse_blocks, single_block_sweep
    from workbench.lm_eval_adapter import HookedLM
    from workbench.models import load_model
    from workbench.organism import registry

    tmp = Path(tempfile.mkdtemp(prefix="bench-benchmarks-"))
    tasks_dir = getattr(registry, "TASKS_DIR", None)
    organism = bool(
        tasks_dir
        and Path(tasks_dir).is_dir()
        and registry.DEFAULT_MODEL
        and registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL].is_dir()
    )
    include: list[str] = []
    if a.model or organism:
        name, tasks = a.model or registry.DEFAULT_MODEL, a.tasks
        what = f"model {name}"
    else:
        name, tasks, include = fallback(tmp)
        what = "FALLBACK: random 6-block GPT-NeoX on generated tasks (organism not shipped)"
    limit = None if a.limit is None else (a.limit if a.limit < 1 else int(a.limit))
    model = load_model(name, device="cpu")
    cfg = bm.BenchmarkConfig(
        model=name,
        tasks=tasks,
        blocks=a.blocks,
        batch_size=a.batch_size,
        limit=limit,
        include_path=include,
        device="cpu",
        out=str(tmp / "run"),
    )
    tm = lt.task_manager(tasks, include)
    tasks = tasks or lt.default_tasks(tm)
    sweep = [CLEAN, *single_block_sweep(parse_blocks(a.blocks, model.cfg.n_layers))]
    print(
        f"{what}; tasks {tasks}; {len(sweep)} configurations; limit {limit}; {a.threads} thread(s)"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    naive = []
    for sc in sweep:
        res = lm_eval.simple_evaluate(
            model=HookedLM(model, sc, batch_size=1),
            tasks=tasks,
            task_manager=tm,
            limit=limit,
            log_samples=False,
        )
        base = {"intervention": sc.label}
        naive += lt.result_rows(res, base, None)
    t_naive, c_naive = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    table, summary = bm.run_benchmarks(cfg, model=model)
    t_shared, c_shared = time.perf_counter() - t0, time.process_time() - c0

    keys = ["intervention", "task", "metric", "filter"]
    merged = table.merge(pd.DataFrame(naive), on=keys, suffixes=("", "_naive"))
    assert len(merged) == len(table) == len(naive), "the two runs disagree on rows"
    gap = (merged.value - merged.value_naive).abs() / merged.value_naive.abs().clip(lower=1e-12)
    print(f"max relative difference shared vs naive: {gap.max():.2e}")
    accs = merged[merged.metric.isin(["acc", "acc_norm", "exact_match"])]
    assert (accs.value == accs.value_naive).all(), "accuracies differ"

    print("\n" + bm.format_summary(summary))
    # CPU time is the fair measure on a shared machine: wall time also counts other users' load
    print("\n                                       wall (s)   CPU (s)")
    print(f"naive loop (lm-eval run per config, bs 1) {t_naive:8.1f}  {c_naive:8.1f}")
    shared = f"shared passes (bs {a.batch_size})"
    print(f"{shared:<42s}{t_shared:8.1f}  {c_shared:8.1f}")
    print(f"ratio naive / shared: wall {t_naive / t_shared:.1f}x, CPU {c_naive / c_shared:.1f}x")


if __name__ == "__main__":
    main()
