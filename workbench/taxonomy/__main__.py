"""``python -m workbench.taxonomy``: the Guess-or-Recall study on a model (the organism by default).

Example::

    python -m workbench.taxonomy --out runs/taxonomy --seeds 3
    python -m workbench.taxonomy --model DIR --data SET.npy --ground-truth GT.csv \\
        --memorization runs/mem --variants k6-c10-mean,k8-c16-max
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from workbench.interventions import KINDS
from workbench.taxonomy.labels import TAXONOMIES
from workbench.taxonomy.pipeline import TaxonomyConfig, run


def parse(argv: Sequence[str] | None = None) -> TaxonomyConfig:
    d = TaxonomyConfig()
    p = argparse.ArgumentParser(
        prog="python -m workbench.taxonomy", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default=None, help="organism member, checkpoint dir or TL name")
    p.add_argument("--data", default=None, help="sample set (.npy/.jsonl); default: organism's")
    p.add_argument("--ground-truth", default=None, help="per-row table (.csv/.parquet)")
    p.add_argument(
        "--duplicates-column",
        default=d.duplicates_column,
        help="ground-truth column with training-set copies (recite/reconstruct/...)",
    )
    p.add_argument(
        "--memorization",
        default=None,
        help="reuse a memorization run (dir or parquet) instead of sweeping",
    )
    p.add_argument("--prefix-len", type=int, default=d.prefix_len)
    p.add_argument("--blocks", default=d.blocks, help="blocks to short-circuit one at a time")
    p.add_argument("--kind", default=d.kind, choices=KINDS)
    p.add_argument(
        "--decode",
        action="store_true",
        help="also decode freely (token_accuracy per block); exact_match is exact without it",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--variants", default=d.variants, help="all, or e.g. k6-c10-mean,k8-c16-max")
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--train-batch-size", type=int, default=d.train_batch_size)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--min-class-size", type=int, default=d.min_class_size)
    p.add_argument("--no-localize", dest="localize", action="store_false")
    p.add_argument(
        "--taxonomies", default=",".join(TAXONOMIES), help=f"comma list of {', '.join(TAXONOMIES)}"
    )
    p.add_argument("--out", default=None, help="run directory (default runs/taxonomy-<model>)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = vars(p.parse_args(argv))
    args["taxonomies"] = tuple(t.strip() for t in args["taxonomies"].split(",") if t.strip())
    unknown = set(args["taxonomies"]) - TAXONOMIES.keys()
    if unknown:
        p.error(f"unknown taxonomies {sorted(unknown)}")
    return TaxonomyConfig(**args)


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run(cfg)
    out = sys.stdout
    out.write(f"run: {results['path']}\n")
    if "min_f1" in results:
        out.write("min-F1 per variant (mean over seeds):\n")
        out.write(results["min_f1"].to_string(index=False, float_format="{:.3f}".format) + "\n")
    drops = results["class_drop"]
    single = drops[drops["block"].notna()]
    if not single.empty:
        wide = single.pivot_table(index=["taxonomy", "class"], columns="block", values="drop")
        out.write("exact-match drop per short-circuited block, by class:\n")
        out.write(wide.to_string(float_format="{:.2f}".format) + "\n")
    return results


if __name__ == "__main__":
    main()
