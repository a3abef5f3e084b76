"""Writing a plotly figure to files: HTML (offline, plotly.js once per folder), PNG and SVG.

Used by the figures (``workbench.figures``) and by the commands that draw their own figure of a
run (``workbench.bounds``, ``workbench.taxonomy``), which therefore need no figure code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

log = logging.getLogger(__name__)

FORMATS = ("html", "png", "svg")


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
