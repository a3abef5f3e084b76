"""Forward passes that share the clean residual stream below a short-circuited block.

Short-circuiting block i changes nothing below it, so a sweep over interventions runs the clean
model once per batch, keeps the residual stream entering each block it will need
(``blocks.<i>.hook_resid_pre``), and starts every intervened pass at its lowest intervened block
with TransformerLens' ``start_at_layer``. A sweep over every block alone then costs
Σ_i (L − i) / L ≈ (L + 1) / 2 block-passes instead of L full passes.

``positions`` (a slice) unembeds only those positions: the blocks run on the whole sequence,
``ln_final`` and the unembedding (the model's own modules and hook points) on the slice. A
memorization sweep needs the logits of the S suffix-predicting positions only; with a 4,096-token
vocabulary at d_model 96 the unembedding of one position costs 3.5 blocks.

The blocks run through ``workbench.lean_forward`` (TransformerLens' forward bit for bit, without
its repeated LayerNorms) wherever it supports the model and no attention mask is given, else
through the model's own forward. ``trim=True`` (with ``positions``) lets the lean forward's last
block compute queries, attention output and MLP only from ``positions.start`` on (keys and values
everywhere): only for callers whose hooks on that block are the interventions' and key/value
captures (the memorization engine without an observer); a sweep's last block then costs
(T − P + 1)/T of a block per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import apply_softcap

from workbench import lean_forward
from workbench.interventions import Hook, ShortCircuit


def clean_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    keep_blocks: Iterable[int],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    extra_hooks: list[Hook] | None = None,
    positions: slice | None = None,
    trim: bool = False,
) -> tuple[Float[Tensor, "batch out d_vocab"], dict[int, Float[Tensor, "batch pos d_model"]]]:
    """Clean logits (at ``positions``; default all), and the residual stream entering each block
    in ``keep_blocks``. ``trim``: see the module docstring."""
    kept: dict[int, Tensor] = {}

    def keep(block: int) -> Callable:
        def hook(resid: Tensor, hook) -> None:
            kept[block] = resid.detach()

        return hook

    hooks = [(f"blocks.{b}.hook_resid_pre", keep(b)) for b in sorted(set(keep_blocks))]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks + (extra_hooks or [])):
        logits = _logits(model, tokens, None, tokens, attention_mask, positions, trim)
    return logits, kept


def intervened_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    intervention: ShortCircuit,
    resid_pre: dict[int, Float[Tensor, "batch pos d_model"]],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    extra_hooks: list[Hook] | None = None,
    positions: slice | None = None,
    trim: bool = False,
) -> Float[Tensor, "batch out d_vocab"]:
    """Logits under ``intervention`` (at ``positions``; default all), starting from the clean
    stream at its lowest block.

    ``resid_pre`` must hold the lowest intervened block (from ``clean_pass``); a clean
    intervention (no blocks) runs the full model.
    """
    hooks = intervention.hooks(model) + (extra_hooks or [])
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        if intervention.is_clean:
            return _logits(model, tokens, None, tokens, attention_mask, positions, trim)
        start = intervention.blocks[0]
        if start not in resid_pre:
            raise KeyError(
                f"the clean pass did not keep the residual stream entering block {start}"
            )
        return _logits(model, resid_pre[start], start, tokens, attention_mask, positions, trim)


def _logits(
    model: HookedTransformer, inputs, start: int | None, tokens, attention_mask, positions, trim
) -> Tensor:
    """The forward from block ``start`` (None: ``inputs`` are the tokens; else the stream entering
    it), with the final norm and unembedding at ``positions`` only, when given."""
    at = {} if start is None else {"start_at_layer": start, "tokens": tokens}
    if attention_mask is None and lean_forward.supports(model):
        first = (positions.start or 0) if trim and positions is not None else 0
        resid = lean_forward.forward(model, inputs, start, first)  # TL's bits (first: its rounding)
        if first:
            positions = slice(0, None if positions.stop is None else positions.stop - first)
    elif positions is None:
        return model(inputs, attention_mask=attention_mask, **at)
    else:
        resid = model(inputs, attention_mask=attention_mask, stop_at_layer=model.cfg.n_layers, **at)
    resid = resid if positions is None else resid[:, positions].contiguous()
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    return apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap)
