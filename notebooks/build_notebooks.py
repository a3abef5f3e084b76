"""Write the four notebooks of notebooks/ from the cells below.

    python notebooks/build_notebooks.py

The notebooks only call workbench: every computation lives in the library, so they stay short
and the test suite (tests/test_notebooks.py) can execute them on the embedded organism. Each works
on a subset (a few samples, blocks or task items) so it runs in well under a minute on a laptop
CPU; the figures of figures/ come from ``python -m workbench.reproduce`` on everything.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(2)"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_quick_tour.ipynb": [
        (
            "md",
            "# 01 · A quick tour\n\nLoad the embedded organism, short-circuit one attention "
            "block, and measure what the model still recites when each block is short-circuited "
            "in turn. Everything here is a workbench call; see the README for the pieces.",
        ),
        ("code", SETUP),
        (
            "code",
            "from workbench.data import load_samples\n"
            "from workbench.models import load_model\n"
            "from workbench.organism import registry\n\n"
            "model = load_model()  # the organism's default member\n"
            "samples = load_samples(registry.DEFAULT_MEMORIZED_SET, prefix_len=32,\n"
            "                       vocab_size=model.cfg.d_vocab)\n"
            "print(registry.DEFAULT_MODEL, model.cfg.n_layers, 'blocks;', len(samples), "
            "'samples of', samples.seq_len, 'tokens')",
        ),
        (
            "md",
            "## Short-circuit one block\n\nInside the `with` block, block 3's attention is the "
            "identity (every token attends only to itself); the hooks are gone afterwards.",
        ),
        (
            "code",
            "from workbench.interventions import ShortCircuit\n\n"
            "tokens = torch.from_numpy(samples.tokens[:4])\n"
            "clean = model(tokens)\n"
            "with ShortCircuit(3).apply(model):\n"
            "    short = model(tokens)\n"
            "print('max |Δ logit| at block 3:', (short - clean).abs().max().item())\n"
            "hook = model.hook_dict['blocks.3.hook_attn_out']\n"
            "print('hooks left on the model:', len(hook.fwd_hooks))",
        ),
        (
            "md",
            "## Memorization per short-circuited block\n\nEvery 20th sample of the shipped set "
            "(all kinds and duplication counts), the unmodified model and each block alone.",
        ),
        (
            "code",
            "from workbench.interventions import CLEAN, single_block_sweep\n"
            "from workbench.memorization import summary, sweep\n\n"
            "interventions = [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]\n"
            "mem = sweep(model, samples.tokens[::20], interventions, progress=False,\n"
            "            model_name=registry.DEFAULT_MODEL, dataset_name=samples.name)\n"
            "summary(mem)",
        ),
        (
            "code",
            "from workbench.figures import memorization_by_block\n\nmemorization_by_block(mem)",
        ),
    ],
    "02_bounds.ipynb": [
        (
            "md",
            "# 02 · Bounds: how far the residual stream moves\n\nFor each short-circuited "
            "block, the measured ‖Δ_l‖ (max over tokens) at every later layer against the "
            "certified bound computed from the clean run alone, and the weight-only bound "
            "(see docs and `workbench.bounds`). A few samples keep it quick.",
        ),
        ("code", SETUP),
        (
            "code",
            "from workbench.bounds import compute_bounds, summary\n"
            "from workbench.data import load_samples\n"
            "from workbench.models import load_model\n"
            "from workbench.organism import registry\n\n"
            "model = load_model()\n"
            "samples = load_samples(registry.DEFAULT_MEMORIZED_SET, prefix_len=32,\n"
            "                       vocab_size=model.cfg.d_vocab)\n"
            "blocks = range(model.cfg.n_layers)\n"
            "tables = compute_bounds(model, samples.tokens[::70], blocks,\n"
            "                        decode=False, jacobian_samples=0,\n"
            "                        model_name=registry.DEFAULT_MODEL)\n"
            "summary(tables)",
        ),
        (
            "md",
            "Measured ≤ certified at every block, layer and token (the `violations` column "
            "counts exceptions; it must be 0). The figure: solid measured, dashed certified.",
        ),
        ("code", "from workbench.figures import bounds_figure\n\nbounds_figure(tables['layers'])"),
    ],
    "03_benchmarks.ipynb": [
        (
            "md",
            "# 03 · Benchmarks under short-circuiting\n\nThe organism's local lm-evaluation-"
            "harness tasks (language and reasoning groups), the unmodified model and each block "
            "short-circuited, on the first 20 items of each task.",
        ),
        ("code", SETUP),
        (
            "code",
            "from workbench.benchmarks import (BenchmarkConfig, format_summary,\n"
            "                                  run_benchmarks)\n"
            "from workbench.models import load_model\n\n"
            "model = load_model()\n"
            "out = Path(tempfile.mkdtemp()) / 'bench'\n"
            "cfg = BenchmarkConfig(blocks='all', limit=20, bootstrap_iters=0, out=str(out))\n"
            "table, summ = run_benchmarks(cfg, model=model)\n"
            "print(format_summary(summ))",
        ),
        (
            "code",
            "from workbench.figures import relative_drop_figure\n\nrelative_drop_figure(table)",
        ),
    ],
    "04_paper_figures.ipynb": [
        (
            "md",
            "# 04 · The paper's figures\n\n`python -m workbench.reproduce` makes every run and "
            "figure of figures/ (about a quarter of an hour on a 2-core CPU). This notebook "
            "reads those runs when they exist (`runs/organism`), and otherwise makes a quick, "
            "reduced reproduction in a temporary directory, then draws the five figures.",
        ),
        ("code", SETUP),
        (
            "code",
            "from workbench.reproduce import ReproduceConfig, reproduce\n\n"
            "stored = Path('../runs/organism')\n"
            "if (stored / 'reproduce.json').exists():\n"
            "    runs = stored\n"
            "else:\n"
            "    tmp = Path(tempfile.mkdtemp())\n"
            "    cfg = ReproduceConfig.quick(\n"
            "        out=str(tmp / 'runs'), figures=str(tmp / 'figures'), max_samples=16,\n"
            "        bounds_samples=4, task_limit=8, formats=['html'])\n"
            "    report = reproduce(cfg)\n"
            "    print(report['timings'])\n"
            "    runs = Path(cfg.out)",
        ),
        (
            "code",
            "import pandas as pd\n\n"
            "from workbench.figures.cli import default_ground_truth, load_tables\n\n"
            "tables = load_tables([runs])\n"
            "mem, bench = tables.get('memorization'), tables.get('benchmarks')\n"
            "layers = tables.get('bounds')\n"
            "truth = pd.read_csv(default_ground_truth())",
        ),
        (
            "md",
            "**Figure 1.** Per short-circuited block: exact match, token accuracy and "
            "completion entropy against mean benchmark accuracy; the unmodified model in red.",
        ),
        (
            "code",
            "from workbench.figures import short_circuit_figure\n"
            "from workbench.organism import registry\n\n"
            "short_circuit_figure(mem, bench, model=registry.DEFAULT_MODEL)",
        ),
        (
            "md",
            "**Figure 2.** Model scale: exact match against accuracy for each member of the "
            "organism suite.",
        ),
        (
            "code",
            "from workbench.figures import model_scale_figure\n\n"
            "model_scale_figure(mem, bench, models=list(registry.EMBEDDED_MODELS))",
        ),
        (
            "md",
            "**Figure 3.** Relative decrease in accuracy per short-circuited block, language "
            "against reasoning tasks.",
        ),
        (
            "code",
            "from workbench.figures import relative_drop_figure\n\n"
            "relative_drop_figure(bench, model=registry.DEFAULT_MODEL)",
        ),
        ("md", "**Figure 4.** Measured against certified ‖Δ_l‖ across depth."),
        ("code", "from workbench.figures import bounds_figure\n\nbounds_figure(layers)"),
        ("md", "**Figure 5.** Exact match by duplication count and short-circuited block."),
        (
            "code",
            "from workbench.figures import duplication_heatmap\n\n"
            "duplication_heatmap(mem, truth, model=registry.DEFAULT_MODEL)",
        ),
    ],
}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (unexecuted) and return their paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(
            cells=[
                new_markdown_cell(src, id=f"{name[:2]}-{i:02d}")
                if kind == "md"
                else new_code_cell(src, id=f"{name[:2]}-{i:02d}")
                for i, (kind, src) in enumerate(cells)
            ],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        )
        path = out_dir / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
