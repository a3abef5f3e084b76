"""Beyond both papers: the memorization drop per short-circuited block, split by taxonomy class.

Attention short-circuiting (Menta et al. 2025) of block ``i`` makes its attention the identity.
Joining the memorization engine's per-sample verdicts (``workbench.memorization.sweep``: one row
per intervention × sample with ``exact_match`` and ``token_accuracy``) with the taxonomy labels
asks: does short-circuiting late blocks remove *recall* (Dentan et al. 2025) or *recitation*
(Prashanth et al. 2024) while keeping *guess* / *reconstruct*?

The verdicts are the engine's, never recomputed here: the clean model's ``exact_match`` also
defines which samples are memorized (the labels' input), so the clean exact match of a memorized
class is 1 and its drop under block ``i`` is the fraction of the class no longer extractable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.interventions import CLEAN, ShortCircuit
from workbench.taxonomy.labels import TAXONOMIES

CLEAN_LABEL = CLEAN.label


def clean_verdicts(memorization: pd.DataFrame, n_samples: int | None = None) -> np.ndarray:
    """The clean model's ``exact_match`` per sample (row order = sample index)."""
    clean = memorization[memorization["intervention"] == CLEAN_LABEL]
    if clean.empty:
        raise ValueError("the memorization table has no clean rows (intervention == 'none')")
    clean = clean.drop_duplicates("sample").set_index("sample")["exact_match"]
    n = int(clean.index.max()) + 1 if n_samples is None else n_samples
    missing = sorted(set(range(n)) - set(clean.index.tolist()))
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise ValueError(f"no clean verdict for samples {missing[:5]}{more}")
    return clean.reindex(range(n)).to_numpy(dtype=bool)


def _block(label: str) -> float:
    """The single whole block an intervention label names (NaN: clean, block sets, head subsets)."""
    block = ShortCircuit.from_label(label).single_block
    return np.nan if block is None else float(block)


def class_drop(
    memorization: pd.DataFrame,
    labels: pd.DataFrame,
    taxonomies: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Exact match and its drop per intervention × taxonomy × class (a tidy table), with
    percentile-bootstrap 95% intervals of the drops (``n_boot`` resamples of the class's samples,
    paired: each resampled sample brings its clean and its intervened verdict).

    Args:
        memorization: the engine's table (columns ``intervention``, ``blocks``, ``sample``,
            ``exact_match``, and ``token_accuracy`` when decoded).
        labels: :func:`workbench.taxonomy.labels.label_samples`' table (``sample`` + one column
            per taxonomy).

    Columns: taxonomy, class, intervention, blocks, block (the single block, NaN otherwise), n,
    exact_match, clean_exact_match, drop (clean − intervened), relative_drop (drop / clean),
    token_accuracy, token_accuracy_drop, and ``drop_low`` / ``drop_high`` /
    ``token_accuracy_drop_low`` / ``token_accuracy_drop_high``.
    """
    taxonomies = [t for t in (taxonomies or TAXONOMIES) if t in labels.columns]
    has_acc = "token_accuracy" in memorization.columns
    cols = ["intervention", "blocks", "sample", "exact_match"] + (["token_accuracy"] * has_acc)
    mem = memorization[cols].copy()
    mem["exact_match"] = mem["exact_match"].astype(float)
    if not has_acc:
        mem["token_accuracy"] = np.nan
    frames = []
    for taxonomy in taxonomies:
        joined = mem.merge(labels[["sample", taxonomy]], on="sample", how="inner")
        joined = joined.rename(columns={taxonomy: "class"}).dropna(subset=["class"])
        agg = (
            joined.groupby(["intervention", "blocks", "class"], sort=False)
            .agg(
                n=("sample", "size"),
                exact_match=("exact_match", "mean"),
                token_accuracy=("token_accuracy", "mean"),
            )
            .reset_index()
        )
        clean = agg[agg["intervention"] == CLEAN_LABEL].set_index("class")
        agg["clean_exact_match"] = agg["class"].map(clean["exact_match"])
        agg["clean_token_accuracy"] = agg["class"].map(clean["token_accuracy"])
        agg["drop"] = agg["clean_exact_match"] - agg["exact_match"]
        agg["relative_drop"] = np.where(
            agg["clean_exact_match"] > 0, agg["drop"] / agg["clean_exact_match"], np.nan
        )
        agg["token_accuracy_drop"] = agg["clean_token_accuracy"] - agg["token_accuracy"]
        agg = agg.merge(_bootstrap(joined, n_boot, seed), on=["intervention", "class"])
        agg["block"] = agg["intervention"].astype(str).map(_block)  # a single whole block only
        agg.insert(0, "taxonomy", taxonomy)
        order = {c: i for i, c in enumerate(TAXONOMIES.get(taxonomy, ()))}
        agg["_order"] = agg["class"].map(order)
        frames.append(agg.sort_values(["_order", "block"], kind="stable").drop(columns="_order"))
    columns = [
        "taxonomy",
        "class",
        "intervention",
        "blocks",
        "block",
        "n",
        "exact_match",
        "clean_exact_match",
        "drop",
        "relative_drop",
        "token_accuracy",
        "token_accuracy_drop",
        "drop_low",
        "drop_high",
        "token_accuracy_drop_low",
        "token_accuracy_drop_high",
    ]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _bootstrap(joined: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per intervention × class: the 2.5 and 97.5 percentiles of the mean paired drop over
    bootstrap resamples of the samples."""
    clean = joined[joined["intervention"] == CLEAN_LABEL].drop_duplicates("sample")
    clean = clean.set_index("sample")[["exact_match", "token_accuracy"]]
    rng = np.random.default_rng(seed)
    rows = []
    for (intervention, cls), g in joined.groupby(["intervention", "class"], sort=False):
        row = {"intervention": intervention, "class": cls}
        base = clean.loc[g["sample"]]
        idx = rng.integers(0, len(g), (n_boot, len(g)))
        for col, name in (("exact_match", "drop"), ("token_accuracy", "token_accuracy_drop")):
            d = base[col].to_numpy(dtype=float) - g[col].to_numpy(dtype=float)
            means = d[idx].mean(1)
            low, high = np.percentile(means, [2.5, 97.5]) if np.isfinite(d).all() else (np.nan,) * 2
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


def drop_matrix(table: pd.DataFrame, taxonomy: str, value: str = "drop") -> pd.DataFrame:
    """Wide view of :func:`class_drop` for one taxonomy: classes × single blocks."""
    t = table[(table["taxonomy"] == taxonomy) & table["block"].notna()]
    wide = t.pivot_table(index="class", columns="block", values=value, aggfunc="first")
    wide.columns = [f"block {int(b)}" for b in wide.columns]
    order = [c for c in TAXONOMIES.get(taxonomy, ()) if c in wide.index]
    return wide.loc[order + [c for c in wide.index if c not in order]]


def drop_figure(table: pd.DataFrame, value: str = "drop"):
    """Plotly figure: ``value`` per short-circuited block, one line per class, one panel per
    taxonomy."""
    import plotly.express as px

    t = table[table["block"].notna()].copy()
    t["block"] = t["block"].astype(int)
    fig = px.line(
        t,
        x="block",
        y=value,
        color="class",
        facet_col="taxonomy",
        markers=True,
        error_y=t[f"{value}_high"] - t[value] if f"{value}_high" in t else None,
        error_y_minus=t[value] - t[f"{value}_low"] if f"{value}_low" in t else None,
        hover_data=["n", "exact_match", "clean_exact_match", "token_accuracy"],
        title="Memorization drop when one block's attention is short-circuited, by class "
        "(bootstrap 95% intervals)",
    )
    fig.update_yaxes(title_text=f"exact-match {value}" if value == "drop" else value)
    fig.update_xaxes(dtick=1, title_text="short-circuited block")
    return fig
