"""What the paper's claims look like on the organism: per-block tables with 95% intervals.

From a member's stored runs (``workbench.reproduce``: the memorization table of the memorized
set and the benchmark table of its local tasks), ``block_table`` gives, for the unmodified model
and each short-circuited block, over the samples of the set the member itself reproduces:
exact match (Wilson interval), free-running token accuracy (normal interval of the mean), and
accuracy per task group (items pooled over the group's tasks, Wilson interval). ``paper_claims``
then tests, with stated thresholds, the paper's two claims:

* **late**: short-circuiting a late block (last third) lowers memorization (the block's exact
  match interval lies below the clean exact match) while accuracy stays near the clean model
  (mean group accuracy within ``near`` of the clean one, absolute);
* **early**: short-circuiting an early block (first third) collapses both (exact match at most
  half the clean one, and accuracy more than ``near`` below the clean model).

``python -m workbench.organism.findings --runs data/runs/organism`` prints both as Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.organism.evaluate import wilson
from workbench.organism.members import MAIN_MEMBER
from workbench.tables import block_index, primary_rows, reproduced_by_clean

NEAR = 0.05  # "accuracy near the clean model": within 5 points (absolute)


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = 1.959964 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0
    return mean, mean - half, mean + half


def block_table(mem: pd.DataFrame, bench: pd.DataFrame, own: bool = True) -> pd.DataFrame:
    """One row per intervention (clean = block -1) of one model, every figure with its interval.
    ``own``: the memorization figures over the samples the clean model itself reproduces (the
    shipped set is the main member's; another member memorized only part of it)."""
    if own:
        mem = reproduced_by_clean(mem)
    mem = mem.assign(block=block_index(mem)).dropna(subset=["block"])
    prim = primary_rows(bench)
    prim = prim.assign(block=block_index(prim)).dropna(subset=["block"])
    rows = []
    for block, g in mem.groupby("block"):
        em = g.exact_match.astype(float).to_numpy()
        lo, hi = wilson(int(em.sum()), len(em))
        acc, acc_lo, acc_hi = _mean_ci(g.token_accuracy.to_numpy())
        row = {
            "block": int(block),
            "n_samples": len(em),
            "exact_match": em.mean(),
            "exact_match_lo": lo,
            "exact_match_hi": hi,
            "token_accuracy": acc,
            "token_accuracy_lo": acc_lo,
            "token_accuracy_hi": acc_hi,
        }
        for group, t in prim[prim.block == block].groupby("group"):
            correct = round(float((t.value * t.n).sum()))
            n = int(t.n.sum())
            row[f"acc_{group}"] = correct / n
            row[f"acc_{group}_lo"], row[f"acc_{group}_hi"] = wilson(correct, n)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("block").reset_index(drop=True)
    groups = [c for c in table.columns if c.startswith("acc_") and c.count("_") == 1]
    table["acc_mean"] = table[groups].mean(axis=1)
    return table


def paper_claims(table: pd.DataFrame, near: float = NEAR) -> dict:
    """Per claim: which blocks it holds for, out of which, and the figures behind it."""
    clean = table[table.block == -1].iloc[0]
    blocks = table[table.block >= 0]
    n = len(blocks)
    third = max(1, n // 3)
    early, late = blocks.iloc[:third], blocks.iloc[n - third :]
    acc_drop = clean.acc_mean - blocks.acc_mean
    lowers = blocks.exact_match_hi < clean.exact_match
    keeps = acc_drop <= near
    collapses = (blocks.exact_match <= clean.exact_match / 2) & (acc_drop > near)
    late_ok = (lowers & keeps)[late.index]
    early_ok = collapses[early.index]
    return {
        "late_blocks": late.block.tolist(),
        "late_holds_for": late.block[late_ok].tolist(),
        "early_blocks": early.block.tolist(),
        "early_holds_for": early.block[early_ok].tolist(),
        "near": near,
        "blocks_lowering_memorization_keeping_accuracy": blocks.block[lowers & keeps].tolist(),
    }


T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}  # Student t quantiles by number of seeds


def seed_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per block, the mean over seeds (members of one shape) of exact match and mean accuracy,
    with a t interval over seeds (the seed-to-seed spread, not the sampling error), clipped to
    [0, 1] (both are rates)."""
    long = pd.concat([t.assign(member=m) for m, t in tables.items()], ignore_index=True)
    rows = []
    for block, g in long.groupby("block"):
        row = {"block": int(block), "n_seeds": len(g)}
        for col in ("exact_match", "acc_mean"):
            v = g[col].to_numpy(dtype=float)
            half = T_975.get(len(v), 1.96) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0
            row[col] = v.mean()
            row[f"{col}_lo"], row[f"{col}_hi"] = max(0, v.mean() - half), min(1, v.mean() + half)
        rows.append(row)
    return pd.DataFrame(rows)


def seed_markdown(table: pd.DataFrame, members: list[str]) -> str:
    head = ["block", "exact match (mean over seeds)", "mean accuracy (mean over seeds)"]
    lines = [f"**seeds: {', '.join(members)}**", "", "| " + " | ".join(head) + " |"]
    lines.append("|---|---|---|")
    for r in table.itertuples():
        lines.append(
            f"| {'none' if r.block == -1 else r.block} "
            f"| {r.exact_match:.3f} [{r.exact_match_lo:.3f}, {r.exact_match_hi:.3f}] "
            f"| {r.acc_mean:.3f} [{r.acc_mean_lo:.3f}, {r.acc_mean_hi:.3f}] |"
        )
    return "\n".join(lines)


def markdown(table: pd.DataFrame, model: str) -> str:
    groups = [c[4:] for c in table.columns if c.startswith("acc_") and c.count("_") == 1]
    groups = [g for g in groups if g != "mean"]
    head = ["block", "exact match", "token accuracy", *[f"acc {g}" for g in groups]]
    lines = [f"**{model}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [
            "none" if r.block == -1 else str(r.block),
            f"{r.exact_match:.3f} [{r.exact_match_lo:.3f}, {r.exact_match_hi:.3f}]",
            f"{r.token_accuracy:.3f} [{r.token_accuracy_lo:.3f}, {r.token_accuracy_hi:.3f}]",
        ]
        for g in groups:
            v, lo, hi = (
                getattr(r, f"acc_{g}"),
                getattr(r, f"acc_{g}_lo"),
                getattr(r, f"acc_{g}_hi"),
            )
            cells.append(f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("data/runs/organism"))
    args = parser.parse_args(argv)
    tables = load_tables(args.runs)
    for model, table in tables.items():
        print(markdown(table, model), "\n")
        print(paper_claims(table), "\n")
    seeds = [m for m in tables if m == MAIN_MEMBER or m.startswith(f"{MAIN_MEMBER}-seed")]
    if len(seeds) > 1:
        print(seed_markdown(seed_table({m: tables[m] for m in seeds}), seeds), "\n")
    return 0


def load_tables(runs: Path) -> dict[str, pd.DataFrame]:
    """``block_table`` of every member with both a memorization and a benchmark run."""
    tables = {}
    for mem_dir in sorted(runs.glob("memorization-*")):
        model = mem_dir.name.removeprefix("memorization-")
        bench_path = runs / f"benchmarks-{model}" / "benchmarks.parquet"
        if bench_path.is_file():
            mem = pd.read_parquet(mem_dir / "memorization.parquet")
            tables[model] = block_table(mem, pd.read_parquet(bench_path))
    return tables


if __name__ == "__main__":
    raise SystemExit(main())
