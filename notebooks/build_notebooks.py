"""Write the five notebooks of notebooks/ from the cells below.

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
            "reads the stored runs behind them (`data/runs/organism`), and otherwise makes a quick, "
            "reduced reproduction in a temporary directory, then draws the five figures.",
        ),
        ("code", SETUP),
        (
            "code",
            "from workbench.reproduce import ReproduceConfig, reproduce\n\n"
            "stored = Path('../data/runs/organism')  # the committed runs behind figures/\n"
            "if any(stored.glob('*/config.json')):\n"
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


NOTEBOOKS["05_guess_or_recall.ipynb"] = [
    ("md", """# 05 · Guess or Recall

Dentan, Buscaldi & Vanier 2025, *Guess or Recall? Training CNNs to Classify and Localize
Memorization in LLMs* (arXiv 2508.02573), on the embedded organism, where we know which samples
were inserted, how often, and which are predictable templates.

1. **labels**: memorized = 32-extractable (the memorization engine's clean verdict); *guess* =
   memorized and a template or ROUGE-L / ROUGE-3 ≥ 0.5 between prefix and suffix; *recall* = the
   other memorized samples. Next to it, Prashanth et al. 2024's recite / reconstruct / recollect.
2. **features**: each layer's attention pattern pooled over heads (mean or max), `[layers, 64, 64]`.
3. **CNNs**: eight variants, scored by the minimum per-class F1 on held-out samples, beside four
   baselines on the same repeated grouped splits, with 95% intervals over the splits.
4. **localization**: guided backpropagation → one 64×64 map per layer and class.
5. **beyond the paper**: the memorization drop per short-circuited block, split by class.

The whole study is one command, `python -m workbench.taxonomy` (all eight variants × 5 splits).
This notebook reads the stored run of the organism (`data/runs/taxonomy`) and otherwise makes
a quick one (two variants, one seed, in a temporary directory)."""),
    ("code", """import tempfile
from pathlib import Path

import pandas as pd
import torch

from workbench.taxonomy import GUESS_RECALL, RECITE_RECONSTRUCT_RECOLLECT, TaxonomyConfig, run

torch.set_num_threads(2)
pd.set_option("display.precision", 3)

stored = Path("../data/runs/taxonomy")
if (stored / "class_drop.parquet").exists() and (stored / "min_f1.parquet").exists():
    out = stored
else:  # a quick run: teacher-forced verdicts, two CNN variants, one seed
    out = Path(tempfile.mkdtemp()) / "taxonomy"
    run(TaxonomyConfig(out=str(out), variants="k6-c10-max", splits=2, epochs=1, progress=False))
tables = {name: pd.read_parquet(out / f"{name}.parquet")
          for name in ("labels", "min_f1", "scores", "confusion", "localization", "class_drop")}
print(out, {k: len(v) for k, v in tables.items()})"""),
    ("md", """## 1 · Labels against the organism's ground truth

Rows: what each window of the organism's stream is made of (code, licence text, package
docs, English, reasoning lines, planted canaries) and its duplication bin (occurrences in the
training stream); columns: the label the taxonomy gives it."""),
    ("code", """labels = tables["labels"]
pd.crosstab([labels["gt_kind"], labels["gt_dup_bin"]], labels[GUESS_RECALL])"""),
    ("code", """pd.crosstab(labels["gt_kind"], labels[RECITE_RECONSTRUCT_RECOLLECT])"""),
    ("md", """Which kinds of window follow a template (token values, numbers read as numbers, and
integers written in the text):"""),
    ("code", """pd.crosstab(labels["gt_kind"], labels["template"])"""),
    ("md", """## 2–3 · Attention features and the CNNs

The features are in the run (`features/attention_<pooling>.npy`, `[samples, layers, 64, 64]`);
each CNN variant × split × seed, and each baseline × split, is scored by the minimum per-class F1
on held-out samples; the summary gives the mean over splits with a 95% t-interval."""),
    ("code", """import numpy as np

features = out / "features" / "attention_mean.npy"  # not stored in data/runs: 450 MB
if features.exists():
    print("features:", np.load(features, mmap_mode="r").shape)
cols = ["taxonomy", "method", "baseline", "min_f1", "min_f1_low", "min_f1_high", "accuracy"]
tables["min_f1"][cols + ["beats_baselines"]]"""),
    ("code", """cnns = tables["min_f1"][~tables["min_f1"]["baseline"]]
best = cnns.sort_values("min_f1", ascending=False).groupby("taxonomy").head(1)
best[cols]"""),
    ("md", "Confusion matrices of each taxonomy's best CNN variant (summed over splits):"),
    ("code", """conf = tables["confusion"].merge(best[["taxonomy", "method"]])
for taxonomy, g in conf.groupby("taxonomy"):
    print(taxonomy)
    print(g.pivot_table(index="true", columns="predicted", values="count", aggfunc="sum"), "\\n")"""),
    ("md", """## 4 · Localization

Each class's share of the map mass per layer, and the layers each class points to."""),
    ("code", """from workbench.taxonomy import top_layers

loc = tables["localization"]
for taxonomy, g in loc.groupby("taxonomy"):
    print(taxonomy, top_layers(g, k=2))
loc.pivot_table(index=["taxonomy", "class"], columns="layer", values="share")"""),
    ("code", """from workbench.taxonomy import labels as taxonomy_labels
from workbench.taxonomy.report import localization_figure

maps = np.load(out / f"localization_{GUESS_RECALL}.npy")
classes = [c for c in taxonomy_labels.TAXONOMIES[GUESS_RECALL] if c in set(loc["class"])]
localization_figure(maps, classes, "Guess / recall localization maps")"""),
    ("md", """## 5 · Beyond both papers: which blocks does each class need?

Exact-match drop when one block's attention is short-circuited (Menta et al. 2025), per class.
A memorized class starts at exact match 1 (the clean verdict defines it), so the drop is the
fraction of the class the model no longer reproduces."""),
    ("code", """from workbench.taxonomy import drop_figure, drop_matrix

drops = tables["class_drop"]
display(drop_matrix(drops, GUESS_RECALL))
display(drop_matrix(drops, RECITE_RECONSTRUCT_RECOLLECT))
drop_figure(drops)"""),
]


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


def execute(path: Path, timeout: int = 600) -> None:
    """Run a notebook in place, keeping its outputs (what is committed)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    nbformat.write(nb, path)


if __name__ == "__main__":
    import sys

    for p in build():
        if "--execute" in sys.argv[1:]:
            execute(p)
        print(p)
