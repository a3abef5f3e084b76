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

from workbench.export import FORMATS, StaticExportError, save

__all__ = [
    "FORMATS",
    "MissingColumns",
    "StaticExportError",
    "bounds_figure",
    "duplication_heatmap",
    "memorization_by_block",
    "model_scale_figure",
    "relative_drop_figure",
    "save",
    "short_circuit_figure",
]


_PLOTS = {  # figure function -> its module
    "bounds_figure": "bounds_plot",
    "duplication_heatmap": "plots",
    "memorization_by_block": "plots",
    "model_scale_figure": "plots",
    "relative_drop_figure": "plots",
    "short_circuit_figure": "plots",
}


def __getattr__(name: str):
    """The figure functions, imported on first use (PEP 562): ``python -m workbench.figures
    --help`` then imports no pandas."""
    if name in _PLOTS:
        import importlib

        return getattr(importlib.import_module(f"workbench.figures.{_PLOTS[name]}"), name)
    if name == "MissingColumns":
        from workbench.tables import MissingColumns

        return MissingColumns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
