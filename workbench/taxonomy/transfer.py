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
        import json

        path = Path(path)
        if not (path / "labels.parquet").is_file():
            raise UserError(f"{path} is not a taxonomy run (no labels.parquet)")
        if not (path / "features").is_dir():
            raise UserError(f"{path} has no features/ (kept only until the run is tidied)")
        name = json.loads((path / "config.json").read_text())["config"]["model"]
        feats = {p: load_features(path / "features", p) for p in poolings}
        return cls(name, pd.read_parquet(path / "labels.parquet"), feats)

    def classes(self, taxonomy: str) -> Int[np.ndarray, " n"]:
        return labels.class_indices(self.labels[taxonomy].tolist(), taxonomy)


def _scored(y_true, y_pred, n_classes, classes, **run) -> list[dict]:
    m = cnn.confusion_matrix(y_true, y_pred, n_classes)
    stats = cnn.per_class_f1(m)
    worst, accuracy = float(stats["f1"].min()), float(np.trace(m) / max(m.sum(), 1))
    return [
        {**run, "class": classes[c], **row.to_dict(), "min_f1": worst, "accuracy": accuracy}
        for c, row in stats.iterrows()
    ]


def transfer(
    source: Member,
    target: Member,
    taxonomy: str,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    variants: Sequence[cnn.CNNVariant] = cnn.VARIANTS,
    seeds: Sequence[int] = (0,),
    config: cnn.TrainConfig | None = None,
) -> pd.DataFrame:
    """Per split × variant × seed × class: F1 on ``target``'s test part of a CNN trained on
    ``source`` (``trained_on`` = source) and of one trained on ``target`` itself, and the
    target's majority class (``method`` = "majority"). The two members must have labelled the
    same windows (the same number of rows, in the same order)."""
    if len(source.labels) != len(target.labels):
        raise UserError(
            f"{source.name} and {target.name} labelled different sets "
            f"({len(source.labels)} and {len(target.labels)} rows)"
        )
    config = config or cnn.TrainConfig()
    classes = labels.TAXONOMIES[taxonomy]
    k = len(classes)
    y = {"source": source.classes(taxonomy), "target": target.classes(taxonomy)}
    width = {p: source.features[p].shape[1] for p in source.features}
    aligned = {p: align_layers(f, width[p]) for p, f in target.features.items()}
    rows = []
    for split, (train_idx, test_idx) in enumerate(splits):
        test = test_idx[y["target"][test_idx] >= 0]
        y_test = y["target"][test]
        base = {"taxonomy": taxonomy, "source": source.name, "target": target.name}
        majority = np.bincount(y["target"][train_idx][y["target"][train_idx] >= 0]).argmax()
        rows += _scored(
            y_test, np.full(len(test), majority), k, classes,
            **base, method="majority", trained_on=target.name, split=split, seed=-1,
        )  # fmt: skip
        for variant in variants:
            target_x = aligned[variant.pooling]
            for seed in seeds:
                for who, member, x in (
                    ("source", source, source.features[variant.pooling]),
                    ("target", target, target_x),
                ):
                    train = train_idx[y[who][train_idx] >= 0]
                    model = cnn.train_cnn(x, y[who], k, variant, train, seed=seed, config=config)
                    y_pred = cnn.predict(model, target_x, test)
                    rows += _scored(
                        y_test, y_pred, k, classes, **base, method=variant.name,
                        trained_on=member.name, split=split, seed=seed,
                    )  # fmt: skip
                    log.info(
                        "%s → %s, %s split %d seed %d: min-F1 %.3f",
                        member.name, target.name, variant.name, split, seed, rows[-1]["min_f1"],
                    )  # fmt: skip
    return pd.DataFrame(rows)
