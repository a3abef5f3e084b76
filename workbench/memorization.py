"""Memorization under short-circuiting: per-sample metrics over every intervention, as a run.

Library::

    from workbench.memorization import sweep
    df = sweep(model, samples, [CLEAN, *single_block_sweep(range(L))], prefix_len=32)

Command::

    python -m workbench.memorization --model NAME_OR_DIR --data SET.npy --prefix-len 32 \\
        --batch-size 64 --blocks all --out runs/mem

``--batch-size auto`` takes the largest batch whose peak memory (``workbench.memory.estimate``)
fits ``--max-memory`` (default: the device's free memory once the model is loaded, less 10%),
refusing in one line when one sample does not fit; the run records the batch size it resolved
to, so a rerun that resolves to the same one resumes. Every run prints its batch's estimate.

One row per (intervention, sample): model, dataset, intervention (label), kind, blocks, sample,
exact_match, token_accuracy, completion_entropy, longest_match, suffix_nll, generated (the greedy
suffix ids), tf_margin (smallest teacher-forced top-1/top-2 logit gap on the positions that decide
exact_match; see ``workbench.decode`` on near-ties). Formulas and sources: ``workbench.metrics``;
the exact, fast engine: ``workbench.decode``.

Run directory: one part per (intervention, batch), so an interrupted sweep keeps every finished
unit and rerunning the same command resumes where it stopped; ``memorization.parquet`` at the end.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.memorization")

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from transformer_lens import HookedTransformer

from workbench import cli, memory
from workbench.commands import MemorizationConfig
from workbench.cost import Cost
from workbench.data import SampleSet, load_samples, validate
from workbench.decode import BatchResult, Observer, evaluate_batch
from workbench.interventions import ShortCircuit, interventions_from
from workbench.runner import Loader, Unit, group_identity, run_units, slices, sweep_groups

log = logging.getLogger(__name__)

TABLE = "memorization"
COLUMNS = [
    "model",
    "dataset",
    "order",
    "intervention",
    "kind",
    "blocks",
    "sample",
    "exact_match",
    "token_accuracy",
    "completion_entropy",
    "longest_match",
    "suffix_nll",
    "generated",
    "tf_margin",
]
SORT = ["order", "sample"]


def _rows(
    res: BatchResult, sc: ShortCircuit, order: int, rows: np.ndarray, suffix: np.ndarray, meta: dict
) -> pd.DataFrame:
    s = suffix.shape[1]
    gen = res.generated.numpy() if res.generated is not None else None
    k = res.first_mismatch.numpy()
    return pd.DataFrame(
        {
            "model": meta.get("model", ""),
            "dataset": meta.get("dataset", ""),
            "order": order,
            **sc.columns(),
            "sample": rows,
            "exact_match": k == s,
            "token_accuracy": (gen == suffix).mean(1) if gen is not None else np.nan,
            "completion_entropy": res.completion_entropy.numpy().astype(np.float64),
            "longest_match": k.astype(np.int64),
            "suffix_nll": res.suffix_nll.numpy().astype(np.float64),
            "generated": list(gen) if gen is not None else None,
            "tf_margin": res.margin.numpy().astype(np.float64),
        }
    )[COLUMNS]


@dataclass(frozen=True, eq=False)
class MemorizationJob:
    """The evaluation of one unit (a batch of rows under a list of interventions): its rows of
    the ``memorization`` table. Plain data, shipped to Ray tasks (``workbench.runner``)."""

    tokens: Int[np.ndarray, "n seq"]
    prefix_len: int = 32
    batch_size: int = 64
    decode: bool = True
    dataset_name: str = ""
    model_name: str | None = None  # the rows' model (default: the unit's)
    sample_ids: Int[np.ndarray, " n"] | None = None  # the rows' sample column (default: row)
    observer: Observer | None = None
    cost: Cost | None = None
    decode_rows: int = 512
    chunk_rows: int | None = None
    lean: bool | None = None

    def __call__(self, model: HookedTransformer, unit: Unit) -> dict[str, pd.DataFrame]:
        for sc in unit.interventions:
            sc.validate(model)
        batch = self.tokens[unit.start : unit.stop]
        results = evaluate_batch(
            model,
            torch.from_numpy(batch),
            list(unit.interventions),
            prefix_len=self.prefix_len,
            decode=self.decode,
            observer=self.observer,
            batch_index=unit.start // self.batch_size,
            cost=self.cost,
            decode_rows=self.decode_rows,
            chunk_rows=self.chunk_rows,
            lean=self.lean,
        )
        meta = {"model": self.model_name or unit.model, "dataset": self.dataset_name}
        rows = np.arange(unit.start, unit.start + len(batch))
        if self.sample_ids is not None:
            rows = self.sample_ids[rows]
        frames = [
            _rows(results[sc], sc, order, rows, batch[:, self.prefix_len :], meta)
            for order, sc in enumerate(unit.interventions)
        ]
        df = pd.concat(frames, ignore_index=True)
        if unit.checkpoint is not None:
            df.insert(1, "checkpoint", unit.checkpoint)
        return {TABLE: df}


def units_for(
    groups: Sequence[tuple[str, int | None]],
    interventions: dict[str, Sequence[ShortCircuit]],
    n: int,
    batch_size: int,
) -> list[Unit]:
    """One unit per (model, checkpoint, batch), each with every intervention of its model."""
    return [
        Unit(m, c, tuple(interventions[m]), first, stop)
        for m, c in groups
        for first, stop in slices(n, batch_size)
    ]


def sweep(
    model: HookedTransformer,
    samples: SampleSet | np.ndarray | torch.Tensor,
    interventions: Sequence[ShortCircuit],
    *,
    prefix_len: int = 32,
    batch_size: int = 64,
    decode: bool = True,
    observer: Observer | None = None,
    progress: bool = True,
    run=None,
    model_name: str = "",
    dataset_name: str = "",
    sample_ids: np.ndarray | None = None,
    cost: Cost | None = None,
    decode_rows: int = 512,
    chunk_rows: int | None = None,
    lean: bool | None = None,
    executor: str = "serial",
    ray_address: str | None = None,
    load: Loader | None = None,
) -> pd.DataFrame:
    """Every metric of ``workbench.metrics`` for every (intervention, sample); a tidy table.

    Args:
        interventions: any list of ``ShortCircuit`` (the clean model is ``CLEAN``); each batch
            runs the clean model once and every intervention from the clean residual stream
            below its lowest block.
        decode: False skips the free-running decode of diverging samples (token_accuracy and
            generated become NaN/None; exact_match, longest_match, entropy and NLL stay exact).
        observer: ``observer(intervention, batch_index) -> [(hook_name, fn), ...]``, read-only
            hooks added to that intervention's teacher-forced pass on that batch (the clean
            intervention's go on the shared clean pass); e.g. norm tracking. Not called for
            batches a resumed run already has.
        run: a ``workbench.runs.Run``; finished batches (units of ``workbench.runner``) are
            skipped and each new one is saved as soon as it is done.
        sample_ids: the ``sample`` column of each row (default: its index).
        cost: accumulates forward calls and position-blocks (for benchmarks).
        decode_rows: how many diverging rows (of several interventions) share decoding steps;
            bounds memory (see ``workbench.decode.evaluate_batch``).
        chunk_rows: how many of those rows each sequential decode step carries (default: all).
        lean: decode steps through ``workbench.fast_step`` (default: where it supports the
            model) or TransformerLens' KV-cached forward (False).
        executor: ``"serial"`` (this process, ``model``) or ``"ray"`` (Ray tasks at
            ``ray_address`` that load ``model_name`` with ``load``; see ``workbench.runner``).
    """
    if isinstance(samples, SampleSet):
        dataset_name = dataset_name or samples.name
        tokens = samples.tokens
    else:
        tokens = samples.cpu().numpy() if isinstance(samples, torch.Tensor) else samples
    tokens = validate(
        tokens, prefix_len=prefix_len, vocab_size=model.cfg.d_vocab, n_ctx=model.cfg.n_ctx
    )
    name = model_name or model.cfg.model_name
    job = MemorizationJob(
        tokens,
        prefix_len,
        batch_size,
        decode,
        dataset_name,
        sample_ids=sample_ids,
        observer=observer,
        cost=cost,
        decode_rows=decode_rows,
        chunk_rows=chunk_rows,
        lean=lean,
    )
    interventions = list(dict.fromkeys(interventions))
    units = units_for([(name, None)], {name: interventions}, len(tokens), batch_size)
    tables = run_units(
        units,
        job,
        tables=[TABLE],
        run=run,
        sort_by={TABLE: SORT},
        load=load,
        preloaded={(name, None): model},  # serial only (Ray tasks load their own)
        executor=executor,
        ray_address=ray_address,
        progress=progress,
        desc="memorization",
    )
    return tables[TABLE]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per intervention (and model and checkpoint, in a sweep over several): sample count and
    the means of the headline metrics."""
    by = [c for c in ("model", "checkpoint") if c in df and (c != "model" or df[c].nunique() > 1)]
    return (
        df.groupby([*by, "order", "intervention"], sort=True)
        .agg(
            n=("sample", "size"),
            exact_match=("exact_match", "mean"),
            token_accuracy=("token_accuracy", "mean"),
            entropy=("completion_entropy", "mean"),
        )
        .reset_index(level="order", drop=True)
    )


def load_inputs(
    model: str | None,
    data: str | Path,
    *,
    prefix_len: int,
    device: str = "auto",
    dtype: str = "float32",
) -> tuple[HookedTransformer, str, SampleSet]:
    """What every command over a memorized-sample set starts with (memorization, bounds,
    taxonomy): the model, the name its rows carry, and the set checked against its vocabulary."""
    from workbench.models import load_model
    from workbench.organism import registry

    hooked = load_model(model, device=device, dtype=dtype)
    name = str(model or registry.DEFAULT_MODEL or hooked.cfg.model_name)
    samples = load_samples(
        data, tokenizer=hooked.tokenizer, prefix_len=prefix_len, vocab_size=hooked.cfg.d_vocab
    )
    return hooked, name, samples


def execute(cfg: MemorizationConfig) -> pd.DataFrame:
    """The command: a run of every intervention the flags ask for, for each model and training
    checkpoint of the sweep; prints the summary."""
    from workbench.organism import registry
    from workbench.runs import Run, check_out, default_out

    began = time.perf_counter()
    groups = sweep_groups(cfg.model, cfg.models, cfg.checkpoints)
    first = groups[0][0]
    cfg.data = cfg.data or str(registry.DEFAULT_MEMORIZED_SET)

    def record_and_out() -> tuple[dict, str]:  # checked before any work the batch size allows
        record = {**cli.recorded(cfg), "identity": group_identity(groups, cfg.data)}
        if not cfg.models:
            record["model"] = first
        out = cfg.out or default_out("memorization", first, record)
        check_out(out, record, overwrite=cfg.overwrite)
        return record, out

    auto = cfg.batch_size == "auto"
    if not auto:
        record, out = record_and_out()
    model, model_name, samples = load_inputs(
        first, cfg.data, prefix_len=cfg.prefix_len, device=cfg.device, dtype=cfg.dtype
    )
    tokens = samples.tokens[: cfg.max_samples]
    loaded = time.perf_counter()
    load = Loader(cfg.device, cfg.dtype)
    budget = cfg.max_memory or memory.available_bytes(model.cfg.device, required=auto)
    interventions, shapes, fits = {}, {}, []
    others = any(group != (model_name, None) for group in groups)  # loaded beside the first
    for name in dict.fromkeys(m for m, _ in groups):  # each model's blocks, and the data checked
        hooked = model if name == model_name else load(name, None)
        c = hooked.cfg
        tokens = validate(tokens, prefix_len=cfg.prefix_len, vocab_size=c.d_vocab, n_ctx=c.n_ctx)
        interventions[name] = interventions_from(
            cfg.blocks, c.n_layers, kind=cfg.kind, clean=cfg.clean
        )
        shapes[name] = (c, tokens.shape[1], cfg.prefix_len, interventions[name])
        if auto:
            room = budget - (memory.weight_bytes(hooked) if others else 0)
            fits.append(
                memory.fit_batch_size(
                    *shapes[name], budget_bytes=room, n_samples=len(tokens), decode=cfg.decode
                )
            )
        del hooked
    if auto:
        cfg.batch_size = min(fits)
        record, out = record_and_out()
    for name, shape in shapes.items():
        est = memory.estimate(shape[0], cfg.batch_size, *shape[1:], decode=cfg.decode)
        sys.stdout.write(f"{name}: {memory.describe(est, cfg.batch_size, budget, auto=auto)}\n")
        log.info("memory estimate of one batch of %s: %s", name, est)
    run = Run.open(out, record, overwrite=cfg.overwrite)
    job = MemorizationJob(tokens, cfg.prefix_len, cfg.batch_size, cfg.decode, samples.name)
    df = run_units(
        units_for(groups, interventions, len(tokens), cfg.batch_size),
        job,
        tables=[TABLE],
        run=run,
        sort_by={TABLE: SORT},
        load=load,
        preloaded={(model_name, None): model} if cfg.executor == "serial" else None,
        executor=cfg.executor,
        ray_address=cfg.ray_address,
        progress=bool(cfg.progress),
        desc="memorization",
    )[TABLE]
    table = summary(df)
    names = ", ".join(dict.fromkeys(m for m, _ in groups))
    sys.stdout.write(f"{names} on {samples.name} ({len(tokens)} samples) → {out}\n")
    sys.stdout.write(table.to_string(float_format=lambda x: f"{x:.3f}") + "\n")
    imports = "" if cli.STARTED is None else f"imports {began - cli.STARTED:.1f} s, "
    sys.stdout.write(
        f"start-up: {imports}model and data {loaded - began:.1f} s; "
        f"sweep {time.perf_counter() - loaded:.1f} s\n"
    )
    return df


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """``python -m workbench.memorization``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(MemorizationConfig, execute, argv, "python -m workbench.memorization")
