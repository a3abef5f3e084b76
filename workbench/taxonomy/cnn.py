"""The attention-map CNN of Dentan et al. 2025 (arXiv 2508.02573): model, training, evaluation.

Input: a sample's head-pooled attention maps, ``[layers, 64, 64]`` (one channel per layer). Model:
two blocks of Conv2d → ReLU → Dropout(0.5) → MaxPool(2), then Linear(64) → ReLU → Dropout →
Linear(classes). Eight variants: kernel 6 or 8 × 10 or 16 channels × mean or max head pooling.
Training: AdamW (lr 1e-3, weight decay 0.1), batch 16, 3 epochs, classes balanced by sampling each
training batch with weights inverse to class frequency. Score: the minimum per-class F1 on
held-out samples (a stratified split), so a classifier must get every class right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CNNVariant:
    kernel: int
    channels: int
    pooling: str  # how the features were pooled over heads: "mean" or "max"

    @property
    def name(self) -> str:
        return f"k{self.kernel}-c{self.channels}-{self.pooling}"

    @classmethod
    def parse(cls, name: str) -> CNNVariant:
        """``"k6-c10-mean"`` → ``CNNVariant(6, 10, "mean")``."""
        try:
            k, c, p = name.split("-")
            return cls(int(k.removeprefix("k")), int(c.removeprefix("c")), p)
        except ValueError:
            raise ValueError(f"cannot read CNN variant {name!r}; use e.g. k6-c10-mean") from None


VARIANTS: tuple[CNNVariant, ...] = tuple(
    CNNVariant(k, c, p) for k in (6, 8) for c in (10, 16) for p in ("mean", "max")
)
"""Dentan et al.'s eight variants."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1
    dropout: float = 0.5
    hidden: int = 64
    test_fraction: float = 0.3
    balanced: bool = True


class AttentionCNN(nn.Module):
    """Conv → ReLU → Dropout → MaxPool, twice; Linear(hidden) → ReLU → Dropout → Linear(classes).

    The ReLUs are ``nn.ReLU`` modules (not functional calls) so guided backpropagation can hook
    them (:mod:`workbench.taxonomy.localize`).
    """

    def __init__(
        self,
        n_layers: int,
        n_classes: int,
        *,
        kernel: int = 6,
        channels: int = 10,
        seq: int = 64,
        hidden: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(n_layers, channels, kernel),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, kernel),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.MaxPool2d(2),
        )
        side = ((seq - kernel + 1) // 2 - kernel + 1) // 2
        if side < 1:
            raise ValueError(f"kernel {kernel} is too large for {seq}×{seq} attention maps")
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: Float[Tensor, "batch layer seq seq"]) -> Float[Tensor, "batch classes"]:
        return self.head(self.features(x))


def stratified_split(
    labels: Int[np.ndarray, " n"], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train / test indices with each class split in the same proportion (≥ 1 test sample).

    Samples labelled -1 (excluded, e.g. a class too small to learn) go to neither.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(test_fraction * len(idx))) if len(idx) > 1 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def balanced_order(
    labels: Int[np.ndarray, " n"], n_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """Positions into ``labels`` drawn with replacement, every class equally likely."""
    classes, counts = np.unique(labels, return_counts=True)
    weight_of = dict(zip(classes.tolist(), (1.0 / counts).tolist(), strict=True))
    p = np.array([weight_of[c] for c in labels.tolist()])
    return rng.choice(len(labels), size=n_draws, replace=True, p=p / p.sum())


def train_cnn(
    features: Float[np.ndarray, "n layer seq seq"],
    labels: Int[np.ndarray, " n"],
    n_classes: int,
    variant: CNNVariant,
    train_idx: np.ndarray,
    *,
    seed: int = 0,
    config: TrainConfig = TrainConfig(),
    device: str | torch.device = "cpu",
) -> AttentionCNN:
    """Train one CNN on ``features[train_idx]``; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    _, n_layers, seq, _ = features.shape
    model = AttentionCNN(
        n_layers,
        n_classes,
        kernel=variant.kernel,
        channels=variant.channels,
        seq=seq,
        hidden=config.hidden,
        dropout=config.dropout,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    y_train = labels[train_idx]
    model.train()
    for _ in range(config.epochs):
        if config.balanced:
            order = train_idx[balanced_order(y_train, len(train_idx), rng)]
        else:
            order = rng.permutation(train_idx)
        for start in range(0, len(order), config.batch_size):
            batch = np.sort(order[start : start + config.batch_size])
            x = torch.as_tensor(np.asarray(features[batch]), dtype=torch.float32, device=device)
            y = torch.as_tensor(labels[batch], dtype=torch.long, device=device)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(
    model: AttentionCNN,
    features: Float[np.ndarray, "n layer seq seq"],
    idx: np.ndarray,
    batch_size: int = 64,
) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        x = torch.as_tensor(np.asarray(features[rows]), dtype=torch.float32, device=device)
        out.append(model(x).argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def per_class_f1(confusion: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix (0 when undefined)."""
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support})


def min_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Dentan et al.'s score: the worst class's F1."""
    return float(per_class_f1(confusion_matrix(y_true, y_pred, n_classes))["f1"].min())


def evaluate(
    features: dict[str, Float[np.ndarray, "n layer seq seq"]],
    labels: Int[np.ndarray, " n"],
    classes: Sequence[str],
    *,
    variants: Sequence[CNNVariant] = VARIANTS,
    seeds: Sequence[int] = (0, 1, 2),
    config: TrainConfig = TrainConfig(),
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Train and score every variant × seed on one labelling (class indices into ``classes``;
    -1 excludes a sample).

    Each seed draws its own stratified split and initialisation. Returns ``scores`` (one row per
    variant × seed × class: precision, recall, F1, support, and the run's min-F1 and accuracy),
    ``confusion`` (one row per variant × seed × true × predicted class) and the trained models
    with their test indices (``[{"variant", "seed", "model", "test_idx"}]``) for localization.
    """
    labels = np.asarray(labels)
    n_classes = len(classes)
    score_rows, confusion_rows, trained = [], [], []
    for seed in seeds:
        train_idx, test_idx = stratified_split(labels, config.test_fraction, seed)
        for variant in variants:
            model = train_cnn(
                features[variant.pooling],
                labels,
                n_classes,
                variant,
                train_idx,
                seed=seed,
                config=config,
                device=device,
            )
            y_true, y_pred = labels[test_idx], predict(model, features[variant.pooling], test_idx)
            m = confusion_matrix(y_true, y_pred, n_classes)
            stats = per_class_f1(m)
            run = {"variant": variant.name, **asdict(variant), "seed": seed}
            worst = float(stats["f1"].min())
            accuracy = float(np.trace(m) / max(m.sum(), 1))
            for c, row in stats.iterrows():
                score_rows.append(
                    {
                        **run,
                        "class": classes[c],
                        **row.to_dict(),
                        "min_f1": worst,
                        "accuracy": accuracy,
                        "n_train": len(train_idx),
                        "n_test": len(test_idx),
                    }
                )
            for t in range(n_classes):
                for p in range(n_classes):
                    confusion_rows.append(
                        {**run, "true": classes[t], "predicted": classes[p], "count": int(m[t, p])}
                    )
            trained.append({"variant": variant, "seed": seed, "model": model, "test_idx": test_idx})
            log.info("%s seed %d: min-F1 %.3f, accuracy %.3f", variant.name, seed, worst, accuracy)
    return pd.DataFrame(score_rows), pd.DataFrame(confusion_rows), trained


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Min-F1 per variant: mean and spread over seeds, best variant first."""
    runs = scores.drop_duplicates(["variant", "seed"])
    out = (
        runs.groupby("variant", as_index=False)
        .agg(
            min_f1=("min_f1", "mean"),
            min_f1_std=("min_f1", "std"),
            accuracy=("accuracy", "mean"),
            seeds=("seed", "nunique"),
        )
        .sort_values("min_f1", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    return out
