"""From tidy run tables to small per-intervention frames: what the figures draw
(``workbench.figures``) and what the commands summarize (``workbench.benchmarks``,
``workbench.organism.findings``). Computation only: no plotting here.

Conventions shared with the runs (``workbench.memorization``, ``workbench.benchmarks``,
``workbench.bounds``): ``intervention`` is a ``ShortCircuit`` label (``"none"`` for the unmodified
model, ``"identity:3"`` for block 3), ``blocks`` is the comma-joined block list (``""`` when
clean) and ``kind`` is ``"none"`` for the clean model. The figures are per *single* block: rows for
block sets (``"0,2"``) or other kinds than the one asked for are left out here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.interventions import CLEAN, ShortCircuit

log = logging.getLogger(__name__)

CLEAN_LABEL = CLEAN.label
MEMORIZATION_METRICS = ("exact_match", "token_accuracy", "completion_entropy")
# The metric a task's accuracy is read from, first present wins (filter "none" preferred); the
# benchmark run's summary (``workbench.benchmarks.summarize``) reads it the same way.
PRIMARY_METRICS = ("acc", "exact_match", "acc_norm", "f1", "mcc", "em")


class MissingColumns(ValueError):
    """A table lacks a column a figure needs."""


def require(df: pd.DataFrame, columns: tuple[str, ...] | list[str], table: str) -> None:
    """Raise ``MissingColumns`` naming the table and what is missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumns(
            f"the {table} table has no column(s) {missing}; it has {list(df.columns)}"
        )


def block_index(df: pd.DataFrame, kind: str = "identity") -> pd.Series:
    """Per row: the short-circuited block (int), -1 for the clean model, NaN for anything else
    (block sets, head subsets, other kinds)."""
    require(df, ["intervention"], "run")
    labels = df["intervention"].astype(str)
    return labels.map({label: _block_of(label, kind) for label in labels.unique()}).astype(
        "float64"
    )


def _block_of(label: str, kind: str) -> float:
    """-1 for the clean model, the block of a single whole block of ``kind``, NaN otherwise."""
    try:
        sc = ShortCircuit.from_label(label)
    except ValueError:
        return np.nan
    if sc.is_clean:
        return -1.0
    return np.nan if sc.kind != kind or sc.single_block is None else float(sc.single_block)


def reproduced_by_clean(mem: pd.DataFrame) -> pd.DataFrame:
    """The rows of the samples each model reproduces unmodified (clean exact match), per model:
    a set memorized by one model is only partly memorized by another."""
    require(mem, ["intervention", "sample", "exact_match"], "memorization")
    keys = ["model", "sample"] if "model" in mem.columns else ["sample"]
    clean = mem[(mem["intervention"].astype(str) == "none") & mem["exact_match"].astype(bool)]
    return mem.merge(clean[keys].drop_duplicates(), on=keys, how="inner")


def memorization_means(mem: pd.DataFrame, kind: str = "identity") -> pd.DataFrame:
    """Per model and intervention: mean exact match, token accuracy, completion entropy and the
    number of samples; with ``block`` (-1 = clean)."""
    require(mem, ["model", "intervention", *MEMORIZATION_METRICS], "memorization")
    df = mem.assign(block=block_index(mem, kind)).dropna(subset=["block"])
    df = df.astype({"exact_match": "float64"})
    out = df.groupby(["model", "intervention", "block"], sort=False).agg(
        exact_match=("exact_match", "mean"),
        token_accuracy=("token_accuracy", "mean"),
        completion_entropy=("completion_entropy", "mean"),
        n=("exact_match", "size"),
    )
    return out.reset_index().astype({"block": int}).sort_values(["model", "block"], kind="stable")


def primary_rows(bench: pd.DataFrame, *, empty_ok: bool = False) -> pd.DataFrame:
    """One row per (model, task, intervention): the task's accuracy-like metric, the first of
    ``PRIMARY_METRICS`` it reports (filter ``"none"`` preferred). Tasks with none are left out;
    when no task has one: an empty frame if ``empty_ok``, else ``MissingColumns``."""
    require(bench, ["model", "task", "intervention", "metric", "value"], "benchmarks")
    picked = []
    for key, rows in bench.groupby(["model", "task"], sort=False):
        for metric in PRIMARY_METRICS:
            pick = rows[rows["metric"] == metric]
            if pick.empty:
                continue
            if "filter" in pick.columns:
                filt = "none" if (pick["filter"] == "none").any() else pick["filter"].iloc[0]
                pick = pick[pick["filter"] == filt]
            picked.append(pick)
            break
        else:
            log.info("task %s has no accuracy-like metric; left out", key)
    if picked:
        return pd.concat(picked, ignore_index=True)
    if empty_ok:
        return bench.iloc[:0]
    raise MissingColumns(f"no task in the benchmarks table reports any of {PRIMARY_METRICS}")


def accuracy_and_drop(prim: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per ``keys``, over the tasks of ``primary_rows``: mean accuracy, mean relative drop
    ``(clean − value) / clean`` (clean: the same model and task unmodified, NaN without it) and
    the number of tasks."""
    clean = prim[prim["intervention"] == CLEAN_LABEL].set_index(["model", "task"])["value"]
    if clean.empty:
        log.warning("the benchmarks table has no clean ('none') rows: relative drops are NaN")
    key = pd.MultiIndex.from_frame(prim[["model", "task"]])
    df = prim.assign(clean=clean.reindex(key).to_numpy())
    df = df.assign(relative_drop=(df["clean"] - df["value"]) / df["clean"])
    out = df.groupby(list(keys), sort=False).agg(
        accuracy=("value", "mean"),
        relative_drop=("relative_drop", "mean"),
        tasks=("task", "nunique"),
    )
    return out.reset_index()


def benchmark_accuracy(
    bench: pd.DataFrame, kind: str = "identity", by: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Per model and intervention (and ``by``, e.g. ``("group",)``): mean accuracy over tasks and
    mean relative drop ``(clean − short-circuited) / clean`` over tasks; with ``block``."""
    df = primary_rows(bench)
    df = df.assign(block=block_index(df, kind)).dropna(subset=["block"])
    out = accuracy_and_drop(df, ["model", "intervention", "block", *by])
    return out.astype({"block": int}).sort_values(["model", "block"], kind="stable")


def joined(mem: pd.DataFrame, bench: pd.DataFrame, kind: str = "identity") -> pd.DataFrame:
    """Memorization means next to mean benchmark accuracy, per model and short-circuited block."""
    m = memorization_means(mem, kind)
    b = benchmark_accuracy(bench, kind)[["model", "block", "accuracy"]]
    out = m.merge(b, on=["model", "block"], how="inner")
    if out.empty:
        raise MissingColumns(
            "memorization and benchmarks share no (model, block): models "
            f"{sorted(m['model'].unique())} vs {sorted(b['model'].unique())}"
        )
    return out


def with_ground_truth(mem: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Memorization rows joined with the per-sample ground truth on the sample index.

    The memorization table's ``sample`` is the row of the evaluated token array; the ground-truth
    table gives that row as ``row`` (or ``sample``). Ground-truth columns that clash with the
    memorization table get a ``sample_`` prefix (``kind`` → ``sample_kind``).
    """
    require(mem, ["sample"], "memorization")
    key = "row" if "row" in truth.columns else "sample"
    require(truth, [key, "dup_count"], "ground-truth")
    truth = truth.rename(columns={key: "sample"})
    clash = {c: f"sample_{c}" for c in truth.columns if c != "sample" and c in mem.columns}
    return mem.merge(truth.rename(columns=clash), on="sample", how="inner", validate="m:1")
