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


def _rows(m: np.ndarray, classes: Sequence[str], run: dict) -> tuple[list[dict], list[dict]]:
    """Score rows (one per class) and confusion rows of one confusion matrix."""
    stats = per_class_f1(m)
    worst = float(stats["f1"].min())
    accuracy = float(np.trace(m) / max(m.sum(), 1))
    scores = [
        {**run, "class": classes[c], **row.to_dict(), "min_f1": worst, "accuracy": accuracy}
        for c, row in stats.iterrows()
    ]
    confusion = [
        {**run, "true": classes[t], "predicted": classes[p], "count": int(m[t, p])}
        for t in range(len(classes))
        for p in range(len(classes))
    ]
    return scores, confusion


def evaluate(
    features: dict[str, Float[np.ndarray, "n layer seq seq"]],
    labels: Int[np.ndarray, " n"],
    classes: Sequence[str],
    *,
    variants: Sequence[CNNVariant] = VARIANTS,
    seeds: Sequence[int] = (0, 1, 2),
    config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    baselines: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Train and score every variant × split × seed on one labelling (class indices into
    ``classes``; -1 excludes a sample), and every baseline (``workbench.taxonomy.baselines``:
    name → fit) once per split.

    Without ``splits``, each seed draws its own stratified split (split index = seed). Returns
    ``scores`` (one row per method × split × seed × class: precision, recall, F1, support, the
    run's min-F1 and accuracy; ``method`` is the variant's name or the baseline's, baselines
    have seed -1), ``confusion`` (… × true × predicted class) and the trained CNNs with their
    test indices (``[{"variant", "split", "seed", "model", "test_idx"}]``) for localization.
    """
    config = config or TrainConfig()
    labels = np.asarray(labels)
    n_classes = len(classes)
    if splits is None:
        runs = [(s, *stratified_split(labels, config.test_fraction, s), s) for s in seeds]
    else:
        runs = [(i, tr, te, s) for i, (tr, te) in enumerate(splits) for s in seeds]
    score_rows, confusion_rows, trained = [], [], []

    def add(m, run):
        a, b = _rows(m, classes, run)
        score_rows.extend(a)
        confusion_rows.extend(b)

    done_baselines = set()
    for split, train_idx, test_idx, seed in runs:
        sizes = {"n_train": len(train_idx), "n_test": len(test_idx)}
        y_true = labels[test_idx]
        if baselines and split not in done_baselines:
            done_baselines.add(split)
            for name, fit in baselines.items():
                y_pred = fit(train_idx, labels[train_idx], test_idx)
                run = {"method": name, "baseline": True, "split": split, "seed": -1, **sizes}
                add(confusion_matrix(y_true, y_pred, n_classes), run)
        for variant in variants:
            x = features[variant.pooling]
            model = train_cnn(
                x, labels, n_classes, variant, train_idx, seed=seed, config=config, device=device
            )
            m = confusion_matrix(y_true, predict(model, x, test_idx), n_classes)
            run = {"method": variant.name, "baseline": False, "variant": variant.name,
                   **asdict(variant), "split": split, "seed": seed, **sizes}  # fmt: skip
            add(m, run)
            entry = {"variant": variant, "split": split, "seed": seed, "model": model}
            trained.append({**entry, "test_idx": test_idx})
            log.info("%s split %d seed %d: min-F1 %.3f", variant.name, split, seed,
                     score_rows[-1]["min_f1"])  # fmt: skip
    return pd.DataFrame(score_rows), pd.DataFrame(confusion_rows), trained


def t_interval(
    values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float, float]:
    """Mean and the Student-t interval of the mean of ``values``, clipped to ``bounds`` (the
    range of a score; NaN for one value)."""
    from math import sqrt

    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / sqrt(len(values))
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per method: min-F1, accuracy and each class's F1 averaged over seeds within a split, then
    the mean over splits with a 95% t-interval (the splits are the repeated units); best first.
    ``beats_baselines``: a CNN whose min-F1 interval lies above every baseline's mean."""
    if "method" not in scores:
        scores = scores.assign(method=scores["variant"], split=scores["seed"], baseline=False)
    per_split = scores.groupby(["method", "split"], sort=False)
    runs = per_split[["min_f1", "accuracy"]].mean()
    f1 = scores.groupby(["method", "split", "class"], sort=False)["f1"].mean().unstack("class")
    rows = []
    for method, g in runs.groupby(level="method", sort=False):
        row = {"method": method, "splits": len(g)}
        for col in ("min_f1", "accuracy"):
            row[col], row[f"{col}_low"], row[f"{col}_high"] = t_interval(g[col].to_numpy())
        for c in f1.columns:
            values = f1.loc[method, c].dropna().to_numpy()
            row[f"f1_{c}"], row[f"f1_{c}_low"], row[f"f1_{c}_high"] = t_interval(values)
        rows.append(row)
    out = pd.DataFrame(rows)
    is_base = scores.drop_duplicates("method").set_index("method")["baseline"].astype(bool)
    out.insert(1, "baseline", out["method"].map(is_base).to_numpy())
    best_base = out.loc[out.baseline, "min_f1"].max() if out.baseline.any() else -np.inf
    out["beats_baselines"] = ~out.baseline & (out["min_f1_low"] > best_base)
    return out.sort_values("min_f1", ascending=False, kind="stable").reset_index(drop=True)
