"""The paper's figures and the workbench's own, one function each: tidy run tables → ``go.Figure``.

1. ``short_circuit_figure``: per short-circuited block, exact match / token accuracy / completion
   entropy against mean benchmark accuracy; the unmodified model in red (the paper's Fig. 1 layout).
2. ``model_scale_figure``: exact match against accuracy, one panel per model
   (the paper's scale figure).
3. ``relative_drop_figure``: relative decrease in accuracy per short-circuited block, language vs
   reasoning tasks.
4. ``bounds_figure`` (``workbench.figures.bounds_plot``): measured vs certified ‖Δ_l‖ across
   depth, log y, one colour per block.
5. ``duplication_heatmap``: exact match by duplication count × short-circuited block.

Plus ``memorization_by_block`` (memorization only, no benchmarks) for quick looks.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures.style import (
    BLOCK_TITLE,
    CLEAN_COLOR,
    COLORSCALE,
    GROUP_COLORS,
    MARKER_LINE,
    METRIC_TITLES,
    TEMPLATE,
    pick_model,
)
from workbench.tables import (
    MissingColumns,
    benchmark_accuracy,
    block_index,
    joined,
    memorization_means,
    reproduced_by_clean,
    require,
    with_ground_truth,
)


def _range(metric: str) -> dict:
    """Fractions in [0, 1] keep their full range (a flat 0 or 1 reads as such)."""
    return {"range": [-0.05, 1.05]} if metric in ("exact_match", "token_accuracy") else {}


def _coloraxis(n_blocks: int) -> dict:
    return {
        "colorscale": COLORSCALE,
        "cmin": 0,
        "cmax": max(n_blocks - 1, 1),
        "colorbar": {"title": {"text": "Block", "side": "right"}},
    }


def _clean_and_blocks(d):
    return d[d["block"] == -1], d[d["block"] >= 0]


def _scatter_panel(fig, d, y: str, row: int, col: int, name: str, first: bool) -> None:
    """Blocks coloured by index, the clean model as a red marker with dotted guides."""
    clean, blocks = _clean_and_blocks(d)
    fig.add_trace(
        go.Scatter(
            x=blocks["accuracy"],
            y=blocks[y],
            mode="markers",
            name=name,
            legendgroup="blocks",
            showlegend=first,
            marker={
                "color": blocks["block"],
                "coloraxis": "coloraxis",
                "size": 10,
                "line": MARKER_LINE,
            },
            customdata=blocks["block"],
            hovertemplate="block %{customdata}<br>accuracy %{x:.3f}<br>%{y:.3f}<extra></extra>",
        ),
        row=row,
        col=col,
    )
    if clean.empty:
        return
    fig.add_trace(
        go.Scatter(
            x=clean["accuracy"],
            y=clean[y],
            mode="markers",
            name="unmodified model",
            legendgroup="clean",
            showlegend=first,
            marker={"color": CLEAN_COLOR, "size": 13, "symbol": "circle"},
            hovertemplate="unmodified<br>accuracy %{x:.3f}<br>%{y:.3f}<extra></extra>",
        ),
        row=row,
        col=col,
    )
    dotted = {"line_color": CLEAN_COLOR, "line_dash": "dot", "line_width": 1, "opacity": 0.7}
    fig.add_vline(x=float(clean["accuracy"].iloc[0]), row=row, col=col, **dotted)
    fig.add_hline(y=float(clean[y].iloc[0]), row=row, col=col, **dotted)


def short_circuit_figure(
    mem, bench, *, model: str | None = None, kind: str = "identity"
) -> go.Figure:
    """Figure 1: one panel per memorization metric against mean benchmark accuracy.

    Args:
        mem: a memorization table (one row per intervention × sample).
        bench: a benchmarks table (one row per task × intervention × metric).
        model: which model of the tables (default: the first).
        kind: the intervention kind plotted (the clean model is always included).
    """
    d = joined(mem, bench, kind)
    model = pick_model(d, model)
    d = d[d["model"] == model]
    metrics = list(METRIC_TITLES)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08)
    for i, metric in enumerate(metrics, start=1):
        _scatter_panel(fig, d, metric, 1, i, "short-circuited block", first=i == 1)
        fig.update_yaxes(title_text=METRIC_TITLES[metric], row=1, col=i, **_range(metric))
        fig.update_xaxes(title_text="Accuracy", row=1, col=i)
    n_blocks = int(d["block"].max()) + 1
    fig.update_layout(
        title=f"{model}: memorization vs benchmark accuracy, per short-circuited block",
        coloraxis=_coloraxis(n_blocks),
        template=TEMPLATE,
        width=1250,
        height=420,
        legend={"orientation": "h", "y": -0.22, "x": 0.0},
    )
    return fig


def model_scale_figure(
    mem,
    bench,
    *,
    models: list[str] | None = None,
    metric: str = "exact_match",
    kind: str = "identity",
    own: bool = True,
) -> go.Figure:
    """Figure 2: ``metric`` against mean benchmark accuracy, one panel per model (in ``models``
    order; default: the order of the tables). Models missing from either table are skipped.
    ``own``: each model over the samples it reproduces unmodified (``reproduced_by_clean``)."""
    d = joined(reproduced_by_clean(mem) if own else mem, bench, kind)
    present = list(dict.fromkeys(d["model"]))
    models = [m for m in (models or present) if m in present]
    if not models:
        raise MissingColumns(f"none of the models asked for has both tables; have {present}")
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models, horizontal_spacing=0.06)
    for i, m in enumerate(models, start=1):
        _scatter_panel(fig, d[d["model"] == m], metric, 1, i, "short-circuited block", first=i == 1)
        fig.update_xaxes(title_text="Accuracy", row=1, col=i)
        fig.update_yaxes(row=1, col=i, **_range(metric))
    fig.update_yaxes(title_text=METRIC_TITLES.get(metric, metric), row=1, col=1)
    n_blocks = int(d[d["model"].isin(models)]["block"].max()) + 1
    fig.update_layout(
        title=f"{METRIC_TITLES.get(metric, metric)} vs accuracy across models",
        coloraxis=_coloraxis(n_blocks),
        template=TEMPLATE,
        width=330 * len(models) + 180,
        height=420,
        legend={"orientation": "h", "y": -0.22, "x": 0.0},
    )
    return fig


def relative_drop_figure(bench, *, model: str | None = None, kind: str = "identity") -> go.Figure:
    """Figure 3: relative decrease in accuracy, (clean − short-circuited) / clean averaged over the
    tasks of each group, per short-circuited block; one line per task group."""
    require(bench, ["group"], "benchmarks")
    d = benchmark_accuracy(bench, kind, by=("group",))
    model = pick_model(d, model)
    d = d[(d["model"] == model) & (d["block"] >= 0)]
    fig = go.Figure()
    known = list(GROUP_COLORS)
    groups = sorted(d["group"].unique(), key=lambda g: (known.index(g) if g in known else 99, g))
    for group in groups:
        g = d[d["group"] == group].sort_values("block")
        fig.add_trace(
            go.Scatter(
                x=g["block"],
                y=g["relative_drop"],
                mode="lines+markers",
                name=f"{group.capitalize()} tasks",
                line={"color": GROUP_COLORS.get(group)},
                customdata=g["tasks"],
                hovertemplate="block %{x}<br>relative drop %{y:.3f}<br>"
                "%{customdata} tasks<extra></extra>",
            )
        )
    fig.add_hline(y=0, line_color="#999", line_width=1)
    fig.update_layout(
        title=f"{model}: relative accuracy drop per short-circuited block",
        xaxis_title=BLOCK_TITLE,
        yaxis_title="Relative decrease in accuracy",
        xaxis={"dtick": 1},
        template=TEMPLATE,
        width=650,
        height=450,
    )
    return fig


def duplication_heatmap(
    mem,
    truth,
    *,
    model: str | None = None,
    sample_kinds: tuple[str, ...] | None = None,
    kind: str = "identity",
) -> go.Figure:
    """Figure 5: mean exact match per duplication count (rows) and short-circuited block (columns;
    the first column is the unmodified model). ``truth`` is the per-sample ground truth (``row``
    or ``sample``, ``dup_count``, optionally ``dup_bin`` (power-of-two bins, used when present)
    and ``kind``); ``sample_kinds`` selects sample kinds (None: all). Held-out samples
    (duplication count 0) form the bottom row."""
    d = with_ground_truth(mem, truth)
    d = d[d["model"] == pick_model(d, model)]
    model = d["model"].iloc[0]
    kind_col = "sample_kind" if "sample_kind" in d.columns else None
    if sample_kinds is not None and kind_col is not None:
        d = d[d[kind_col].isin(sample_kinds)]
    if "split" in d.columns or "sample_split" in d.columns:
        split = d["sample_split"] if "sample_split" in d.columns else d["split"]
        d = d.assign(dup_count=d["dup_count"].where(split != "heldout", 0))
    if "dup_bin" in d.columns:
        d = d.assign(dup_count=d["dup_bin"])
    d = d.assign(block=block_index(d, kind)).dropna(subset=["block"])
    if d.empty:
        raise MissingColumns(f"no memorization rows of sample kinds {sample_kinds} for {model}")
    z = (
        d.astype({"exact_match": "float64"})
        .pivot_table(index="dup_count", columns="block", values="exact_match", aggfunc="mean")
        .sort_index()
    )
    counts = d[d["block"] == d["block"].min()].groupby("dup_count")["sample"].nunique()
    x = ["unmodified" if b == -1 else str(int(b)) for b in z.columns]
    binned = "dup_bin" in d.columns
    y = [
        "held out" if c == 0 else (f"{int(c)}–{2 * int(c) - 1}×" if binned else f"{int(c)}×")
        for c in z.index
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z.to_numpy(),
            x=x,
            y=y,
            zmin=0,
            zmax=1,
            colorscale=COLORSCALE,
            name="exact match",
            texttemplate="%{z:.2f}",
            customdata=[[int(counts.get(c, 0))] * len(x) for c in z.index],
            colorbar={"title": {"text": "Exact match", "side": "right"}},
            hovertemplate="block %{x}<br>duplicated %{y}<br>exact match %{z:.2f}<br>"
            "%{customdata} samples<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{model}: exact match by duplication count and short-circuited block",
        xaxis_title=BLOCK_TITLE,
        yaxis_title="Duplication count in training",
        xaxis={"type": "category"},
        yaxis={"type": "category"},
        template=TEMPLATE,
        width=760,
        height=460,
    )
    return fig


def memorization_by_block(mem, *, model: str | None = None, kind: str = "identity") -> go.Figure:
    """Memorization only: each metric against the short-circuited block, the unmodified model as
    a red dotted line (no benchmarks needed)."""
    d = memorization_means(mem, kind)
    model = pick_model(d, model)
    d = d[d["model"] == model]
    clean, blocks = _clean_and_blocks(d)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08)
    for i, metric in enumerate(METRIC_TITLES, start=1):
        fig.add_trace(
            go.Scatter(
                x=blocks["block"],
                y=blocks[metric],
                mode="lines+markers",
                name="short-circuited block",
                legendgroup="blocks",
                showlegend=i == 1,
                line={"color": "#1f5fa8"},
            ),
            row=1,
            col=i,
        )
        if not clean.empty:
            fig.add_hline(
                y=float(clean[metric].iloc[0]),
                line_color=CLEAN_COLOR,
                line_dash="dot",
                row=1,
                col=i,
            )
        fig.update_yaxes(title_text=METRIC_TITLES[metric], row=1, col=i)
        fig.update_xaxes(title_text=BLOCK_TITLE, dtick=1, row=1, col=i)
    fig.update_layout(
        title=f"{model}: memorization per short-circuited block (red dotted: unmodified model)",
        template=TEMPLATE,
        width=1200,
        height=400,
        showlegend=False,
    )
    return fig
