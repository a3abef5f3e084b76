"""Benchmarks under short-circuiting: the unmodified model and each block short-circuited, over
any lm-evaluation-harness task list, as a tidy table in a run directory.

    python -m workbench.benchmarks                       # the organism, its local tasks, all blocks
    python -m workbench.benchmarks --model pythia-160m --tasks lambada_openai arc_easy piqa \\
        --blocks all --block-sets 0-2 --batch-size 32 --limit 500 --out runs/bench-160m
    HF_HUB_OFFLINE=1 python -m workbench.benchmarks --tasks arc_easy,piqa  # see workbench.task_data

How the work is shared, and why the numbers are exactly lm-eval's. For each task (or task group)
asked for, lm-eval's own ``simple_evaluate`` runs once per intervention with one ``HookedLM``
whose ``sweep`` holds every pending intervention. Its requests are identical across
interventions (same documents, same fixed few-shot seed), so the first run scores each
loglikelihood request under *all* interventions at once: per batch, one clean pass keeping the
residual stream entering each intervened block, then each intervention from its lowest block on
(``workbench.passes``; exact, because short-circuiting block i changes nothing below it). The
later runs are served from that cache. lm-eval itself does the metrics, filters, aggregation and
standard errors in every run, so each row is what a plain ``lm_eval`` run with that intervention
reports. ``generate_until`` requests diverge after their first token and are decoded per
intervention.

Table ``benchmarks``: model, task, group, intervention, kind, blocks, metric, filter, value,
stderr, higher_is_better, n — one row per task × intervention × metric. Table ``summary``: per
intervention and group, the mean accuracy over the group's tasks and the mean relative drop
(clean − short-circuited) / clean. A run resumes per (task item, intervention).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.benchmarks")

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformer_lens import HookedTransformer

from workbench import cli, task_data
from workbench.commands import BenchmarkConfig
from workbench.interventions import CLEAN, ShortCircuit, interventions_from
from workbench.lm_eval_adapter import HookedLM
from workbench.lm_eval_tasks import (
    check_tasks,
    default_tasks,
    lm_eval_bars,
    local_task_dirs,
    result_rows,
    task_manager,
    without_environment_report,
)
from workbench.runner import Loader, Unit, group_identity, run_units, sweep_groups
from workbench.runs import Run
from workbench.tables import accuracy_and_drop, primary_rows

log = logging.getLogger(__name__)

TABLE, SUMMARY = "benchmarks", "summary"
COLUMNS = [
    "model",
    "task",
    "group",
    "intervention",
    "kind",
    "blocks",
    "metric",
    "filter",
    "value",
    "stderr",
    "higher_is_better",
    "n",
]


def interventions_for(cfg: BenchmarkConfig, n_layers: int) -> list[ShortCircuit]:
    """The clean model, each block alone, then each block set."""
    return interventions_from(cfg.blocks, n_layers, kind=cfg.kind, block_sets=cfg.block_sets)


def run_record(cfg: BenchmarkConfig, groups: Sequence[tuple[str, int | None]]) -> dict:
    """What a benchmark run records (and compares on reopening), for (model, checkpoint)s: the
    local task files' digest too (the organism's tasks and ``include_path``), so edited items
    do not resume, and that of the local copies of lm-eval's datasets when tasks read them
    (``workbench.task_data``). The digests are listed in folder order, without the folders'
    paths: a clone elsewhere identifies the same tasks the same way."""
    from workbench.runs import tree_digest

    tasks = [tree_digest(Path(d)) for d in local_task_dirs(cfg.include_path)]
    identity = {**group_identity(groups, None), "tasks_sha256": tasks}
    if cfg.tasks is not None and (copies := task_data.active_copies()) is not None:
        identity["task_data_sha256"] = copies.digest()  # lm-eval's tasks read the local copies
    record = {**cli.recorded(cfg), "identity": identity}
    if not cfg.models:
        record["model"] = str(groups[0][0])
    return record


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per intervention and group (and checkpoint, in a sweep over checkpoints): mean accuracy
    over tasks and mean relative drop vs clean (of the same checkpoint)."""
    if "checkpoint" in table:
        parts = [
            summarize(rows.drop(columns="checkpoint")).assign(checkpoint=step)
            for step, rows in table.groupby("checkpoint", sort=False)
        ]
        out = pd.concat(parts, ignore_index=True)
        return out[["model", "checkpoint", *(c for c in out if c not in ("model", "checkpoint"))]]
    prim = primary_rows(table, empty_ok=True)
    if prim.empty:
        return pd.DataFrame()
    out = accuracy_and_drop(prim, ["model", "intervention", "kind", "blocks", "group"])
    # clean first, then single blocks in order, then block sets
    order = [_blocks_key(b) for b in out.blocks]
    return out.iloc[sorted(range(len(out)), key=order.__getitem__)].reset_index(drop=True)


def _blocks_key(blocks: str) -> tuple[int, list[int]]:
    ids = [int(x) for x in blocks.split(",") if x]
    return len(ids), ids


@dataclass(frozen=True, eq=False)
class BenchmarkJob:
    """The evaluation of one unit (a task or task group under a list of interventions): one
    ``simple_evaluate`` per intervention over a ``HookedLM`` sharing its passes between them."""

    tasks: tuple[str, ...] | None = None
    include_path: tuple[str, ...] = ()
    limit: int | float | None = None
    num_fewshot: int | None = None
    bootstrap_iters: int = 100_000
    batch_size: int = 16
    groups: dict[str, list[str]] | None = None
    model_name: str | None = None  # the rows' model (default: the unit's)
    progress: bool = False  # lm-eval's own bars (the runner's bar counts the units)

    @classmethod
    def of(cls, cfg: BenchmarkConfig, model_name: str | None = None) -> BenchmarkJob:
        return cls(
            None if cfg.tasks is None else tuple(cfg.tasks),
            tuple(cfg.include_path),
            cfg.limit,
            cfg.num_fewshot,
            cfg.bootstrap_iters,
            cfg.batch_size,
            cfg.groups,
            model_name,
            bool(cfg.progress),
        )

    def task_manager(self):
        key = (self.tasks, self.include_path)
        if key not in _TASK_MANAGERS:  # indexing the tasks takes seconds: once per process
            _TASK_MANAGERS[key] = task_manager(self.tasks, self.include_path)
        return _TASK_MANAGERS[key]

    def __call__(self, model: HookedTransformer, unit: Unit) -> dict[str, pd.DataFrame]:
        from lm_eval import simple_evaluate

        tm = self.task_manager()
        lm = HookedLM(model, CLEAN, sweep=list(unit.interventions), batch_size=self.batch_size)
        rows = []
        for sc in unit.interventions:
            lm.intervention = sc
            with (
                without_environment_report(),
                lm_eval_bars(self.progress),
                task_data.lm_eval_datasets(self.num_fewshot),
            ):
                res = simple_evaluate(
                    model=lm,
                    tasks=[unit.task],
                    task_manager=tm,
                    limit=self.limit,
                    num_fewshot=self.num_fewshot,
                    bootstrap_iters=self.bootstrap_iters,
                    log_samples=False,
                )
            base = {"model": self.model_name or unit.model, **sc.columns()}
            rows += result_rows(res, base, self.groups)
        lm.clear_cache()
        df = pd.DataFrame(rows, columns=COLUMNS)
        if unit.checkpoint is not None:
            df.insert(1, "checkpoint", unit.checkpoint)
        return {TABLE: df}


_TASK_MANAGERS: dict[tuple, object] = {}


def run_benchmarks(
    cfg: BenchmarkConfig, model: HookedTransformer | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) the sweep; returns the tidy table and the per-group summary. One unit of
    ``workbench.runner`` per (model, checkpoint, task item), with every intervention."""
    from workbench.models import load_model
    from workbench.runs import check_out, default_out

    if model is None:
        groups = sweep_groups(cfg.model, cfg.models, cfg.checkpoints)
    else:
        groups = [(str(cfg.model or model.cfg.model_name), None)]
    first = groups[0][0]
    record = run_record(cfg, groups)
    out = cfg.out or default_out("benchmarks", first, record)
    check_out(out, record, overwrite=cfg.overwrite)
    job = BenchmarkJob.of(cfg)
    tm = job.task_manager()
    items = list(cfg.tasks or default_tasks(tm))
    check_tasks(tm, items, cfg.include_path)
    load = Loader(cfg.device, cfg.dtype)
    preloaded = {}
    if model is not None or cfg.executor == "serial":
        preloaded[(first, None)] = model or load_model(first, device=cfg.device, dtype=cfg.dtype)
    run = Run.open(out, record, overwrite=cfg.overwrite)
    sweeps = {}
    for name in dict.fromkeys(m for m, _ in groups):
        hooked = preloaded[(name, None)] if (name, None) in preloaded else load(name, None)
        sweeps[name] = tuple(interventions_for(cfg, hooked.cfg.n_layers))
        del hooked
    units = [Unit(m, c, sweeps[m], task=item) for m, c in groups for item in items]
    table = run_units(
        units,
        job,
        tables=[TABLE],
        run=run,
        sort_by={TABLE: ["task", "metric", "filter", "blocks"]},
        load=load,
        preloaded=preloaded,
        executor=cfg.executor,
        ray_address=cfg.ray_address,
        progress=bool(cfg.progress),
        desc="benchmarks",
    )[TABLE]
    summary = summarize(table)
    run.save(SUMMARY, "all", summary)
    run.finish(SUMMARY)
    return table, summary


def format_summary(summary: pd.DataFrame) -> str:
    """Compact per-block table: accuracy per group and relative drop (%) per group (per model
    and checkpoint, in a sweep over several)."""
    if summary.empty:
        return "(no accuracy-like metric in these tasks)"
    sweep = [c for c in ("model", "checkpoint") if c in summary and summary[c].nunique() > 1]
    wide = summary.pivot_table(
        index=[*sweep, "intervention"],
        columns="group",
        values=["accuracy", "relative_drop"],
        sort=False,
        dropna=False,
    )
    wide.columns = [f"{'acc' if v == 'accuracy' else 'drop'} {g}" for v, g in wide.columns]
    for col in wide.columns:
        if col.startswith("drop"):
            wide[col] = 100 * wide[col]
    return wide.to_string(float_format=lambda x: f"{x:.3f}")


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """``python -m workbench.benchmarks``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(BenchmarkConfig, execute, argv, "python -m workbench.benchmarks")


def execute(cfg: BenchmarkConfig) -> pd.DataFrame:
    """The command: run the sweep and print the per-block summary."""
    _, summary = run_benchmarks(cfg)
    print(format_summary(summary))  # the command's output
    return summary
