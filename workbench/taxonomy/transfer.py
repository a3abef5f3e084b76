"""Transfer: a CNN trained on one model's attention maps, scored on another model's.

Dentan et al. train and test on one model. Whether the attention signature of a class is the
model's own or shared is asked by training on member A and scoring on member B, *on the same
windows*: both taxonomy runs (``python -m workbench.taxonomy``) labelled the same sample set, each
by its own model's verdicts (a window memorized by A may not be by B), and extracted each model's
own features. For every split, the CNN trains on A's training part (A's features, A's labels) and
is scored on B's test part (B's features, B's labels), so no window is seen in training and test.
Beside it, on the same test part: a CNN trained on B's own training part (what B's maps allow)
and B's majority class.

Models of different depth: B's maps are brought to A's number of layers by averaging consecutive
groups of layers (24 → 12: each channel is the mean of two adjacent layers); depths that do not
divide are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from workbench.errors import UserError
from workbench.taxonomy import cnn, labels
from workbench.taxonomy.features import load_features

log = logging.getLogger(__name__)


def align_layers(
    features: Float[np.ndarray, "n layer seq seq"], n_layers: int, chunk: int = 256
) -> Float[np.ndarray, "n out seq seq"]:
    """``features`` with ``n_layers`` channels: unchanged, or the mean of each group of
    consecutive layers when the depth is a multiple of ``n_layers``."""
    depth = features.shape[1]
    if depth == n_layers:
        return features
    if depth % n_layers:
        raise UserError(f"cannot align {depth} layers to {n_layers}: not a multiple")
    group = depth // n_layers
    out = np.empty((len(features), n_layers, *features.shape[2:]), dtype=features.dtype)
    for start in range(0, len(features), chunk):
        part = np.asarray(features[start : start + chunk], dtype=np.float32)
        grouped = part.reshape(len(part), n_layers, group, *part.shape[2:])
        out[start : start + chunk] = grouped.mean(2)
    return out


@dataclass
class Member:
    """One taxonomy run's labels and features: what transfer reads."""

    name: str
    labels: pd.DataFrame
    features: dict[str, np.ndarray]

    @classmethod
    def from_run(cls, path: str | Path, poolings: Sequence[str]) -> Member:
        path = Path(path)
        if not (path / "labels.parquet").is_file():
            raise UserError(f"{path} is not a taxonomy run (no labels.parquet)")
        if not (path / "features").is_dir():
            raise UserError(f"{path} has no features/ (kept only until the run is tidied)")
        name = json_config(path)["model"]
        feats = {p: load_features(path / "features", p) for p in poolings}
        return cls(name, pd.read_parquet(path / "labels.parquet"), feats)

    def classes(self, taxonomy: str) -> Int[np.ndarray, " n"]:
        return labels.class_indices(self.labels[taxonomy].tolist(), taxonomy)


def _scored(y_true, y_pred, n_classes, classes, **run) -> list[dict]:
    return cnn._rows(cnn.confusion_matrix(y_true, y_pred, n_classes), classes, run)[0]


def transfer(
    source: Member,
    targets: Sequence[Member],
    taxonomy: str,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    variants: Sequence[cnn.CNNVariant] = cnn.VARIANTS,
    seeds: Sequence[int] = (0,),
    config: cnn.TrainConfig | None = None,
) -> pd.DataFrame:
    """Per target × split × variant × seed × class: F1 on the target's test part of a CNN
    trained on ``source`` (``trained_on`` = the source's name; trained once, scored on every
    target) and of one trained on the target itself, and the target's majority class
    (``method`` = "majority"). Every member must have labelled the same windows (the same
    number of rows, in the same order)."""
    for target in targets:
        if len(source.labels) != len(target.labels):
            raise UserError(
                f"{source.name} and {target.name} labelled different sets "
                f"({len(source.labels)} and {len(target.labels)} rows)"
            )
    config = config or cnn.TrainConfig()
    classes = labels.TAXONOMIES[taxonomy]
    k = len(classes)
    y_source = source.classes(taxonomy)
    width = {p: f.shape[1] for p, f in source.features.items()}
    aligned = [{p: align_layers(f, width[p]) for p, f in t.features.items()} for t in targets]
    rows = []

    def train(x, y, train_idx, variant, seed):
        keep = train_idx[y[train_idx] >= 0]
        return cnn.train_cnn(x, y, k, variant, keep, seed=seed, config=config)

    for split, (train_idx, test_idx) in enumerate(splits):
        for variant in variants:
            for seed in seeds:
                moved = train(source.features[variant.pooling], y_source, train_idx, variant, seed)
                for target, x_target in zip(targets, aligned, strict=True):
                    y = target.classes(taxonomy)
                    test = test_idx[y[test_idx] >= 0]
                    run = {"taxonomy": taxonomy, "source": source.name, "target": target.name,
                           "method": variant.name, "split": split, "seed": seed}  # fmt: skip
                    x = x_target[variant.pooling]
                    own = train(x, y, train_idx, variant, seed)
                    for who, model in ((source.name, moved), (target.name, own)):
                        y_pred = cnn.predict(model, x, test)
                        rows += _scored(y[test], y_pred, k, classes, **run, trained_on=who)
                    log.info("%s → %s, %s split %d: min-F1 %.3f (own %.3f)", source.name,
                             target.name, variant.name, split, rows[-k - 1]["min_f1"],
                             rows[-1]["min_f1"])  # fmt: skip
        for target in targets:
            y = target.classes(taxonomy)
            test = test_idx[y[test_idx] >= 0]
            majority = np.bincount(y[train_idx][y[train_idx] >= 0]).argmax()
            run = {"taxonomy": taxonomy, "source": source.name, "target": target.name,
                   "method": "majority", "split": split, "seed": -1}  # fmt: skip
            rows += _scored(y[test], np.full(len(test), majority), k, classes, **run,
                            trained_on=target.name)  # fmt: skip
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and (method, trained on): min-F1, accuracy and per-class F1 with 95%
    intervals over the splits (``cnn.summarize``)."""
    frames = []
    for target, g in table.groupby("target", sort=False):
        named = g.assign(
            baseline=g["method"] == "majority",
            method=g["method"] + " trained on " + g["trained_on"],
        )
        s = cnn.summarize(named)
        s.insert(0, "target", target)
        s.insert(0, "source", g["source"].iloc[0])
        frames.append(s)
    return pd.concat(frames, ignore_index=True)


def run(cfg) -> dict:
    """``python -m workbench.taxonomy.transfer``: the transfer table and its summary as a run."""
    from workbench import cli
    from workbench.data import load_samples
    from workbench.runs import Run
    from workbench.taxonomy.splits import grouped_splits, sample_groups

    variants = [cnn.CNNVariant.parse(v.strip()) for v in cfg.variants.split(",") if v.strip()]
    poolings = sorted({v.pooling for v in variants})
    source = Member.from_run(cfg.source, poolings)
    targets = [Member.from_run(t, poolings) for t in cfg.targets]
    src_config = json_config(cfg.source)
    tokens = load_samples(src_config["data"]).tokens
    truth = source.labels.rename(columns=lambda c: c.removeprefix("gt_"))
    groups = sample_groups(np.asarray(tokens), truth)
    parts = grouped_splits(source.classes(cfg.taxonomy), groups, cfg.splits, cfg.test_fraction)
    out = Path(cfg.out or Path(cfg.source) / "transfer")
    record = {**cli.recorded(cfg), "models": [source.name] + [t.name for t in targets]}
    run_ = Run.open(out, record, overwrite=cfg.overwrite)
    table = transfer(source, targets, cfg.taxonomy, parts, variants=variants,
                     seeds=range(cfg.seeds))  # fmt: skip
    run_.save("transfer", "all", table)
    run_.save("transfer_summary", "all", summarize(table))
    return {"path": run_.path, **{n: run_.finish(n) for n in ("transfer", "transfer_summary")}}


def json_config(path: str | Path) -> dict:
    import json

    return json.loads((Path(path) / "config.json").read_text())["config"]


def execute(cfg) -> dict:
    import sys

    results = run(cfg)
    cols = ["source", "target", "method", "min_f1", "min_f1_low", "min_f1_high", "accuracy"]
    cols += [
        c
        for c in results["transfer_summary"].columns
        if c.startswith("f1_") and not c.endswith(("_low", "_high"))
    ]
    sys.stdout.write(f"run: {results['path']}\n")
    text = results["transfer_summary"][cols].to_string(index=False, float_format="{:.3f}".format)
    sys.stdout.write(text + "\n")
    return results


if __name__ == "__main__":
    from workbench.cli import run_module

    run_module("workbench.taxonomy.transfer")
