"""The notebooks: built reproducibly by notebooks/build_notebooks.py, and executed end to end on the
embedded organism (skipped while the organism's checkpoints are not in data/organism/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

from workbench.organism import registry

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = [
    "01_quick_tour.ipynb",
    "02_bounds.ipynb",
    "03_benchmarks.ipynb",
    "04_paper_figures.ipynb",
    "05_guess_or_recall.ipynb",
]


def _organism_shipped() -> bool:
    path = registry.EMBEDDED_MODELS.get(registry.DEFAULT_MODEL or "")
    needed = [
        getattr(registry, "DEFAULT_MEMORIZED_SET", None),
        getattr(registry, "DEFAULT_GROUND_TRUTH", None),
        getattr(registry, "TASKS_DIR", None),
    ]
    # the notebooks use the default member only
    return path is not None and all(
        p is not None and Path(p).exists() for p in [*needed, path / "config.json"]
    )


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_match_their_builder(tmp_path):
    built = _builder().build(tmp_path)
    assert sorted(p.name for p in built) == NOTEBOOKS
    for path in built:
        fresh = nbformat.read(path, as_version=4)
        committed = nbformat.read(NB_DIR / path.name, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], path.name
        code = "\n".join(c.source for c in fresh.cells if c.cell_type == "code")
        imported = {
            line.split()[1].split(".")[0]
            for line in code.splitlines()
            if line.startswith(("import ", "from "))
        }
        allowed = {"workbench", "torch", "tempfile", "pathlib", "pandas", "numpy"}
        assert imported <= allowed, imported


@pytest.mark.skipif(not _organism_shipped(), reason="the organism is not in data/organism/ yet")
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_on_the_organism(name):
    from nbclient import NotebookClient

    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    last = nb.cells[-1]
    assert last.cell_type == "code" and last.outputs, f"{name}: the last cell shows nothing"
    data = last.outputs[-1].get("data", {})
    assert any("plotly" in k for k in data) or "text/html" in data, sorted(data)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
