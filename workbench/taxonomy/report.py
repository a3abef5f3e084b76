"""Figures of the taxonomy run (plotly; one function per figure, each reads tables or arrays)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float


def localization_figure(
    maps: Float[np.ndarray, "classes layer seq seq"],
    classes: Sequence[str],
    title: str = "Localization maps",
    prefix_len: int = 32,
):
    """Heat maps, one row per class and one column per layer (query down, key across), on one
    shared colour scale so layers and classes compare."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_classes, n_layers = maps.shape[:2]
    fig = make_subplots(
        rows=n_classes,
        cols=n_layers,
        column_titles=[f"layer {i}" for i in range(n_layers)],
        row_titles=list(classes),
        horizontal_spacing=0.01,
        vertical_spacing=0.03,
    )
    vmax = float(maps.max()) or 1.0
    for c in range(n_classes):
        for layer in range(n_layers):
            fig.add_trace(
                go.Heatmap(
                    z=maps[c, layer],
                    zmin=0,
                    zmax=vmax,
                    colorscale="Viridis",
                    showscale=(c == 0 and layer == 0),
                    hovertemplate="query %{y}, key %{x}: %{z:.3g}<extra></extra>",
                ),
                row=c + 1,
                col=layer + 1,
            )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    seq = maps.shape[-1]
    for x0, x1, y0, y1 in (
        (prefix_len - 0.5, prefix_len - 0.5, -0.5, seq - 0.5),
        (-0.5, seq - 0.5, prefix_len - 0.5, prefix_len - 0.5),
    ):
        fig.add_shape(
            type="line",
            x0=x0,
            x1=x1,
            y0=y0,
            y1=y1,
            row="all",
            col="all",
            line={"color": "white", "width": 1, "dash": "dot"},
        )
    fig.update_layout(title=title, height=170 * n_classes + 80, width=150 * n_layers + 150)
    return fig


def layer_share_figure(summary: pd.DataFrame, title: str = "Where each class's map points"):
    """Bars: each class's share of localization mass per layer (from ``layer_summary``)."""
    import plotly.express as px

    fig = px.bar(
        summary,
        x="layer",
        y="share",
        color="class",
        barmode="group",
        title=title,
        hover_data=["peak", "suffix_to_prefix", "suffix_to_suffix"],
    )
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(title_text="share of the class's map mass")
    return fig


def min_f1_figure(summary: pd.DataFrame, title: str = "Min-F1: CNN variants and baselines"):
    """Min-F1 per method with its 95% interval over splits, one panel per taxonomy; baselines
    grey."""
    import plotly.express as px

    t = summary.assign(kind=np.where(summary["baseline"], "baseline", "CNN"))
    fig = px.scatter(
        t,
        x="method",
        y="min_f1",
        color="kind",
        facet_col="taxonomy",
        error_y=t["min_f1_high"] - t["min_f1"],
        error_y_minus=t["min_f1"] - t["min_f1_low"],
        color_discrete_map={"baseline": "grey", "CNN": "crimson"},
        hover_data=["accuracy", "splits"],
        title=title,
    )
    fig.update_yaxes(range=[0, 1], title_text="min per-class F1 (held out, 95% interval)")
    return fig
