"""The package's layout rules (DEVELOPERS.md, issue 13): modules of one concern under about 400
lines, and computation that never imports figure code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
MAX_LINES = 400
# The one command whose job is to make the figures: it runs the evaluations, then
# ``workbench.figures``. Nothing else outside the figures may import them.
FIGURE_CALLERS = {"workbench.reproduce"}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(path: Path, name: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in the file names (relative
    imports resolved against ``name``; ``from a import b`` counts as ``a`` and ``a.b``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_figures(module: str) -> bool:
    return module == "workbench.figures" or module.startswith("workbench.figures.")


def test_the_import_parser_sees_every_form(tmp_path):
    pkg = tmp_path / "workbench" / "sub"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text(
        "import workbench.figures.plots\n"
        "from workbench import figures\n"
        "def f():\n"
        "    from ..figures import save\n"
        "    from . import sibling\n"
    )
    found = imported(src, "workbench.sub.mod")
    assert {"workbench.figures.plots", "workbench.figures", "workbench.figures.save"} <= found
    assert "workbench.sub.sibling" in found
    assert not is_figures("workbench.figures_extra") and is_figures("workbench.figures.cli")


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_outside_the_figures_imports_them(name):
    if is_figures(name) or name in FIGURE_CALLERS:
        return
    offending = sorted(m for m in imported(modules()[name], name) if is_figures(m))
    assert not offending, f"{name} imports figure code: {offending}"


def test_every_module_is_under_the_line_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    assert len(sizes) > 40  # the walk found the package
