"""The bounds command's report of a run: the per-block summary and per-block gains as text, and
the figure (measured vs certified ‖Δ_l‖ across depth, final ‖Δ_L‖ per block), per model."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pandas as pd

from workbench.bounds import summary

log = logging.getLogger("workbench.bounds")


def write(tables: dict[str, pd.DataFrame], out: Path, what: str) -> None:
    """``summary.csv`` and the figure in ``out`` (one per model in a sweep over models, the
    summary with a ``model`` column then), and the summary and gains on stdout."""
    from workbench.export import StaticExportError, save

    models = list(dict.fromkeys(tables["layers"]["model"])) if "model" in tables["layers"] else []
    per_model = {m: {k: _of(df, m) for k, df in tables.items()} for m in models} or {"": tables}
    summaries = {m: summary(t) for m, t in per_model.items()}
    if len(per_model) == 1:
        next(iter(summaries.values())).to_csv(out / "summary.csv")
    else:
        pd.concat(summaries, names=["model"]).to_csv(out / "summary.csv")
    for i, (model, t) in enumerate(per_model.items()):
        name = "bounds" if len(per_model) == 1 else f"bounds-{i}-{Path(model).name}"
        fig = figure(t)
        save(fig, out, name, formats=("html",))  # plotly.js once per folder, offline
        try:  # static copy when kaleido can render; the HTML is the figure of record
            save(fig, out, name, formats=("png",))
        except StaticExportError as err:
            log.info("no static PNG (%s); the figure is in %s.html", err, name)
        sys.stdout.write(f"{model} on {what} → {out}\n")
        print_summary(summaries[model], t)


def _of(df: pd.DataFrame, model: str) -> pd.DataFrame:
    return df[df["model"] == model] if "model" in df else df


def print_summary(table: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    """The summary, then the median gain of each block in the three tiers and the Jacobian's."""
    fmt = {c: (lambda x: f"{x:.3g}") for c in table.columns}
    fmt.update(
        exact_match=lambda x: f"{x:.3f}",
        token_accuracy=lambda x: f"{x:.3f}",
        violations=lambda x: "" if math.isnan(x) else f"{int(x)}",
    )
    sys.stdout.write(table.to_string(formatters=fmt, na_rep="") + "\n")
    jac = tables["jacobian"]
    if not jac.empty:
        gains = (
            tables["layers"]
            .groupby("layer")
            .agg(
                measured_gain=("measured_gain", "median"),
                certified_gain=("certified_gain", "median"),
                weight_gain=("weight_gain", "first"),
            )
        )
        gains.index = gains.index - 1  # gain of block l maps x_l to x_{l+1}
        per_layer = gains.join(jac.groupby("layer").jacobian_norm.median(), how="outer")
        sys.stdout.write(
            "per block gain (median): measured, certified, weight K_l, Jacobian σ_max\n"
        )
        sys.stdout.write(
            per_layer.rename_axis("block").to_string(float_format=lambda x: f"{x:.3g}") + "\n"
        )


def figure(tables: dict[str, pd.DataFrame]):
    """Measured vs certified ‖Δ_l‖ across depth (median over samples of the max over tokens),
    one colour per short-circuited block, log scale; and the final ‖Δ_L‖ against block index."""
    import plotly.colors as pc
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = tables["layers"]
    med = (
        layers.groupby(["block", "layer"])
        .agg(
            measured=("measured", "median"),
            certified=("certified", "median"),
            weight=("weight", "first"),
        )
        .reset_index()
    )
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "‖Δ_l‖ across depth (solid: measured, dashed: certified)",
            "final ‖Δ_L‖ against the short-circuited block",
        ),
    )
    blocks = sorted(med.block.unique())
    colours = pc.sample_colorscale(
        "Viridis", [i / max(1, len(blocks) - 1) for i in range(len(blocks))]
    )
    for colour, block in zip(colours, blocks, strict=True):
        d = med[med.block == block]
        fig.add_trace(
            go.Scatter(
                x=d.layer,
                y=d.measured,
                mode="lines+markers",
                name=f"block {block}",
                line=dict(color=colour),
                legendgroup=str(block),
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=d.layer,
                y=d.certified,
                mode="lines",
                showlegend=False,
                line=dict(color=colour, dash="dash"),
                legendgroup=str(block),
            ),
            1,
            1,
        )
    last = med[med.layer == med.layer.max()]
    for col, dash in (("measured", "solid"), ("certified", "dash"), ("weight", "dot")):
        fig.add_trace(
            go.Scatter(
                x=last.block,
                y=last[col],
                mode="lines+markers",
                name=col,
                line=dict(color="black", dash=dash),
            ),
            1,
            2,
        )
    fig.update_yaxes(type="log", title_text="‖Δ‖ (max over tokens, median over samples)")
    fig.update_xaxes(title_text="layer l (x_l)", row=1, col=1)
    fig.update_xaxes(title_text="short-circuited block", row=1, col=2)
    fig.update_layout(template="plotly_white", width=1200, height=500)
    return fig
