"""Memorization under short-circuiting: per-sample metrics over every intervention, as a run.

Library::

    from workbench.memorization import sweep
    df = sweep(model, samples, [CLEAN, *single_block_sweep(range(L))], prefix_len=32)

Command::

    python -m workbench.memorization --model NAME_OR_DIR --data SET.npy --prefix-len 32 \\
        --batch-size 64 --blocks all --out runs/mem

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from workbench import cli
from workbench.commands import MemorizationConfig
from workbench.cost import Cost
from workbench.data import SampleSet, load_samples, validate
from workbench.decode import BatchResult, Observer, evaluate_batch
from workbench.interventions import ShortCircuit, interventions_from

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


def _rows(
    res: BatchResult, sc: ShortCircuit, order: int, first: int, suffix: np.ndarray, meta: dict
) -> pd.DataFrame:
    n, s = suffix.shape
    gen = res.generated.numpy() if res.generated is not None else None
    k = res.first_mismatch.numpy()
    return pd.DataFrame(
        {
            "model": meta.get("model", ""),
            "dataset": meta.get("dataset", ""),
            "order": order,
            **sc.columns(),
            "sample": np.arange(first, first + n),
            "exact_match": k == s,
            "token_accuracy": (gen == suffix).mean(1) if gen is not None else np.nan,
            "completion_entropy": res.completion_entropy.numpy().astype(np.float64),
            "longest_match": k.astype(np.int64),
            "suffix_nll": res.suffix_nll.numpy().astype(np.float64),
            "generated": list(gen) if gen is not None else None,
            "tf_margin": res.margin.numpy().astype(np.float64),
        }
    )[COLUMNS]


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
    cost: Cost | None = None,
    decode_rows: int = 512,
    chunk_rows: int | None = None,
    lean: bool | None = None,
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
            (intervention, batch) units a resumed run already has.
        run: a ``workbench.runs.Run``; finished (intervention, batch) units are skipped and each
            new one is saved as soon as it is done.
        cost: accumulates forward calls and position-blocks (for benchmarks).
        decode_rows: how many diverging rows (of several interventions) share decoding steps;
            bounds memory (see ``workbench.decode.evaluate_batch``).
        chunk_rows: how many of those rows each sequential decode step carries (default: all).
        lean: decode steps through ``workbench.fast_step`` (default: where it supports the
            model) or TransformerLens' KV-cached forward (False).
    """
    if isinstance(samples, SampleSet):
        dataset_name = dataset_name or samples.name
        tokens = samples.tokens
    else:
        tokens = samples.cpu().numpy() if isinstance(samples, torch.Tensor) else samples
    tokens = validate(
        tokens, prefix_len=prefix_len, vocab_size=model.cfg.d_vocab, n_ctx=model.cfg.n_ctx
    )
    interventions = list(dict.fromkeys(interventions))
    for sc in interventions:
        sc.validate(model)
    meta = {"model": model_name or model.cfg.model_name, "dataset": dataset_name}
    order = {sc: i for i, sc in enumerate(interventions)}
    starts = range(0, len(tokens), batch_size)
    frames: list[pd.DataFrame] = []
    bar = tqdm(
        total=len(starts) * len(interventions),
        disable=not progress,
        desc="memorization",
        unit="unit",
    )
    for b, first in enumerate(starts):
        pending = [sc for sc in interventions if run is None or not run.has(TABLE, _key(sc, b))]
        bar.update(len(interventions) - len(pending))
        if not pending:
            continue
        batch = tokens[first : first + batch_size]
        results = evaluate_batch(
            model,
            torch.from_numpy(batch),
            pending,
            prefix_len=prefix_len,
            decode=decode,
            observer=observer,
            batch_index=b,
            cost=cost,
            decode_rows=decode_rows,
            chunk_rows=chunk_rows,
            lean=lean,
        )
        for sc in pending:
            df = _rows(results[sc], sc, order[sc], first, batch[:, prefix_len:], meta)
            if run is not None:
                run.save(TABLE, _key(sc, b), df)
            frames.append(df)
            bar.update(1)
    bar.close()
    if run is not None:
        out = run.finish(TABLE, sort_by=["order", "sample"])
    else:
        out = pd.concat(frames, ignore_index=True).sort_values(["order", "sample"], kind="stable")
    return out.reset_index(drop=True)


def _key(sc: ShortCircuit, batch: int) -> str:
    return f"{sc.label}@{batch:06d}"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per intervention: sample count and the means of the headline metrics."""
    return (
        df.groupby(["order", "intervention"], sort=True)
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
    """The command: a run of every intervention the flags ask for; prints the summary."""
    from workbench.organism import registry
    from workbench.runs import Run, check_out, default_out, identity

    model_name = str(cfg.model or registry.DEFAULT_MODEL)
    cfg.data = cfg.data or str(registry.DEFAULT_MEMORIZED_SET)
    record = {**cli.recorded(cfg), "model": model_name, "identity": identity(model_name, cfg.data)}
    out = cfg.out or default_out("memorization", model_name, record)
    check_out(out, record, overwrite=cfg.overwrite)
    model, model_name, samples = load_inputs(
        cfg.model, cfg.data, prefix_len=cfg.prefix_len, device=cfg.device, dtype=cfg.dtype
    )
    interventions = interventions_from(
        cfg.blocks, model.cfg.n_layers, kind=cfg.kind, clean=cfg.clean
    )
    run = Run.open(out, record, overwrite=cfg.overwrite)
    tokens = samples.tokens[: cfg.max_samples]
    df = sweep(
        model,
        tokens,
        interventions,
        prefix_len=cfg.prefix_len,
        batch_size=cfg.batch_size,
        decode=cfg.decode,
        progress=bool(cfg.progress),
        run=run,
        model_name=model_name,
        dataset_name=samples.name,
    )
    table = summary(df)
    sys.stdout.write(f"{model_name} on {samples.name} ({len(tokens)} samples) → {out}\n")
    sys.stdout.write(table.to_string(float_format=lambda x: f"{x:.3f}") + "\n")
    return df


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """``python -m workbench.memorization``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(MemorizationConfig, execute, argv, "python -m workbench.memorization")
