"""Localization of Dentan et al. 2025 (arXiv 2508.02573): which layers' attention each class uses.

For a trained CNN and a sample ``x`` (its ``[layers, 64, 64]`` pooled attention):

1. guided backpropagation (Springenberg et al. 2015) of every class logit to the input: the
   gradient of the logit where every ReLU's backward pass also drops negative gradients;
2. for class ``c``: its map minus the mean map of the other classes, clipped at zero, and
   normalized by its maximum over the whole sample (so a sample's map peaks at 1 in its most
   salient layer, and layers stay comparable);
3. multiplied by each head's attention weights of that layer and maxed over heads;
4. averaged over the samples of class ``c`` (the CNN's held-out ones by default) and over CNNs.

Result: one ``64×64`` map per layer and class, ``[classes, layers, 64, 64]``, values in [0, 1].
Step 2 subtracts, for each sample, the other classes' guided maps of that same sample (our
reading of "minus the mean map of the other classes").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

HeadPatterns = Callable[[np.ndarray], Float[Tensor, "batch layer head seq seq"]]


def guided_gradients(
    model: nn.Module, x: Float[Tensor, "batch layer seq seq"]
) -> Float[Tensor, "batch classes layer seq seq"]:
    """Guided-backpropagation gradient of every class logit with respect to the input.

    Backward hooks on the model's ``nn.ReLU`` modules clamp the gradient flowing back through
    them at zero (the ReLU's own backward already zeroes it where the input was negative); they
    are removed before returning, also on error. The model should be in eval mode.
    """

    def clamp(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),)

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = [m.register_full_backward_hook(clamp) for m in relus]
    try:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            grads = [
                torch.autograd.grad(logits[:, c].sum(), x, retain_graph=True)[0]
                for c in range(logits.shape[1])
            ]
    finally:
        for h in handles:
            h.remove()
    return torch.stack(grads, dim=1)


def class_saliency(
    grads: Float[Tensor, "batch classes layer seq seq"],
) -> Float[Tensor, "batch classes layer seq seq"]:
    """Each class's guided map minus the mean of the others, clipped at 0, max-normalized to 1."""
    n_classes = grads.shape[1]
    if n_classes < 2:
        others = torch.zeros_like(grads)
    else:
        others = (grads.sum(dim=1, keepdim=True) - grads) / (n_classes - 1)
    s = (grads - others).clamp(min=0)
    peak = s.flatten(2).amax(-1)[..., None, None, None]
    return torch.where(peak > 0, s / peak.clamp(min=1e-30), torch.zeros_like(s))


def localization_maps(
    models: Sequence[dict],
    features: dict[str, Float[np.ndarray, "n layer seq seq"]],
    labels: Int[np.ndarray, " n"],
    n_classes: int,
    head_patterns: HeadPatterns,
    *,
    batch_size: int = 16,
    held_out_only: bool = True,
    return_per_model: bool = False,
) -> tuple:
    """Mean localization map per class and layer over samples and CNNs.

    Args:
        models: ``[{"variant": CNNVariant, "model": AttentionCNN, "test_idx": array}, ...]`` as
            :func:`workbench.taxonomy.cnn.evaluate` returns them.
        features: pooled attention per pooling (the CNN's input).
        labels: class index per sample.
        head_patterns: sample indices → per-head attention ``[batch, layer, head, seq, seq]``
            (e.g. ``lambda idx: head_patterns(model, tokens[idx])``).
        held_out_only: average each CNN over its held-out samples (else over all samples).

    Returns:
        ``maps[class, layer, query, key]`` and ``counts[class]`` (the number of CNNs that saw
        the class; a class no CNN saw keeps a zero map); with ``return_per_model`` also each
        CNN's mass per class and layer, ``[models, classes, layers]`` (for :func:`layer_peaks`).
    """
    labels = np.asarray(labels)
    n = len(labels)
    uses = [np.asarray(m["test_idx"]) if held_out_only else np.arange(n) for m in models]
    rows_needed = np.unique(np.concatenate(uses)) if uses else np.empty(0, dtype=np.int64)
    shape = next(iter(features.values())).shape[1:]
    sums = np.zeros((len(models), n_classes, *shape), dtype=np.float64)
    counts = np.zeros((len(models), n_classes), dtype=np.int64)
    for start in range(0, len(rows_needed), batch_size):
        rows = rows_needed[start : start + batch_size]
        heads = head_patterns(rows)
        for k, (entry, use) in enumerate(zip(models, uses, strict=True)):
            keep = np.isin(rows, use)
            if not keep.any():
                continue
            model = entry["model"]
            device = next(model.parameters()).device
            x = torch.as_tensor(
                np.asarray(features[entry["variant"].pooling][rows[keep]]),
                dtype=torch.float32,
                device=device,
            )
            sal = class_saliency(guided_gradients(model, x)).cpu()  # [b, C, L, T, T]
            weighted = (sal[:, :, :, None] * heads[keep][:, None]).amax(dim=3)  # max over heads
            y = labels[rows[keep]]
            for c in range(n_classes):
                mask = torch.as_tensor(y == c)
                if mask.any():
                    sums[k, c] += weighted[mask, c].sum(0).double().numpy()
                    counts[k, c] += int(mask.sum())
    seen = counts > 0
    per_model = np.where(
        seen[..., None, None, None], sums / np.maximum(counts, 1)[..., None, None, None], 0.0
    )
    n_models = seen.sum(0)
    maps = per_model.sum(0) / np.maximum(n_models, 1)[:, None, None, None]
    if return_per_model:
        return maps.astype(np.float32), n_models, per_model.sum((-2, -1))
    return maps.astype(np.float32), n_models


def layer_summary(
    maps: Float[np.ndarray, "classes layer seq seq"],
    classes: Sequence[str],
    prefix_len: int = 32,
) -> pd.DataFrame:
    """Tidy per class × layer: the map's mass, its share of the class's mass, its peak, and how
    the mass splits between prefix→prefix, suffix→prefix and suffix→suffix attention."""
    n_classes, n_layers, seq, _ = maps.shape
    q = np.arange(seq)[:, None]
    k = np.arange(seq)[None, :]
    regions = {
        "prefix_to_prefix": (q < prefix_len) & (k < prefix_len),
        "suffix_to_prefix": (q >= prefix_len) & (k < prefix_len),
        "suffix_to_suffix": (q >= prefix_len) & (k >= prefix_len),
    }
    rows = []
    for c in range(n_classes):
        total = maps[c].sum()
        for layer in range(n_layers):
            m = maps[c, layer]
            mass = float(m.sum())
            row = {
                "class": classes[c],
                "layer": layer,
                "mass": mass,
                "share": mass / total if total > 0 else np.nan,
                "peak": float(m.max()),
            }
            for name, region in regions.items():
                row[name] = float(m[region].sum() / mass) if mass > 0 else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


PAPER_PEAKS = {"guess": (6, 36), "recall": (36, 36)}
"""Dentan et al. on Pythia-12B: guess peaks near layer 6 of 36, recall at the last layer
(1-based layer / layers)."""


def layer_peaks(
    per_model: Float[np.ndarray, "models classes layer"],
    classes: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per class: the layer (0-based) where the CNNs' mean localization mass peaks, a 95%
    percentile-bootstrap interval of that layer over resamples of the CNNs, the spread of the
    single CNNs' peaks, and the paper's peak at the same relative depth."""
    n_models, _, n_layers = per_model.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_models, (n_boot, n_models))
    rows = []
    for c, name in enumerate(classes):
        mass = per_model[:, c]
        if not mass.any():
            continue
        boot = mass[idx].mean(1).argmax(-1)
        single = mass.argmax(-1)
        row = {
            "class": name,
            "peak_layer": int(mass.mean(0).argmax()),
            "peak_low": int(np.percentile(boot, 2.5)),
            "peak_high": int(np.percentile(boot, 97.5)),
            "cnn_peak_min": int(single.min()),
            "cnn_peak_max": int(single.max()),
            "cnns": n_models,
            "layers": n_layers,
        }
        row["relative_depth"] = (row["peak_layer"] + 1) / n_layers
        if name in PAPER_PEAKS:
            layer, total = PAPER_PEAKS[name]
            row["paper_relative_depth"] = layer / total
        rows.append(row)
    return pd.DataFrame(rows)


def top_layers(summary: pd.DataFrame, k: int = 2) -> dict[str, list[int]]:
    """The ``k`` layers holding most of each class's localization mass."""
    return {
        cls: g.nlargest(k, "share")["layer"].tolist()
        for cls, g in summary.groupby("class", sort=False)
    }
