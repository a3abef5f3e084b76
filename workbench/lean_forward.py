"""TransformerLens' forward over whole sequences, bit for bit, without its redundant work.

``HookedTransformer.forward`` runs each block's ``ln1`` three times (for the query, key and value
inputs: the same tensor when they are not split), builds its NaN guard in three passes over the
attention pattern and masks scores out of place. ``forward`` runs the same operations on the
same tensors in the same order, once: the block's own ``ln1``/``ln2``, ``calculate_qkv_matrices``
(``hook_q``/``hook_k``/``hook_v``), ``apply_rotary`` (``hook_rot_q``/``hook_rot_k``), the scores
``q @ k / attn_scale``, the model's own causal (or local) mask, ``hook_attn_scores``, softmax, the
NaN guard (only when a NaN is there), ``hook_pattern``, ``pattern @ v``, ``hook_z``, the output
projection (``W_O`` laid out as TransformerLens lays it out: half-precision kernels round by
layout), ``hook_attn_out``, ``apply_mlp`` and the residual hooks. Every hook point of a block
fires with the same tensor, except ``ln1``'s own, which fire once instead of three times. The
stream is bit-identical to TransformerLens' in float32, bfloat16 and float16 (tested, with hooks
that rewrite activations, on GPT-NeoX, GPT-Neo and GPT-2 blocks).

``supports`` says where: the model features ``workbench.fast_step`` reproduces, global or local
causal attention without grouped keys, and no attention mask (TransformerLens masks pad tokens
itself when the tokenizer pads on the left; those models take its own forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench import fast_step


def supports(model: HookedTransformer) -> bool:
    """Whether ``forward`` is TransformerLens' forward, bit for bit, on this model."""
    cfg = model.cfg
    grouped = cfg.n_key_value_heads is not None and cfg.n_key_value_heads != cfg.n_heads
    plain = not (cfg.use_attention_sinks or cfg.use_logn_attn or cfg.use_split_qkv_input)
    left = model.tokenizer is not None and model.tokenizer.padding_side == "left"
    return fast_step.supports(model) and not grouped and plain and not left  # left: pads masked


def forward(
    model: HookedTransformer,
    inputs: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_model"],
    start: int | None = None,
    first: int = 0,
) -> Float[Tensor, "batch out d_model"]:
    """The residual stream after the last block: from the tokens (``start`` None) or from the
    stream entering block ``start``, as ``model(inputs, start_at_layer=start,
    stop_at_layer=n_layers)`` computes it.

    ``first > 0`` returns positions ``first …`` only, and the last block computes only what they
    need: keys and values at every position, queries, attention output and MLP from ``first`` on.
    Its hook points from ``hook_q`` on (queries, scores, pattern, z, attention output, ln2, MLP,
    resid_post) then see those positions only; the callers (``workbench.passes``) ask for it only
    when the hooks there are the engine's own (``workbench.interventions`` handles it). The
    positions' values equal the untrimmed forward's up to the rounding of matrix products on fewer
    rows."""
    cfg = model.cfg
    if start is None:
        resid, *_ = model.input_to_embed(inputs)
        start = 0
    else:
        resid = inputs
    blocks = model.blocks[start:]
    for i, block in enumerate(blocks):
        resid = block.hook_resid_pre(resid)
        offset = first if i == len(blocks) - 1 else 0
        attn_out = block.hook_attn_out(_attention(block.attn, block.ln1(resid), offset))
        resid = resid[:, offset:]
        if cfg.attn_only:
            resid = block.hook_resid_post(resid + attn_out)
        elif cfg.parallel_attn_mlp:
            mlp_out = block.apply_mlp(block.ln2(resid))
            resid = block.hook_resid_post(resid + attn_out + mlp_out)
        else:
            mid = block.hook_resid_mid(resid + attn_out)
            resid = block.hook_resid_post(mid + block.apply_mlp(block.ln2(mid)))
    return resid


def _attention(
    attn, x: Float[Tensor, "batch pos d_model"], first: int = 0
) -> Float[Tensor, "batch out d_model"]:
    """The attention output at positions ``first …`` (keys and values from every position)."""
    b, t = x.shape[:2]
    q, k, v = attn.calculate_qkv_matrices(x[:, first:] if first else x, x, x)
    if attn.cfg.positional_embedding_type == "rotary":
        q = attn.hook_rot_q(attn.apply_rotary(q, first))
        k = attn.hook_rot_k(attn.apply_rotary(k, 0))
    scores = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)).div_(attn.attn_scale)  # in place
    hidden = ~attn._make_causal_mask(t - first, t, first, scores.device)
    scores = attn.hook_attn_scores(scores.masked_fill_(hidden, attn.IGNORE.item()))
    pattern = F.softmax(scores, dim=-1)
    if pattern.isnan().any():  # TransformerLens' guard, one pass instead of three when not needed
        pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    pattern = attn.hook_pattern(pattern).to(device=v.device, dtype=v.dtype)
    z = attn.hook_z((pattern @ v.transpose(1, 2)).transpose(1, 2))
    w_o = fast_step.out_weight(attn)  # TL's layout: same kernel
    return F.linear(z.reshape(b, t - first, -1).to(w_o.dtype), w_o, attn.b_O)
