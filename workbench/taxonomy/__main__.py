"""``python -m workbench.taxonomy``: the Guess-or-Recall study on a model (the organism by default).

Example::

    python -m workbench.taxonomy --out runs/taxonomy --seeds 3
    python -m workbench.taxonomy --model DIR --data SET.npy --ground-truth GT.csv \\
        --memorization runs/mem --variants k6-c10-mean,k8-c16-max
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.taxonomy")

import sys
from collections.abc import Sequence

from workbench import cli
from workbench.commands import TaxonomyConfig


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m workbench.taxonomy``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(TaxonomyConfig, execute, argv, "python -m workbench.taxonomy")


def execute(cfg: TaxonomyConfig) -> dict:
    """The command: the study as a run; prints min-F1 and the per-class drops."""
    from workbench.taxonomy.pipeline import run

    results = run(cfg)
    out = sys.stdout
    out.write(f"run: {results['path']}\n")
    if "min_f1" in results:
        out.write("min-F1 per method (mean over splits, 95% interval):\n")
        cols = ["taxonomy", "method", "baseline", "min_f1", "min_f1_low", "min_f1_high"]
        cols += ["accuracy", "beats_baselines"]
        table = results["min_f1"][cols]
        out.write(table.to_string(index=False, float_format="{:.3f}".format) + "\n")
    drops = results["class_drop"]
    single = drops[drops["block"].notna()]
    if not single.empty:
        wide = single.pivot_table(index=["taxonomy", "class"], columns="block", values="drop")
        out.write("exact-match drop per short-circuited block, by class:\n")
        out.write(wide.to_string(float_format="{:.2f}".format) + "\n")
    return results
