"""Figures from stored runs: one function per figure (tidy run tables → plotly ``go.Figure``),
``save`` for HTML + PNG + SVG, and ``python -m workbench.figures --runs DIR ... --out figures/``
(``workbench.figures.__main__``) to regenerate every figure the runs allow.

    from workbench.figures import short_circuit_figure, save
    from workbench.runs import read_run
    mem, _ = read_run("runs/organism/memorization-organism-neox-m", "memorization")
    bench, _ = read_run("runs/organism/benchmarks-organism-neox-m", "benchmarks")
    save(short_circuit_figure(mem, bench), "figures", "fig1-short-circuit")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

log = logging.getLogger(__name__)

FORMATS = ("html", "png", "svg")

__all__ = [
    "FORMATS",
    "MissingColumns",
    "bounds_figure",
    "duplication_heatmap",
    "memorization_by_block",
    "model_scale_figure",
    "relative_drop_figure",
    "save",
    "short_circuit_figure",
]


_PLOTS = (
    "bounds_figure",
    "duplication_heatmap",
    "memorization_by_block",
    "model_scale_figure",
    "relative_drop_figure",
    "short_circuit_figure",
)


def __getattr__(name: str):
    """The figure functions, imported on first use (PEP 562): ``python -m workbench.figures
    --help`` then imports no pandas."""
    if name in _PLOTS:
        from workbench.figures import plots

        return getattr(plots, name)
    if name == "MissingColumns":
        from workbench.figures.tables import MissingColumns

        return MissingColumns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StaticExportError(RuntimeError):
    """PNG/SVG export failed (kaleido missing or broken)."""


def save(
    fig: go.Figure, out_dir: str | Path, name: str, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.<fmt>`` for each format; returns the paths.

    HTML is interactive and works offline: plotly.js is written once per directory
    (``plotly.min.js``) and referenced by every HTML file. PNG (2× scale) and SVG go through
    kaleido 0.2.1, which ships its own headless Chromium (no system browser, no network).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "html":
            fig.write_html(path, include_plotlyjs="directory", full_html=True)
        elif fmt in ("png", "svg", "pdf"):
            try:
                fig.write_image(path, format=fmt, scale=2 if fmt == "png" else 1)
            except (ValueError, ImportError, RuntimeError) as err:
                raise StaticExportError(
                    f"could not write {path}: {err}. Static export needs kaleido==0.2.1 with "
                    "plotly<6 (pip install 'kaleido==0.2.1'); or pass formats=('html',)."
                ) from err
        else:
            raise ValueError(f"unknown figure format {fmt!r}; choose from html, png, svg, pdf")
        log.info("wrote %s", path)
        paths.append(path)
    return paths
