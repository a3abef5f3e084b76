"""The weight tier of the layer-difference bounds: what the weights alone say.

Per block, the constants every tier reads (spectral norms of the γ-folded attention and MLP
matrices, the rotary gain, the activation's Lipschitz constant) and the weight tier itself: a gain
K_l per block and an injection bound, valid for every input. The derivation, and why the
certified tier never exceeds this one, is in ``workbench.bounds_math`` (docs/bounds.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

# sup_x |φ'(x)| per TransformerLens act_fn, rounded *up*. Exact GELU: φ'(√2) = Φ(√2) + √2·ϕ(√2)
# = 1.1289041…; the tanh approximations peak at 1.1289931… (x ≈ 1.4185). ReLU: 1.
ACT_LIPSCHITZ: dict[str, float] = {
    "gelu": 1.12891,
    "gelu_new": 1.12900,
    "gelu_fast": 1.12900,
    "gelu_pytorch_tanh": 1.12900,
    "relu": 1.0,
}


class UnsupportedModel(ValueError):
    """A model whose blocks the bounds do not cover (the message says which feature)."""


def check_supported(model: HookedTransformer) -> None:
    """Refuse, clearly, every architecture feature the derivation does not cover."""
    cfg = model.cfg
    problems = []
    if cfg.normalization_type not in ("LN", "LNPre"):
        problems.append(f"normalization {cfg.normalization_type!r} (LayerNorm only)")
    if cfg.act_fn not in ACT_LIPSCHITZ:
        problems.append(f"activation {cfg.act_fn!r} (supported: {sorted(ACT_LIPSCHITZ)})")
    if cfg.gated_mlp:
        problems.append("gated MLP")
    if cfg.attn_only:
        problems.append("attention-only blocks")
    if cfg.n_key_value_heads not in (None, cfg.n_heads):
        problems.append("grouped-query attention")
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        problems.append(f"positional embedding {cfg.positional_embedding_type!r}")
    for flag in (
        "use_qk_norm",
        "use_logn_attn",
        "use_dynamic_ntk_rope",
        "use_attention_sinks",
        "use_normalization_before_and_after",
        "use_split_qkv_input",
        "use_attn_in",
    ):
        if getattr(cfg, flag, False):
            problems.append(flag)
    if (cfg.attn_scores_soft_cap or -1) > 0:
        problems.append("attention score soft cap")
    if getattr(cfg, "clip_qkv", None) is not None:
        problems.append("clip_qkv")
    if cfg.original_architecture in ("Olmo2ForCausalLM", "Olmo3ForCausalLM"):
        problems.append("post-norm blocks")
    if problems:
        raise UnsupportedModel(
            f"the bounds do not cover this model ({cfg.model_name}): {'; '.join(problems)}. "
            "They are derived for pre-LayerNorm blocks with (optionally rotary, optionally "
            "windowed) multi-head softmax attention and a GELU/ReLU MLP, parallel or sequential."
        )


def _spec(x: Tensor) -> Tensor:
    """Spectral norm of each trailing matrix, float64."""
    return torch.linalg.matrix_norm(x.double(), ord=2)


def _fold(gamma: Tensor, w: Tensor) -> Tensor:
    """P diag(γ) W for W [..., d, k]: scale rows by γ, then centre over d (P = I − 11ᵀ/d)."""
    g = gamma.double()[:, None] * w.double()
    return g - g.mean(dim=-2, keepdim=True)


def _rotary_gain(attn, n_pos: int) -> float:
    """ρ = max(1, largest 2×2 block norm of the rotary maps at positions < n_pos).

    Exact rotations have ρ = 1; the buffers are rounded to the model dtype, so we measure.
    """
    cfg = attn.cfg
    cos = attn.rotary_cos[:n_pos].double()
    sin = attn.rotary_sin[:n_pos].double()
    r = cfg.rotary_dim
    if cfg.rotary_adjacent_pairs:
        i, j = torch.arange(0, r, 2), torch.arange(1, r, 2)
    else:
        i, j = torch.arange(r // 2), torch.arange(r // 2, r)
    blocks = torch.stack(
        [torch.stack([cos[:, i], -sin[:, i]], -1), torch.stack([sin[:, j], cos[:, j]], -1)], -2
    )
    return max(1.0, float(torch.linalg.matrix_norm(blocks, ord=2).max()))


@dataclass
class LayerConsts:
    """Weight-derived constants of one block (float64 scalars / per-head tensors)."""

    parallel: bool
    window: int | None  # local attention window w (keys t − w < s ≤ t), None for global
    scale: float  # the model's own attention-score divisor
    rho: float  # rotary gain
    eps: float
    d: int
    vo: Tensor  # [H] ‖P diag(γ₁) W_V W_O‖₂
    q: Tensor  # [H] ρ‖P diag(γ₁) W_Q‖₂
    k: Tensor  # [H] ρ‖P diag(γ₁) W_K‖₂
    q_max: Tensor  # [H] bound on ‖q_t‖
    k_max: Tensor  # [H] bound on ‖k_s‖
    d_max: Tensor  # [H] bound on D_t = ½ diam{ṽ_s}
    mlp: float  # L_F = ‖W_out‖₂ g' ‖P diag(γ₂) W_in‖₂
    o_us: Tensor  # [H, d_head, r] U·S of W_O = U S Vᵀ, so ‖x W_O‖ = ‖x U S‖
    # weight tier
    lip_a: float = math.nan
    lip_f: float = math.nan
    gain: float = math.nan  # K_l
    injection: float = math.nan  # weight bound on ‖Δ_{l+1}‖ when l is short-circuited


def layer_consts(
    model: HookedTransformer, n_pos: int, sigma_floor: float | None = None
) -> list[LayerConsts]:
    """Weight norms and the weight tier for every block, from the weights the model runs."""
    check_supported(model)
    cfg = model.cfg
    d = cfg.d_model
    sqrt_d = math.sqrt(d)
    sigma_min = max(math.sqrt(cfg.eps), sigma_floor or 0.0)
    g_act = ACT_LIPSCHITZ[cfg.act_fn]
    out = []
    with torch.no_grad():
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            ones = torch.ones(d, dtype=torch.float64, device=attn.W_Q.device)
            zeros = torch.zeros_like(ones)
            g1 = getattr(block.ln1, "w", ones)
            b1 = getattr(block.ln1, "b", zeros).double()
            g2 = getattr(block.ln2, "w", ones)
            rho = _rotary_gain(attn, n_pos) if cfg.positional_embedding_type == "rotary" else 1.0
            u, s, _ = torch.linalg.svd(attn.W_O.double(), full_matrices=False)
            o_us = u * s[:, None, :]
            vo = _spec(_fold(g1, attn.W_V) @ o_us)
            mq, mk = _spec(_fold(g1, attn.W_Q)), _spec(_fold(g1, attn.W_K))
            off_q = torch.linalg.vector_norm(
                torch.einsum("d,hde->he", b1, attn.W_Q.double()) + attn.b_Q.double(), dim=-1
            )
            off_k = torch.linalg.vector_norm(
                torch.einsum("d,hde->he", b1, attn.W_K.double()) + attn.b_K.double(), dim=-1
            )
            c = LayerConsts(
                parallel=bool(cfg.parallel_attn_mlp),
                window=cfg.window_size if attn.attn_type == "local" else None,
                scale=float(attn.attn_scale),
                rho=rho,
                eps=float(cfg.eps),
                d=d,
                vo=vo,
                q=rho * mq,
                k=rho * mk,
                q_max=rho * (sqrt_d * mq + off_q),
                k_max=rho * (sqrt_d * mk + off_k),
                d_max=sqrt_d * vo,
                mlp=float(_spec(mlp.W_out) * g_act * _spec(_fold(g2, mlp.W_in))),
                o_us=o_us,
            )
            c.lip_a = float(
                (c.vo + (c.q * c.k_max + c.q_max * c.k) / c.scale * c.d_max).sum() / sigma_min
            )
            c.lip_f = c.mlp / sigma_min
            if c.parallel:
                c.gain = 1.0 + c.lip_a + c.lip_f
                c.injection = float(2 * c.d_max.sum())
            else:
                c.gain = (1.0 + c.lip_a) * (1.0 + c.lip_f)
                c.injection = float(2 * c.d_max.sum()) * (1.0 + c.lip_f)
            out.append(c)
    return out


def weight_bounds(consts: list[LayerConsts], block: int) -> list[float]:
    """Weight tier for a short-circuit at ``block``: bounds on ‖Δ_l‖ for l = block+1 .. L."""
    bounds = [consts[block].injection]
    for c in consts[block + 1 :]:
        bounds.append(bounds[-1] * c.gain)
    return bounds
