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


def min_f1_figure(scores: pd.DataFrame, title: str = "Min-F1 per CNN variant"):
    """Min-F1 per variant (mean over seeds, points per seed), one colour per taxonomy."""
    import plotly.express as px

    runs = scores.drop_duplicates(["taxonomy", "variant", "seed"])
    fig = px.strip(
        runs,
        x="variant",
        y="min_f1",
        color="taxonomy",
        title=title,
        hover_data=["seed", "accuracy"],
    )
    means = runs.groupby(["taxonomy", "variant"], as_index=False)["min_f1"].mean()
    for taxonomy, g in means.groupby("taxonomy"):
        fig.add_scatter(
            x=g["variant"],
            y=g["min_f1"],
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 24},
            name=f"{taxonomy} (mean)",
        )
    fig.update_yaxes(range=[0, 1], title_text="min per-class F1 (held out)")
    return fig
