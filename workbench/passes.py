"""Forward passes that share the clean residual stream below a short-circuited block.

Short-circuiting block i changes nothing below it, so a sweep over interventions runs the clean
model once per batch, keeps the residual stream entering each block it will need
(``blocks.<i>.hook_resid_pre``), and starts every intervened pass at its lowest intervened block
with TransformerLens' ``start_at_layer``. A sweep over every block alone then costs
Σ_i (L − i) / L ≈ (L + 1) / 2 block-passes instead of L full passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench.interventions import Hook, ShortCircuit


def clean_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    keep_blocks: Iterable[int],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    extra_hooks: list[Hook] | None = None,
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[int, Float[Tensor, "batch pos d_model"]]]:
    """Clean logits, and the residual stream entering each block in ``keep_blocks``."""
    kept: dict[int, Tensor] = {}

    def keep(block: int) -> Callable:
        def hook(resid: Tensor, hook) -> None:
            kept[block] = resid.detach()

        return hook

    hooks = [(f"blocks.{b}.hook_resid_pre", keep(b)) for b in sorted(set(keep_blocks))]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks + (extra_hooks or [])):
        logits = model(tokens, attention_mask=attention_mask)
    return logits, kept


def intervened_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    intervention: ShortCircuit,
    resid_pre: dict[int, Float[Tensor, "batch pos d_model"]],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    extra_hooks: list[Hook] | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits under ``intervention``, starting from the clean stream at its lowest block.

    ``resid_pre`` must hold the lowest intervened block (from ``clean_pass``); a clean
    intervention (no blocks) runs the full model.
    """
    hooks = intervention.hooks(model) + (extra_hooks or [])
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        if intervention.is_clean:
            return model(tokens, attention_mask=attention_mask)
        start = intervention.blocks[0]
        if start not in resid_pre:
            raise KeyError(
                f"the clean pass did not keep the residual stream entering block {start}"
            )
        return model(
            resid_pre[start], start_at_layer=start, tokens=tokens, attention_mask=attention_mask
        )
