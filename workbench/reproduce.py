"""Every figure from nothing on the embedded organism: the runs, then the figures.

    python -m workbench.reproduce --out runs/organism --figures figures/
    python -m workbench.reproduce --quick --out /tmp/quick --figures /tmp/quick-figures

For each organism member (``registry.EMBEDDED_MODELS``, suite order), one run directory per
evaluation under ``--out``:

- ``memorization-<member>``: every sample of the organism's memorized set
  (``registry.DEFAULT_MEMORIZED_SET``), the unmodified model and each block short-circuited;
- ``benchmarks-<member>``: the organism's local lm-eval tasks (language and reasoning groups),
  every item of each (``--task-limit N`` for the first N), same interventions;
- ``bounds-<default member>``: measured / certified / weight-only ‖Δ_l‖ for the default member.

Each evaluation's units go through ``workbench.runner``: ``--executor ray`` runs them as Ray
tasks (``--ray-address`` joins a cluster that sees ``--out``). Then ``workbench.figures`` writes
figures 1–5 (HTML + PNG + SVG) to ``--figures``. Every run is
resumable: rerunning the command skips finished units, so an interrupted reproduction continues
and a finished one only redraws the figures. ``--quick`` evaluates a subset (a few samples and
task items per member) for smoke tests and the notebooks; its numbers are not the figures'.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.reproduce")

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from workbench import cli
from workbench.commands import ReproduceConfig
from workbench.errors import UserError

log = logging.getLogger(__name__)


def _subset(tokens, n: int | None):
    """An evenly spaced subset of rows (every kind and duplication count stays represented)."""
    import numpy as np

    if n is None or n >= len(tokens):
        return tokens, None
    rows = np.linspace(0, len(tokens) - 1, n).round().astype(int)
    return tokens[rows], rows


def run_memorization(model, name: str, cfg: ReproduceConfig, out: Path):
    """The per-sample memorization table of every single-block short-circuit (resumable)."""
    from workbench.data import load_samples
    from workbench.interventions import CLEAN, single_block_sweep
    from workbench.memorization import TABLE, sweep
    from workbench.organism import registry
    from workbench.runs import Run, identity

    samples = load_samples(
        registry.DEFAULT_MEMORIZED_SET, prefix_len=32, vocab_size=model.cfg.d_vocab
    )
    tokens, rows = _subset(samples.tokens, cfg.max_samples)
    run_cfg = {
        "identity": identity(name, registry.DEFAULT_MEMORIZED_SET),
        "command": "reproduce.memorization",
        "model": name,
        "data": samples.name,
        "max_samples": cfg.max_samples,
        "prefix_len": 32,
        "blocks": "all",
        "batch_size": cfg.batch_size,  # parts are keyed by batch: resume only with the same one
    }
    run = Run.open(out, run_cfg, overwrite=cfg.overwrite)  # compares the configs first
    if (out / f"{TABLE}.parquet").exists():
        return
    interventions = [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]
    # resumable per batch (units of workbench.runner); on a subset, sample = row of the shipped
    # set, so the ground truth still joins
    sweep(
        model,
        tokens,
        interventions,
        run=run,
        sample_ids=rows,
        batch_size=cfg.batch_size,
        progress=False,
        model_name=name,
        dataset_name=samples.name,
        executor=cfg.executor,
        ray_address=cfg.ray_address,
    )


def run_benchmarks(model, name: str, cfg: ReproduceConfig, out: Path) -> None:
    """The organism's local benchmarks under every single-block short-circuit (resumable)."""
    from workbench.benchmarks import BenchmarkConfig, run_record
    from workbench.benchmarks import run_benchmarks as bench
    from workbench.runs import check_out

    bcfg = BenchmarkConfig(
        model=name,
        blocks="all",
        limit=cfg.task_limit,
        bootstrap_iters=0,
        batch_size=cfg.batch_size,
        out=str(out),
        overwrite=cfg.overwrite,
        executor=cfg.executor,
        ray_address=cfg.ray_address,
    )
    record = run_record(bcfg, [(name, None)])
    check_out(out, record, overwrite=cfg.overwrite)  # before trusting a table
    if not cfg.overwrite and (out / "benchmarks.parquet").exists():
        return
    bench(bcfg, model=model)


def run_bounds(model, name: str, cfg: ReproduceConfig, out: Path) -> None:
    """The layers table of ``workbench.bounds`` for every block (resumable)."""
    from workbench.bounds import compute_bounds
    from workbench.data import load_samples
    from workbench.organism import registry
    from workbench.runs import Run, identity

    samples = load_samples(
        registry.DEFAULT_MEMORIZED_SET, prefix_len=32, vocab_size=model.cfg.d_vocab
    )
    tokens, _ = _subset(samples.tokens, cfg.bounds_samples)
    run = Run.open(
        out,
        {
            "identity": identity(name, registry.DEFAULT_MEMORIZED_SET),
            "command": "reproduce.bounds",
            "model": name,
            "data": samples.name,
            "max_samples": cfg.bounds_samples,
            "blocks": "all",
            "batch_size": 16,
        },
        overwrite=cfg.overwrite,
    )
    if (out / "layers.parquet").exists():
        return
    compute_bounds(
        model,
        tokens,
        range(model.cfg.n_layers),
        batch_size=16,
        run=run,
        model_name=name,
        decode=False,
        jacobian_samples=0,
        executor=cfg.executor,
        ray_address=cfg.ray_address,
    )


def reproduce(cfg: ReproduceConfig) -> dict:
    """Run (or resume) every evaluation, then write the figures; returns the timings (seconds)
    and, per figure, the written files or the reason it was skipped."""

    from workbench.figures.cli import generate
    from workbench.models import load_model
    from workbench.organism import registry

    members = cfg.members or list(registry.EMBEDDED_MODELS)
    dirs = {m: Path(registry.EMBEDDED_MODELS.get(m, m)) for m in members}
    missing = [m for m, d in dirs.items() if not (d / "config.json").exists()]
    if missing:
        raise UserError(
            f"organism checkpoints not found for {missing} under {registry.DATA_DIR}; "
            "train them with `python -m workbench.organism.train --all`."
        )
    bounds_model = cfg.bounds_model or registry.DEFAULT_MODEL
    out = Path(cfg.out)
    timings: dict[str, float] = {}
    for name in members:
        model = load_model(name)
        steps = [("memorization", run_memorization), ("benchmarks", run_benchmarks)]
        if name == bounds_model:
            steps.append(("bounds", run_bounds))
        for step, fn in steps:
            t0 = time.perf_counter()
            log.info("%s: %s", name, step)
            fn(model, name, cfg, out / f"{step}-{name}")
            timings[f"{step}-{name}"] = round(time.perf_counter() - t0, 1)
            log.info("%s: %s done in %.1f s", name, step, timings[f"{step}-{name}"])
        del model
    t0 = time.perf_counter()
    figures = generate(
        [out], cfg.figures, models=members, model=registry.DEFAULT_MODEL, formats=cfg.formats
    )
    timings["figures"] = round(time.perf_counter() - t0, 1)
    report = {
        "config": asdict(cfg),
        "timings": timings,
        "figures": {
            k: v if isinstance(v, str) else [str(p) for p in v] for k, v in figures.items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduce.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m workbench.reproduce``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(ReproduceConfig, execute, argv, "python -m workbench.reproduce")


def execute(cfg: ReproduceConfig) -> dict:
    """The command: prints the timings and the figures written."""
    from workbench.runs import check_writable

    check_writable(cfg.out)
    check_writable(cfg.figures)
    t0 = time.perf_counter()
    report = reproduce(cfg)
    for name, res in report["figures"].items():
        print(f"{name}: {res if isinstance(res, str) else ', '.join(res)}")
    print(f"timings (s): {json.dumps(report['timings'])}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    return report
