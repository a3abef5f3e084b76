"""Attention features of Dentan et al. 2025 (arXiv 2508.02573): pooled attention maps per layer.

One teacher-forced pass over each 64-token sample; the attention pattern of every layer, pooled
over heads by mean or max, gives a ``[layers, 64, 64]`` tensor per sample (one CNN input channel
per layer).

Hooks on ``blocks.<l>.attn.hook_pattern`` pool over heads as the pass goes and write straight into
a preallocated ``[n, layers, seq, seq]`` buffer (in memory, or a ``.npy`` memory map on disk for
large sets, flushed after every batch), so no more than one layer's per-head pattern of one batch
is ever held. The pass stops before the unembedding (``stop_at_layer``), which the features do not
need.

In a run (:func:`stream_features`), each batch of rows is a unit of ``workbench.runner``
(:class:`FeatureJob`): it writes its rows of the run's feature files (one ``.npy`` memory map per
pooling, each unit its own region) and a part of the ``features`` table saying so, so an
interrupted extraction resumes where it stopped and ``--executor ray`` spreads the batches over
Ray tasks; the arrays are those of one uninterrupted :func:`attention_features` with the same
batch size, bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from workbench.runner import Loader, Unit, run_units, slices

log = logging.getLogger(__name__)

POOLINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": lambda pattern: pattern.mean(dim=1),
    "max": lambda pattern: pattern.amax(dim=1),
}
"""Pool a ``[batch, head, query, key]`` pattern over heads."""


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _device_of(model: HookedTransformer) -> torch.device:
    return next(model.parameters()).device


def attention_features(
    model: HookedTransformer,
    tokens: Int[np.ndarray, "n seq"] | Int[Tensor, "n seq"],
    *,
    poolings: Sequence[str] = ("mean", "max"),
    batch_size: int = 32,
    out_dir: str | Path | None = None,
    dtype: np.dtype | type = np.float32,
    progress: bool = True,
) -> dict[str, Float[np.ndarray, "n layer seq seq"]]:
    """Head-pooled attention patterns of every layer for every sample, one array per pooling.

    Args:
        model: any HookedTransformer (runs on the model's own device).
        tokens: ``[n, seq]`` token ids (the 64-token samples).
        poolings: any of ``"mean"``, ``"max"``.
        batch_size: samples per forward pass.
        out_dir: when given, each pooling streams to ``<out_dir>/attention_<pooling>.npy`` (a
            memory map, written batch by batch) and the arrays returned are read-only memory maps.
        dtype: storage dtype (float32; float16 halves the disk and memory cost).
    """
    unknown = set(poolings) - POOLINGS.keys()
    if unknown:
        raise ValueError(f"unknown pooling(s) {sorted(unknown)}; choose from {sorted(POOLINGS)}")
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    n, seq = tokens.shape
    n_layers = model.cfg.n_layers
    shape = (n, n_layers, seq, seq)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {p: feature_path(out_dir, p) for p in poolings}
        buffers = {
            p: np.lib.format.open_memmap(paths[p], mode="w+", dtype=dtype, shape=shape)
            for p in poolings
        }
    else:
        buffers = {p: np.empty(shape, dtype=dtype) for p in poolings}

    device = _device_of(model)
    current = {"rows": slice(0, 0)}  # the batch's rows in the buffers, read by the hooks

    def pool_into(layer: int) -> Callable:
        def hook(pattern: Float[Tensor, "batch head query key"], hook) -> None:
            for name in poolings:
                pooled = POOLINGS[name](pattern.float()).cpu().numpy()
                buffers[name][current["rows"], layer] = pooled

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_pattern", pool_into(layer)) for layer in range(n_layers)]
    batches = _batches(n, batch_size)
    bar = tqdm(batches, total=-(-n // batch_size), desc="attention features", disable=not progress)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for rows in bar:
            current["rows"] = rows
            model(tokens[rows].to(device), stop_at_layer=n_layers)
            for buf in buffers.values():
                if isinstance(buf, np.memmap):
                    buf.flush()
    if out_dir is None:
        return buffers
    log.info("attention features written to %s", ", ".join(map(str, paths.values())))
    return {p: np.load(path, mmap_mode="r") for p, path in paths.items()}


def load_features(out_dir: str | Path, pooling: str) -> Float[np.ndarray, "n layer seq seq"]:
    """The features :func:`attention_features` streamed to ``out_dir`` (a read-only memory map)."""
    return np.load(feature_path(out_dir, pooling), mmap_mode="r")


def feature_path(out_dir: str | Path, pooling: str) -> Path:
    return Path(out_dir) / f"attention_{pooling}.npy"


FEATURES = "features"  # the table of the rows each unit wrote


@dataclass(frozen=True, eq=False)
class FeatureJob:
    """The features of one unit (rows ``[start, stop)``, one batch): written into the feature
    files under ``out_dir`` (made by :func:`stream_features`), and a ``features`` table of the
    rows written with the sum of each row's features per pooling (float64, a fingerprint)."""

    tokens: Int[np.ndarray, "n seq"]
    out_dir: str
    poolings: tuple[str, ...] = ("mean", "max")
    dtype: str = "float16"

    def __call__(self, model: HookedTransformer, unit: Unit) -> dict[str, pd.DataFrame]:
        rows = slice(unit.start, unit.stop)
        feats = attention_features(
            model,
            self.tokens[rows],
            poolings=self.poolings,
            batch_size=len(self.tokens[rows]),
            dtype=np.dtype(self.dtype),
            progress=False,
        )
        table = pd.DataFrame({"sample": np.arange(len(self.tokens))[rows]})
        for pooling, values in feats.items():
            stored = np.load(feature_path(self.out_dir, pooling), mmap_mode="r+")
            stored[rows] = values
            stored.flush()
            del stored
            table[f"{pooling}_sum"] = values.sum(axis=(1, 2, 3), dtype=np.float64)
        return {FEATURES: table}


def stream_features(
    model: HookedTransformer,
    tokens: Int[np.ndarray, "n seq"],
    run,
    *,
    poolings: Sequence[str] = ("mean", "max"),
    batch_size: int = 32,
    model_name: str = "",
    executor: str = "serial",
    ray_address: str | None = None,
    load: Loader | None = None,
    progress: bool = False,
    dtype: str = "float16",
) -> dict[str, Float[np.ndarray, "n layer seq seq"]]:
    """:func:`attention_features` of every row into ``<run>/features/``, one unit of
    ``workbench.runner`` per batch (resumable; ``executor="ray"``: Ray tasks load
    ``model_name`` with ``load`` and write their rows on the run's shared file system), stored
    in ``dtype`` (half precision by default: 8 KiB per layer and sample). Returns read-only
    memory maps."""
    out_dir = (Path(run.path) / "features").resolve()
    n, seq = tokens.shape
    shape = (n, model.cfg.n_layers, seq, seq)
    if _make_files(out_dir, poolings, shape, np.dtype(dtype)):
        run.drop(FEATURES)  # parts of files that are gone: every row again
    name = model_name or model.cfg.model_name
    units = [Unit(name, None, (), a, b) for a, b in slices(n, batch_size)]
    run_units(
        units,
        FeatureJob(np.asarray(tokens), str(out_dir), tuple(poolings), dtype),
        tables=[FEATURES],
        run=run,
        load=load,
        preloaded={(name, None): model},  # serial only (Ray tasks load their own)
        executor=executor,
        ray_address=ray_address,
        progress=progress,
        desc="attention features",
    )
    return {p: load_features(out_dir, p) for p in poolings}


def _make_files(out_dir: Path, poolings: Sequence[str], shape: tuple, dtype: np.dtype) -> bool:
    """Create each pooling's file unless it is there with this shape and dtype; whether any
    was created."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = False
    for pooling in poolings:
        path = feature_path(out_dir, pooling)
        if path.exists():
            kept = np.load(path, mmap_mode="r")
            if kept.shape == shape and kept.dtype == dtype:
                continue
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        made = True
    return made


def head_patterns(
    model: HookedTransformer, tokens: Int[Tensor, "batch seq"]
) -> Float[Tensor, "batch layer head seq seq"]:
    """Every head's attention pattern for one small batch (for localization, batch by batch)."""
    n_layers = model.cfg.n_layers
    out: list[Tensor | None] = [None] * n_layers

    def keep(layer: int) -> Callable:
        def hook(pattern: Tensor, hook) -> None:
            out[layer] = pattern.detach().float().cpu()

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_pattern", keep(layer)) for layer in range(n_layers)]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        model(tokens.to(_device_of(model)), stop_at_layer=n_layers)
    return torch.stack(out, dim=1)
