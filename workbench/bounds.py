"""Residual-stream norms under attention short-circuiting, against the layer-difference bounds.

Command::

    python -m workbench.bounds [--model NAME_OR_DIR | --models A B] [--data SET.npy] \\
        [--blocks all] [--device auto] [--dtype float32] [--out RUN_DIR]

Library::

    from workbench.bounds import compute_bounds
    tables = compute_bounds(model, tokens, blocks=range(model.cfg.n_layers))

For each short-circuited block i (the paper's intervention: block i's attention pattern becomes
the identity) and every later layer l, per sample and per token, these numbers about
Δ_l = x'_l − x_l (short-circuited minus clean residual stream):

1. **weight**: a bound from the weights alone, valid for every input (in log space:
   ``weight_log10``; its norms certified and cached, ``workbench.bounds_weights``);
2. **trivial**: the weight-only range of each block, 2√d (Σ_h ‖M_VO‖ + L_F) per block;
3. **certified**: the same recursion evaluated on the clean run's own activations (valid for this
   input; never looks at the short-circuited run), never looser than trivial step by step;
4. **segment**: a-posteriori, the certified recursion with the exact σ on each token's segment
   and the exact attention-pattern change read off the intervened pass
   (``workbench.bounds_segment``);
5. **measured**: ‖Δ_{l,t}‖ itself, with the measured per-block gain and, as a first-order
   reference, the spectral norm of each block's Jacobian at the clean point.

Per sample, ``certified_unchanged``: the greedy suffix provably cannot change (each clean
top-1/competitor gap against the certified bound on its change, ``Tracker.certificate``), and
``certified_positions``: the fraction of suffix positions whose argmax provably cannot (on
samples whose clean greedy suffix is the true one; NaN elsewhere).

The derivation is in ``workbench.bounds_math`` and docs/bounds.md. measured ≤ segment ≤
certified ≤ min(weight, trivial) must hold for every block, layer and token: float64 tolerance
1e-9 relative (the measured side also gets 1e-9·‖x_{l,t}‖ of absolute slack for rounding in the
forward pass itself), 1e-4 in float32, 1e-2 in bf16/fp16, where the model's own rounding
dominates. Violations are counted
(``violations`` column) and logged as errors.

**Same passes as the memorization scores.** The passes are those of
``workbench.memorization.sweep``: one clean teacher-forced pass per batch and one pass per block
from the clean residual stream below it. Read-only observer hooks collect scalars only: on the clean
pass, per-token centred norms, ‖q_t‖, ‖k_s‖ and ½-diameters of the values per head, ‖δ_t‖; on each
intervened pass, ‖Δ_{l,t}‖ against the clean stream of the same layer. The clean stream is held by
reference (the very tensors the engine keeps to start its intervened passes, no copy) from the
lowest swept block on, plus the final residual; all arithmetic on norms is in float32 (float64
for float64 models).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.bounds")

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench import cli
from workbench.bounds_tracker import Tracker
from workbench.commands import BoundsConfig
from workbench.interventions import CLEAN, ShortCircuit, parse_blocks
from workbench.runner import Loader, Unit, group_identity, run_units, slices, sweep_groups

log = logging.getLogger(__name__)

TABLES = ("layers", "tokens", "samples", "memorization", "jacobian")  # "layers": every unit


@dataclass(frozen=True, eq=False)
class BoundsJob:
    """The evaluation of one unit (a batch of rows, the clean model and single blocks): its rows
    of every table in ``TABLES`` (``jacobian`` on the first batch only)."""

    tokens: Int[Tensor, "n seq"]
    prefix_len: int = 32
    sigma_floor: float | None = None
    jacobian_samples: int = 4
    jacobian_iters: int = 10
    decode: bool = True
    token_table: bool = True
    model_name: str | None = None  # the rows' model (default: the unit's)

    def __call__(self, model: HookedTransformer, unit: Unit) -> dict[str, pd.DataFrame]:
        from workbench.memorization import sweep

        name = self.model_name or unit.model
        blocks = [sc.blocks[0] for sc in unit.interventions if not sc.is_clean]
        batch = self.tokens[unit.start : unit.stop]
        n_pos = self.tokens.shape[1]
        tracker = Tracker(model, blocks, self.prefix_len, batch, self.sigma_floor, n_pos)
        mem = sweep(
            model,
            batch.numpy(),
            unit.interventions,
            prefix_len=self.prefix_len,
            batch_size=len(batch),
            decode=self.decode,
            observer=tracker.observer,
            progress=False,
            model_name=name,
        )
        mem["sample"] += unit.start
        out = tracker.finish_batch(unit.start, name, self.token_table)
        out["memorization"] = mem
        if unit.start == 0 and self.jacobian_samples > 0 and self.jacobian_iters > 0 and blocks:
            out["jacobian"] = tracker.jacobian(
                self.jacobian_samples, self.jacobian_iters, unit.start, name
            )
        return out


def compute_bounds(
    model: HookedTransformer,
    tokens: Int[Tensor, "n seq"] | np.ndarray,
    blocks: Iterable[int] | None = None,
    *,
    prefix_len: int = 32,
    batch_size: int = 16,
    sigma_floor: float | None = None,
    jacobian_samples: int = 4,
    jacobian_iters: int = 10,
    decode: bool = True,
    token_table: bool = True,
    run=None,
    model_name: str = "",
    executor: str = "serial",
    ray_address: str | None = None,
    load: Loader | None = None,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """The three tiers and the memorization scores of the same passes; tidy tables by name.

    Tables: ``layers`` (block × layer × sample, max over tokens), ``tokens`` (… × token),
    ``samples`` (block × sample: KL and max |Δ log p(true token)| over the suffix, joined with the
    memorization scores), ``memorization`` (the engine's own rows), ``jacobian`` (layer × sample).
    One unit of ``workbench.runner`` per batch (resumable with ``run``; ``executor="ray"``: Ray
    tasks that load the model named ``model_name`` with ``load``).
    """
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    blocks = sorted(range(model.cfg.n_layers) if blocks is None else set(blocks))
    if not blocks:
        raise ValueError("compute_bounds needs at least one block to short-circuit")
    model_name = model_name or model.cfg.model_name
    job = BoundsJob(
        tokens, prefix_len, sigma_floor, jacobian_samples, jacobian_iters, decode, token_table
    )
    return run_bounds(
        units_for({model_name: blocks}, len(tokens), batch_size),
        job,
        run=run,
        load=load,
        preloaded={(model_name, None): model},  # serial only (Ray tasks load their own)
        executor=executor,
        ray_address=ray_address,
        progress=progress,
    )


def units_for(blocks: dict[str, Sequence[int]], n: int, batch_size: int) -> list[Unit]:
    """One unit per (model, batch of rows): the clean model and each of that model's blocks."""
    return [
        Unit(name, None, (CLEAN, *(ShortCircuit(b) for b in model_blocks)), a, b)
        for name, model_blocks in blocks.items()
        for a, b in slices(n, batch_size)
    ]


def run_bounds(units: Sequence[Unit], job: BoundsJob, **run_kw) -> dict[str, pd.DataFrame]:
    """``runner.run_units`` of the bounds' units (``run_kw``: its options), then each sample's
    memorization scores beside its logit changes."""
    tables = run_units(units, job, tables=TABLES, desc="bounds", **run_kw)
    mem = tables["memorization"]
    if not tables["samples"].empty and not mem.empty:
        keys = ["model", "intervention", "sample"]
        scores = mem[[*keys, "exact_match", "token_accuracy"]]
        samples = tables["samples"].merge(scores, on=keys, how="left")
        clean = mem[mem.intervention == CLEAN.label][["model", "sample", "exact_match"]]
        clean = clean.rename(columns={"exact_match": "clean_exact_match"})
        tables["samples"] = samples.merge(clean, on=["model", "sample"], how="left")
    return tables


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per short-circuited block: memorization scores, final-layer ‖Δ_L‖ in the tiers (median over
    samples of the max over tokens), tightness (certified / measured at the last layer: median
    and max over samples), the change in next-token log-probs, and the fraction of samples whose
    greedy suffix is certified unchanged next to the fraction whose exact match measurably
    changed."""
    layers, mem, samples = tables["layers"], tables["memorization"], tables["samples"]
    final = layers[layers.layer == layers.layer.max()].copy()
    final["tightness"] = final.certified / final.measured.where(final.measured > 0)
    final["tightness_seg"] = final.segment / final.measured.where(final.measured > 0)
    per_block = final.groupby("block").agg(
        measured=("measured", "median"),
        trivial=("trivial", "first"),
        certified=("certified", "median"),
        weight=("weight", "first"),
        weight_log10=("weight_log10", "first"),
        tightness_median=("tightness", "median"),
        tightness_max=("tightness", "max"),
        segment=("segment", "median"),
        tightness_segment=("tightness_seg", "median"),
        violations=("violations", "sum"),
    )
    per_block["violations"] = layers.groupby("block").violations.sum()
    samples = samples.assign(
        em_changed=samples.exact_match.astype(float) != samples.clean_exact_match.astype(float)
    )
    logp = samples.groupby("block").agg(
        kl=("kl", "mean"),
        max_abs_dlogp=("max_abs_dlogp", "max"),
        certified_unchanged=("certified_unchanged", "mean"),
        certified_positions=("certified_positions", "mean"),
        exact_match_changed=("em_changed", "mean"),
    )
    scores = mem.groupby("intervention").agg(
        exact_match=("exact_match", "mean"), token_accuracy=("token_accuracy", "mean")
    )
    per_block = per_block.join(logp)
    per_block.insert(
        0,
        "token_accuracy",
        [scores.token_accuracy.get(ShortCircuit(b).label) for b in per_block.index],
    )
    per_block.insert(
        0, "exact_match", [scores.exact_match.get(ShortCircuit(b).label) for b in per_block.index]
    )
    clean = pd.DataFrame(
        {
            "exact_match": [scores.exact_match.get("none")],
            "token_accuracy": [scores.token_accuracy.get("none")],
        },
        index=pd.Index(["none"]),
    )
    per_block.index = per_block.index.astype(str)
    return pd.concat([clean, per_block]).rename_axis("block")


def main(argv: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """``python -m workbench.bounds``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(BoundsConfig, execute, argv, "python -m workbench.bounds")


def execute(cfg: BoundsConfig) -> dict[str, pd.DataFrame]:
    """The command: the three tiers for every block asked for, of each model of ``--model`` /
    ``--models``; prints the summary (per model)."""
    from workbench import bounds_report
    from workbench.data import validate
    from workbench.memorization import load_inputs
    from workbench.organism import registry
    from workbench.runs import Run, check_out, default_out

    start = time.perf_counter()
    groups = sweep_groups(cfg.model, cfg.models, None)
    first = groups[0][0]
    cfg.data = cfg.data or str(registry.DEFAULT_MEMORIZED_SET)
    record = {**cli.recorded(cfg), "identity": group_identity(groups, cfg.data)}
    if not cfg.models:
        record["model"] = first
    out = Path(cfg.out or default_out("bounds", first, record))
    check_out(out, record, overwrite=cfg.overwrite)
    model, model_name, samples = load_inputs(
        first, cfg.data, prefix_len=cfg.prefix_len, device=cfg.device, dtype=cfg.dtype
    )
    tokens = samples.tokens[: cfg.max_samples]
    load = Loader(cfg.device, cfg.dtype)
    blocks = {}
    for name, _ in groups:  # each model's blocks (not empty: BoundsConfig), the data checked
        hooked = model if name == model_name else load(name, None)
        c = hooked.cfg
        tokens = validate(tokens, prefix_len=cfg.prefix_len, vocab_size=c.d_vocab, n_ctx=c.n_ctx)
        blocks[name] = parse_blocks(cfg.blocks, c.n_layers)
        del hooked
    run = Run.open(out, record, overwrite=cfg.overwrite)
    job = BoundsJob(
        torch.as_tensor(np.asarray(tokens), dtype=torch.long),
        cfg.prefix_len,
        cfg.sigma_floor,
        cfg.jacobian_samples,
        cfg.jacobian_iters,
        cfg.decode,
        cfg.token_table,
    )
    tables = run_bounds(
        units_for(blocks, len(tokens), cfg.batch_size),
        job,
        run=run,
        load=load,
        preloaded={(model_name, None): model},  # serial only (Ray tasks load their own)
        executor=cfg.executor,
        ray_address=cfg.ray_address,
        progress=bool(cfg.progress),
    )
    bounds_report.write(tables, out, f"{samples.name} ({len(tokens)} samples, {cfg.dtype})")
    sys.stdout.write(f"wall time {time.perf_counter() - start:.1f} s\n")
    return tables


if __name__ == "__main__":
    main()
