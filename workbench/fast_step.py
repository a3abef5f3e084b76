"""A lean single-token decode step: TransformerLens' own modules and hook points, cached keys
kept rotated in preallocated buffers.

TransformerLens' KV-cached forward concatenates the whole cache and re-applies the rotary
embedding to every cached key at every step, so on a CPU a decode step costs what its context
costs, several copies over. This step computes the same function of the same weights for one new
position per row: the block's own ``ln1``/``ln2``/``apply_mlp``, the attention's own
``calculate_qkv_matrices`` (``hook_q``/``hook_k``/``hook_v``) and ``apply_rotary`` at the row's
absolute position, attention over the buffered keys and values, ``hook_z``, the output
projection, ``hook_attn_out``, then ``ln_final`` and ``unembed``. Attention-pattern and residual
hook points are skipped, so ``supports`` refuses hooks anywhere but on q, k, v, z and the
attention output (and any model feature this step does not reproduce); the engine then falls
back to TransformerLens' own cached forward.

Buffers hold, per layer, ``[rows, kv_heads, context, d_head]`` keys (already rotated: a key's
rotation depends on its own position only) and values. Attention sums in a different order than
TransformerLens' batched kernels, which moves logits by float rounding (~1e-7 relative); the
engine's tests compare every generated token with naive KV-cached generation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

_HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out")
_OFF = (
    "use_attn_result",
    "use_split_qkv_input",
    "use_attn_in",
    "use_hook_mlp_in",
    "load_in_4bit",
    "use_normalization_before_and_after",
    "use_attention_sinks",
    "use_logn_attn",
    "use_dynamic_ntk_rope",
    "use_hook_tokens",
    "ungroup_grouped_query_attention",
)
_OWN_NORMS = {"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"}


def keys_transformed(cfg) -> bool:
    """Whether TransformerLens normalizes or clips keys after ``hook_k`` (q/k norms, OLMo's
    norms, clipping) in a model of this config, so that no hook sees the keys its cache holds."""
    return bool(
        cfg.use_qk_norm or cfg.clip_qkv is not None or cfg.original_architecture in _OWN_NORMS
    )


def out_weight(attn) -> Float[Tensor, "d_model head_d_head"]:
    """``W_O`` as TransformerLens passes it to ``F.linear``: ``[d_model, (head d_head)]``
    row-major (a view under ``workbench.weight_layout``). A transposed view instead would run
    half precision through a slow kernel on CPUs and round differently from TransformerLens."""
    return attn.W_O.permute(2, 0, 1).reshape(attn.cfg.d_model, -1).contiguous()


def supports(model: HookedTransformer, hook_names: Iterable[str] = ()) -> bool:
    """Whether ``step`` computes this model's forward, with these hooks on, as TL would."""
    cfg = model.cfg
    if any(getattr(cfg, flag, False) for flag in _OFF):
        return False
    if keys_transformed(cfg) or cfg.n_devices != 1 or cfg.attention_dir != "causal":
        return False
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        return False
    if (cfg.attn_scores_soft_cap or 0) > 0 or (cfg.output_logits_soft_cap or 0) > 0:
        return False
    for name in hook_names:
        parts = name.split(".", 2)
        if len(parts) < 3 or parts[0] != "blocks" or parts[2] not in _HOOKS:
            return False
    return True


class Buffers:
    """Rotated keys and values of up to ``rows`` rows, per layer, for ``context`` positions."""

    def __init__(self, model: HookedTransformer, rows: int, context: int) -> None:
        cfg = model.cfg
        kv_heads = cfg.n_key_value_heads or cfg.n_heads
        shape = (rows, kv_heads, context, cfg.d_head)
        self.keys = [torch.empty(shape, dtype=cfg.dtype, device=cfg.device) for _ in model.blocks]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.w_o = [out_weight(block.attn) for block in model.blocks]

    def load(
        self,
        first: int,
        layer: int,
        keys: Float[Tensor, "new pos kv_head d_head"],
        values: Float[Tensor, "new pos kv_head d_head"],
    ) -> None:
        """Rows ``first …`` get these (rotated) keys and values for positions ``0 … pos − 1``."""
        rows, pos = keys.shape[:2]
        self.keys[layer][first : first + rows, :, :pos] = keys.transpose(1, 2)
        self.values[layer][first : first + rows, :, :pos] = values.transpose(1, 2)


def step(
    model: HookedTransformer, tokens: Int[Tensor, "rows 1"], buffers: Buffers, pos: int
) -> Float[Tensor, "rows vocab"]:
    """Logits after each row's token at position ``pos`` (rows 0 … n − 1 of the buffers)."""
    cfg = model.cfg
    resid = model.embed(tokens)
    if cfg.positional_embedding_type == "standard":
        resid = resid + model.pos_embed(tokens, pos)
    for layer, block in enumerate(model.blocks):
        attn_out = block.hook_attn_out(_attend(block, block.ln1(resid), buffers, layer, pos))
        if cfg.attn_only:
            resid = resid + attn_out
        elif cfg.parallel_attn_mlp:
            resid = resid + attn_out + block.apply_mlp(block.ln2(resid))
        else:
            mid = resid + attn_out
            resid = mid + block.apply_mlp(block.ln2(mid))
    if cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    return model.unembed(resid)[:, -1]


def _attend(
    block, x: Float[Tensor, "rows 1 d_model"], buffers: Buffers, layer: int, pos: int
) -> Float[Tensor, "rows 1 d_model"]:
    attn = block.attn
    n = x.shape[0]
    q, k, v = attn.calculate_qkv_matrices(x, x, x)
    if attn.cfg.positional_embedding_type == "rotary":
        q = attn.apply_rotary(q, pos)
        k = attn.apply_rotary(k, pos)
    keys, values = buffers.keys[layer], buffers.values[layer]
    keys[:n, :, pos] = k[:, 0]
    values[:n, :, pos] = v[:, 0]
    first = max(0, pos - attn.cfg.window_size + 1) if attn.attn_type == "local" else 0
    keys, values = keys[:n, :, first : pos + 1], values[:n, :, first : pos + 1]
    kv_heads, d_head = keys.shape[1], keys.shape[3]
    grouped = q[:, 0].reshape(n, kv_heads, -1, d_head)  # query head h reads kv head h // group
    scores = grouped @ keys.transpose(-1, -2) / attn.attn_scale
    z = (F.softmax(scores, dim=-1) @ values).reshape(n, 1, -1, d_head)
    z = attn.hook_z(z)
    return F.linear(z.reshape(n, 1, -1), buffers.w_o[layer], attn.b_O)
