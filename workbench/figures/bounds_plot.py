"""Figure 4 from a bounds run (``python -m workbench.bounds``'s ``layers`` table): measured vs
certified ‖Δ_l‖ across depth."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from workbench.figures.style import COLORSCALE, TEMPLATE, pick_model
from workbench.tables import MissingColumns

# Column names the bounds table may use, first present wins.
BOUNDS_COLUMNS = {
    "block": ("block", "short_circuited", "sc_block", "intervened_block"),
    "layer": ("layer", "depth"),
    "measured": ("measured", "measured_norm", "delta_measured", "measured_max"),
    "certified": ("certified", "certified_bound", "certified_norm", "bound_certified"),
}


def _resolve(df, role: str) -> str:
    for name in BOUNDS_COLUMNS[role]:
        if name in df.columns:
            return name
    raise MissingColumns(
        f"the bounds table has no {role} column (any of {BOUNDS_COLUMNS[role]}); "
        f"it has {list(df.columns)}"
    )


def bounds_figure(
    bounds,
    *,
    model: str | None = None,
    blocks: list[int] | None = None,
    agg: str = "median",
    show_weight: bool = False,
) -> go.Figure:
    """Figure 4: measured (solid) and certified (dashed) ‖Δ_l‖ against the layer l, log scale,
    one colour per short-circuited block.

    ``bounds`` is the ``layers`` table of ``python -m workbench.bounds`` (block × layer × sample,
    each value the max over tokens); samples are combined with ``agg`` (median, as the bounds
    command's summary; or mean, max). ``show_weight`` adds the weight-only bound (dotted).
    Non-positive values (nothing changed yet) are not drawn on the log axis.
    """
    cols = {role: _resolve(bounds, role) for role in BOUNDS_COLUMNS}
    d = bounds
    if "model" in d.columns:
        model = pick_model(d, model)
        d = d[d["model"] == model]
    tiers = [("measured", "solid"), ("certified", "dash")]
    if show_weight and "weight" in d.columns:
        cols["weight"] = "weight"
        tiers.append(("weight", "dot"))
    all_blocks = sorted(int(b) for b in d[cols["block"]].dropna().unique())
    chosen = [b for b in all_blocks if blocks is None or b in blocks]
    positions = [0.35 + 0.65 * i / max(len(all_blocks) - 1, 1) for i in range(len(all_blocks))]
    colors = sample_colorscale(COLORSCALE, positions)
    fig = go.Figure()
    for b in chosen:
        g = d[d[cols["block"]] == b]
        g = g.groupby(cols["layer"], as_index=False)[[cols[r] for r, _ in tiers]].agg(agg)
        color = colors[all_blocks.index(b)]
        for role, dash in tiers:
            pos = g[g[cols[role]] > 0]
            fig.add_trace(
                go.Scatter(
                    x=pos[cols["layer"]],
                    y=pos[cols[role]],
                    mode="lines+markers",
                    name=f"block {b} {role}",
                    legendgroup=f"block {b}",
                    line={"color": color, "dash": dash},
                    marker={"size": 5},
                    hovertemplate=f"block {b}<br>layer %{{x}}<br>{role} %{{y:.3g}}<extra></extra>",
                )
            )
    fig.update_layout(
        title=f"{model + ': ' if model else ''}measured (solid) vs certified (dashed) ‖Δ_l‖",
        xaxis_title="Layer l (residual stream entering block l; L = final)",
        xaxis={"dtick": 1},
        yaxis_title=f"‖Δ_l‖, max over tokens ({agg} over samples)",
        yaxis_type="log",
        template=TEMPLATE,
        width=820,
        height=500 + 22 * ((len(chosen) * len(tiers) + 3) // 4),
        legend={
            "orientation": "h",
            "yanchor": "top",
            "y": -0.18,
            "entrywidth": 0.25,
            "entrywidthmode": "fraction",
        },
    )
    return fig
