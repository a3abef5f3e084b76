"""The segment tier: the certified recursion restricted to where the two runs actually are.

The certified tier (``workbench.bounds_math``) knows only the clean run, so it must take the
worst case of two things that decide its size: the smallest σ on the segment between x and x'
(it only knows ‖Δ‖ ≤ e, and once e ≥ c(x) the worst case is σ = √eps) and the change of the
attention pattern (once the score bound exceeds 2, ‖a' − a‖₁ ≤ 2). The segment tier reads those
two scalars off the intervened pass — per token, the exact minimum of σ on the segment
[x_{l,t}, x'_{l,t}], and per head and query the exact ‖a'_t − a_t‖₁ — and keeps everything else
of the recursion: the carried per-token bound e_{l,t} ≥ ‖Δ_{l,t}‖, the lemmas (LN), (ATTN) and
(MLP) with their weight constants, the min with the input-free range bound of each step and with
the certified tier itself. It is an *a-posteriori* bound (it needs the intervened run, so it
predicts nothing; it tells how much of the certified tier's looseness is the unknown segment and
how much the lemmas' constants), and it is valid for the same reasons:

- σ on the segment: c(x + τΔ)² = c(x)² + 2τ⟨Px, PΔ⟩ + τ²c(Δ)² is a quadratic in τ, minimised at
  τ* = clip(−⟨Px, PΔ⟩ / c(Δ)², 0, 1): σ_seg = √(c(x + τ*Δ)²/d + eps) is the exact minimum, and
  ‖n(x') − n(x)‖ ≤ ‖Δ‖ / σ_seg ≤ e / σ_seg (lemma LN with the true segment);
- attention: ‖ΔA_t‖ ≤ Σ_h ‖M_VO‖ max_{s∈W(t)} ε̃_s + ‖a'_t − a_t‖₁ D_t (the identity of (ATTN),
  now with the exact ℓ1 change of the pattern instead of its bound).

Sequential blocks need the mid stream's segment too (``resid_mid``); block i itself starts from
the exact ‖δ_t‖ as in the certified tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.bounds_math import LayerStats, trivial_bounds, window_max
from workbench.bounds_weights import LayerConsts


def segment_sigma(
    x: Float[Tensor, "batch pos d_model"], x2: Float[Tensor, "batch pos d_model"], eps: float
) -> Float[Tensor, "batch pos"]:
    """min over τ ∈ [0, 1] of σ(x + τ(x2 − x)), per token, exactly (the quadratic's minimum)."""
    d = x.shape[-1]
    xc = x - x.mean(-1, keepdim=True)
    dc = (x2 - x) - (x2 - x).mean(-1, keepdim=True)
    a = (dc * dc).sum(-1)
    b = (xc * dc).sum(-1)
    tau = torch.where(a > 0, (-b / a.clamp(min=torch.finfo(a.dtype).tiny)).clamp(0, 1), 0.0)
    c2 = ((xc + tau[..., None] * dc) ** 2).sum(-1)
    return torch.sqrt(c2 / d + eps)


@dataclass
class Segment:
    """What the segment tier reads off one intervened pass, per layer."""

    sigma1: dict[int, Tensor] = field(default_factory=dict)  # [B, T] σ_seg of x_l
    sigma2: dict[int, Tensor] = field(default_factory=dict)  # [B, T] σ_seg of m_l (sequential)
    l1: dict[int, Tensor] = field(default_factory=dict)  # [B, H, T] ‖a'_t − a_t‖₁


def _ln(e: Tensor, sigma: Tensor, d: int) -> Tensor:
    return torch.minimum(e / sigma, torch.full_like(e, 2 * math.sqrt(d)))


def segment_bounds(
    consts: list[LayerConsts],
    stats: list[LayerStats],
    seg: Segment,
    block: int,
    certified: list[Tensor],
) -> list[Float[Tensor, "batch pos"]]:
    """Per-token bounds on ‖Δ_l‖, l = block+1 .. L, from the segment quantities (module doc)."""
    c = consts[block]
    trivial = trivial_bounds(consts, block)
    delta = stats[block].injection
    e = delta if c.parallel else delta + c.mlp * _ln(delta, seg.sigma2[block], c.d)
    e = torch.minimum(e.clamp(max=trivial[0]), certified[0])
    out = [e]
    for k, c in enumerate(consts[block + 1 :], start=1):
        lay = block + k
        nd = e.dtype
        eps_n = _ln(e, seg.sigma1[lay], c.d)
        vo = c.vo.to(nd)[:, None]
        half_diam = torch.minimum(stats[lay].half_diam, c.d_max.to(nd)[:, None])
        per_head = vo * window_max(eps_n, c.window)[:, None] + seg.l1[lay] * half_diam
        a = torch.minimum(per_head, 2 * math.sqrt(c.d) * vo).sum(1)
        if c.parallel:
            e = e + a + c.mlp * eps_n
        else:
            em = e + a
            e = em + c.mlp * _ln(em, seg.sigma2[lay], c.d)
        e = torch.minimum(e.clamp(max=trivial[k]), certified[k])
        out.append(e)
    return out
