"""The mathematics of the layer-difference bounds (design note ``bounds.md``; docs/bounds.md).

Everything here is about one short-circuited block i and the residual streams x (clean) and
x' (short-circuited), Δ_l = x'_l − x_l, per token t: ‖Δ_{l,t}‖₂. The derivation, step by step
(docs/bounds.md has the same text with more words):

**LayerNorm, folded.** N(x) = γ ⊙ n(x) + β with n(x) = (x − mean x)/σ(x), σ(x) = √(c(x)²/d + eps),
c(x) = ‖x − mean x‖ (the centred norm). The Jacobian of n is (P − c cᵀ/(dσ²))/σ with P = I − 11ᵀ/d;
its eigenvalues are 0 (along 1), eps/σ³ ≤ 1/σ (along c) and 1/σ (else), so
‖n(x') − n(x)‖ ≤ ‖Δ‖ / min_seg σ. Since c is a seminorm, along the segment x + τΔ, τ∈[0,1],
c ≥ c(x) − c(Δ) ≥ c(x) − ‖Δ‖, hence

    ε̃ := ‖n(x') − n(x)‖ ≤ min( ‖Δ‖ / √(max(0, c(x) − ‖Δ‖)²/d + eps),  2√d )          (LN)

(‖n‖ < √d gives the cap). Any matrix W read after the LayerNorm sees (n' − n) diag(γ) W and
n' − n is centred, so its gain is ‖P diag(γ) W‖₂ ("γ folded", tighter than ‖γ‖_∞‖W‖₂); β and
the biases cancel in every difference.

**MLP.** F(u) = φ(u W_in + b_in) W_out + b_out, |φ'| ≤ g' (1.12891 exact GELU, 1.12900 tanh GELU,
1 ReLU; checked numerically in the tests), so ‖ΔF_t‖ ≤ L_F ε̃_t with
L_F = ‖W_out‖₂ · g' · ‖P diag(γ₂) W_in‖₂.

**Attention, one head h, query t, keys s ∈ W(t)** (causal, and t − w < s for a local window w).
With ṽ_s = v_s W_O (the part that does not cancel) and Σ_s a_ts = Σ_s a'_ts = 1:

    A'_t − A_t = Σ_s a'_ts (ṽ'_s − ṽ_s) + Σ_s (a'_ts − a_ts) ṽ_s.

First term ≤ ‖M_VO‖₂ · max_{s∈W(t)} ε̃_s with M_VO = P diag(γ₁) W_V W_O. Second term: a' − a has
zero sum, so its positive and negative parts each have mass ‖a' − a‖₁/2 and the term is
(‖a' − a‖₁/2)·(difference of two convex combinations of the ṽ_s), hence ≤ ‖a' − a‖₁ · D_t with
D_t = ½ diam{ṽ_s : s ∈ W(t)} — clean values only. The softmax Jacobian diag(a) − a aᵀ maps
ℓ∞ to ℓ1 with norm ≤ 1 (Σ_s a_s |x_s − a·x| ≤ (max x − min x)/2 by Popoviciu), so along the
segment of scores ‖a' − a‖₁ ≤ max_s |z'_ts − z_ts| =: Z_t, and always ‖a' − a‖₁ ≤ 2.
Scores z_ts = q_t·k_s / scale with q = R_t(u W_Q + b_Q), k = R_s(u W_K + b_K), R the rotary map
(norm ρ ≥ 1 measured on the model's own sin/cos buffers, ρ = 1 without rotary):
z' − z = (q'_t − q_t)·k'_s + q_t·(k'_s − k_s), so

    Z_t ≤ max_{s∈W(t)} (ρ‖M_Q‖ ε̃_t ‖k'_s‖ + ‖q_t‖ ρ‖M_K‖ ε̃_s) / scale,
    ‖k'_s‖ ≤ min(‖k_s‖ + ρ‖M_K‖ ε̃_s, K_max),

    ‖ΔA_t‖ ≤ Σ_h [ ‖M^h_VO‖ max_{s∈W(t)} ε̃_s + min(2, Z^h_t) · D^h_t ].                 (ATTN)

**Blocks.** Parallel: Δ_{l+1,t} = Δ_{l,t} + ΔA_t + ΔF_t with both reading x_l (same σ, so the
same ε̃). Sequential: Δ^m_t = Δ_{l,t} + ΔA_t, then Δ_{l+1,t} = Δ^m_t + ΔF_t with F reading the
clean mid-stream m (its own c) and the bound on ‖Δ^m_t‖.

**Injection (block i).** δ_t = A_i(u)_t − A^sc_i(u)_t = Σ_h (z^h_t − v^h_t) W^h_O: computed
exactly from the clean run (‖δ_t‖), and bounded by Lemma 1: Σ_h (1 − a_tt) max_{s∈W(t)}
‖ṽ_s − ṽ_t‖. Parallel: Δ_{i+1} = −δ exactly. Sequential: ‖Δ_{i+1,t}‖ ≤ ‖δ_t‖ + L_F ε̃₂(m_t, ‖δ_t‖).

**Weight tier.** The same inequalities with every clean quantity replaced by its worst case:
σ ≥ σ_min = √eps (or a user floor), ε̃ ≤ ‖Δ‖/σ_min, ‖n‖ ≤ √d, so ‖q‖ ≤ Q_max = ρ(√d‖M_Q‖ +
‖β W_Q + b_Q‖), ‖k‖ ≤ K_max alike, D ≤ D_max = √d‖M_VO‖, (1 − a_tt) ≤ 1. This is linear in
‖Δ‖: ‖Δ_{l+1}‖ ≤ K_l ‖Δ_l‖ with K_l = 1 + Lip_A + Lip_F (parallel) or (1 + Lip_A)(1 + Lip_F)
(sequential), Lip_A = Σ_h [‖M_VO‖ + (ρ‖M_Q‖K_max + Q_max ρ‖M_K‖)/scale · D_max] / σ_min,
Lip_F = L_F / σ_min; injection Σ_h 2 D_max (× (1 + Lip_F) sequential).

**Certified ≤ weight** holds by construction: every clean ingredient is clipped at its weight
counterpart (min), all updates are monotone in the carried bound, and each certified ingredient
is then ≤ the weight one evaluated at the weight bound, by induction over layers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench.bounds_weights import LayerConsts

# ---------------------------------------------------------------- clean-run statistics


def window_mask(n_pos: int, window: int | None, device=None) -> Tensor:
    """M[t, s] = key s is visible from query t (causal, and within the local window)."""
    t = torch.arange(n_pos, device=device)
    mask = t[None, :] <= t[:, None]
    if window is not None:
        mask &= t[None, :] > t[:, None] - window
    return mask


def window_max(x: Float[Tensor, "... pos"], window: int | None) -> Float[Tensor, "... pos"]:
    """max_{s ∈ W(t)} x_s for every t (x ≥ 0)."""
    if window is None:
        return x.cummax(dim=-1).values
    padded = torch.nn.functional.pad(x, (window - 1, 0))
    return padded.unfold(-1, window, 1).amax(-1)


def centred_norm(x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos"]:
    return torch.linalg.vector_norm(x - x.mean(-1, keepdim=True), dim=-1)


def half_diameters(
    dist: Float[Tensor, "batch head pos pos"], window: int | None
) -> Float[Tensor, "batch head pos"]:
    """D_t = ½ max_{s, s' ∈ W(t)} dist[s, s'] (dist symmetric, zero diagonal)."""
    n = dist.shape[-1]
    if window is None:
        rows = dist.masked_fill(~window_mask(n, None, dist.device), 0).amax(-1)
        return 0.5 * rows.cummax(-1).values
    out = torch.empty(dist.shape[:-1], dtype=dist.dtype, device=dist.device)
    for t in range(n):
        lo = max(0, t - window + 1)
        out[..., t] = dist[..., lo : t + 1, lo : t + 1].amax((-1, -2))
    return 0.5 * out


@dataclass
class LayerStats:
    """Per-token scalars of the clean run at one block (no d_model axis)."""

    c1: Tensor | None = None  # [B, T] centred norm of x_l (LN1 input; LN2 input if parallel)
    c2: Tensor | None = None  # [B, T] centred norm of the mid stream m_l (sequential)
    xnorm: Tensor | None = None  # [B, T] ‖x_l‖
    qn: Tensor | None = None  # [B, H, T] ‖q_t‖ (after rotary)
    kn: Tensor | None = None  # [B, H, T] ‖k_s‖
    half_diam: Tensor | None = None  # [B, H, T] D_t
    self_attn: Tensor | None = None  # [B, H, T] a_tt
    injection: Tensor | None = None  # [B, T] ‖δ_t‖, exact
    injection_bound: Tensor | None = None  # [B, T] Lemma 1
    dist: Tensor | None = None  # transient [B, H, T, T]
    v: Tensor | None = None  # transient [B, T, H, d_head]


def stat_hooks(
    model: HookedTransformer, consts: list[LayerConsts], stats: list[LayerStats], nd: torch.dtype
) -> list[tuple[str, object]]:
    """Hooks collecting :class:`LayerStats` for every block during one clean forward pass."""
    rotary = model.cfg.positional_embedding_type == "rotary"
    hooks = []
    for layer, (c, st) in enumerate(zip(consts, stats, strict=True)):
        attn = model.blocks[layer].attn

        def resid_pre(x, hook, st=st):
            x = x.to(nd)
            st.c1 = centred_norm(x)
            st.xnorm = torch.linalg.vector_norm(x, dim=-1)

        def resid_mid(x, hook, st=st):
            st.c2 = centred_norm(x.to(nd))

        def q_hook(q, hook, st=st):
            st.qn = torch.linalg.vector_norm(q.to(nd), dim=-1).transpose(1, 2)

        def k_hook(k, hook, st=st):
            st.kn = torch.linalg.vector_norm(k.to(nd), dim=-1).transpose(1, 2)

        def v_hook(v, hook, st=st, c=c):
            st.v = v
            y = torch.einsum("bthe,her->bhtr", v.to(nd), c.o_us.to(nd))
            b, h, t, r = y.shape
            dist = torch.cdist(
                y.reshape(b * h, t, r),
                y.reshape(b * h, t, r),
                compute_mode="donot_use_mm_for_euclid_dist",
            ).reshape(b, h, t, t)
            st.dist = dist
            st.half_diam = half_diameters(dist, c.window)

        def pattern_hook(a, hook, st=st, c=c):
            diag = a.to(nd).diagonal(dim1=-2, dim2=-1)  # [B, H, T]
            st.self_attn = diag
            mask = window_mask(a.shape[-1], c.window, a.device)
            far = st.dist.masked_fill(~mask, 0).amax(-1)  # max_{s∈W(t)} ‖ṽ_s − ṽ_t‖
            st.injection_bound = ((1 - diag).clamp(min=0) * far).sum(1)
            st.dist = None

        def z_hook(z, hook, st=st, attn=attn):
            diff = (z - st.v).to(nd)
            delta = torch.einsum("bthe,hem->btm", diff, attn.W_O.to(nd))
            st.injection = torch.linalg.vector_norm(delta, dim=-1)
            st.v = None

        p = f"blocks.{layer}"
        hooks += [
            (f"{p}.hook_resid_pre", resid_pre),
            (f"{p}.attn.hook_{'rot_q' if rotary else 'q'}", q_hook),
            (f"{p}.attn.hook_{'rot_k' if rotary else 'k'}", k_hook),
            (f"{p}.attn.hook_v", v_hook),
            (f"{p}.attn.hook_pattern", pattern_hook),
            (f"{p}.attn.hook_z", z_hook),
        ]
        if not c.parallel:
            hooks.append((f"{p}.hook_resid_mid", resid_mid))
    return hooks


# ---------------------------------------------------------------- certified recursion


def _ln_gain(e: Tensor, c: Tensor, d: int, eps: float) -> Tensor:
    """ε̃ bound (LN): ‖n(x') − n(x)‖ given ‖Δ‖ ≤ e and the clean centred norm c: the least of
    the mean-value bound, the chord bound and 2√d (docs/bounds.md, lemma LN)."""
    sigma_seg = torch.sqrt((c - e).clamp(min=0) ** 2 / d + eps)
    u = e / torch.sqrt(c * c + d * eps)  # sin of the largest angle, where u < 1
    chord = u * torch.sqrt(2 / (1 + torch.sqrt((1 - u * u).clamp(min=0))))  # 2 sin(asin(u)/2)
    chord = torch.where(u < 1, chord * math.sqrt(d), 2 * math.sqrt(d))  # never above 2√d
    return torch.minimum(e / sigma_seg, chord)


def attention_step(
    e: Float[Tensor, "batch pos"], c: LayerConsts, st: LayerStats
) -> Float[Tensor, "batch pos"]:
    """Bound (ATTN) on ‖ΔA_t‖ given per-token bounds e_t ≥ ‖Δ_{l,t}‖ on the block's input."""
    nd = e.dtype
    eps_n = _ln_gain(e, st.c1, c.d, c.eps)  # [B, T]
    eps_bar = window_max(eps_n, c.window)  # [B, T]
    vo, qg, kg = c.vo.to(nd)[:, None], c.q.to(nd)[:, None], c.k.to(nd)[:, None]
    q_max, k_max = c.q_max.to(nd)[:, None], c.k_max.to(nd)[:, None]
    k_pert = torch.minimum(st.kn + kg * eps_n[:, None], k_max)  # [B, H, T(s)]
    q_clean = torch.minimum(st.qn, q_max)  # [B, H, T(t)]
    z = (qg * eps_n[:, None])[..., :, None] * k_pert[..., None, :] + (q_clean * kg)[
        ..., :, None
    ] * eps_n[:, None, None, :]  # [B, H, t, s]
    mask = window_mask(e.shape[-1], c.window, e.device)
    z = z.masked_fill(~mask, 0).amax(-1) / c.scale  # [B, H, T]
    half_diam = torch.minimum(st.half_diam, c.d_max.to(nd)[:, None])
    per_head = vo * eps_bar[:, None] + z.clamp(max=2.0) * half_diam
    # never looser than the head's range: both outputs are convex combinations of ṽ_s = n_s M_VO
    # + const with ‖n_s‖ ≤ √d, so they differ by at most 2√d‖M_VO‖ whatever the inputs
    return torch.minimum(per_head, 2 * math.sqrt(c.d) * vo).sum(1)


def mlp_step(e: Tensor, c: LayerConsts, centred: Tensor) -> Tensor:
    """Bound (MLP) on ‖ΔF_t‖ given e_t ≥ ‖Δ_t‖ on the LN2 input with clean centred norm c."""
    return c.mlp * _ln_gain(e, centred, c.d, c.eps)


def certified_bounds(
    consts: list[LayerConsts], stats: list[LayerStats], block: int
) -> list[Float[Tensor, "batch pos"]]:
    """Certified tier for a short-circuit at ``block``: per-token bounds for l = block+1 .. L.

    Starts from the exact ‖δ_t‖ of the clean run (and, sequential, the MLP of the block on top),
    then carries e_{l+1} = e_l + (ATTN) + (MLP) through every later block, clipping at nothing
    but the weight-tier ingredients. Never looks at the short-circuited run.
    """
    c, st = consts[block], stats[block]
    delta = st.injection
    e = delta if c.parallel else delta + mlp_step(delta, c, st.c2)
    trivial = trivial_bounds(consts, block)
    e = e.clamp(max=trivial[0])
    out = [e]
    for k, (c, st) in enumerate(
        zip(consts[block + 1 :], stats[block + 1 : len(consts)], strict=True)
    ):
        a = attention_step(e, c, st)
        if c.parallel:
            e = e + a + mlp_step(e, c, st.c1)
        else:
            em = e + a
            e = em + mlp_step(em, c, st.c2)
        e = e.clamp(max=trivial[k + 1])  # the input-free bound of the same step (min of two bounds)
        out.append(e)
    return out


def trivial_bounds(consts: list[LayerConsts], block: int) -> list[float]:
    """The input-free range bound on ‖Δ_l‖ for l = block+1 .. L (docs/bounds.md, Step 5b).

    A LayerNorm output has ‖n‖ < √d, so a block's attention output (per head a convex combination
    of ṽ_s = n_s M_VO + const) lies in a ball of radius √d Σ_h ‖M_VO‖ around a fixed point, and its
    MLP output (Lipschitz L_F in n) in one of radius √d L_F: two runs differ by at most twice that.
    Injection: ‖δ_t‖ ≤ Σ_h 2 D_t ≤ 2√d Σ_h ‖M_VO‖ (+ 2√d L_F for the sequential block's MLP,
    which reads the changed mid stream); every later block adds at most 2√d (Σ_h ‖M_VO‖ + L_F),
    parallel or sequential alike (each sub-layer's change is range-bounded on its own).
    """

    def step(c: LayerConsts) -> float:
        return 2 * math.sqrt(c.d) * (float(c.vo.sum()) + c.mlp)

    first = consts[block]
    out = [
        2 * math.sqrt(first.d) * (float(first.vo.sum()) + (0.0 if first.parallel else first.mlp))
    ]
    for c in consts[block + 1 :]:
        out.append(out[-1] + step(c))
    return out


# ---------------------------------------------------------------- Jacobian reference


def jacobian_norms(
    model: HookedTransformer,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    iters: int = 10,
    seed: int = 0,
) -> Float[Tensor, " batch"]:
    """Spectral norm of ∂x_{l+1}/∂x_l on the whole [T, d] stream of each sample, at x_l.

    Power iteration on JᵀJ with reverse mode only: Jᵀ w from ``torch.func.vjp`` of the block, and
    J v as the vjp of that (linear) map w ↦ Jᵀ w, both built once at x and replayed every
    iteration. Forward mode (``torch.func.jvp``) gives the same J v but re-runs the block with dual
    tensors every time: 1.15 s against 0.33 s for a Pythia-2.8b block on 4 × 64 tokens in float32
    (2 threads, measured). The Jacobian is block-diagonal over the batch, so each sample is
    normalised on its own. Returns ‖J v‖ for the last unit v: a lower estimate of σ_max(J) that
    converges from below. A first-order reference, not a bound: it is the ℓ2 norm on the whole
    stream, while the bounds use max over tokens of per-token ℓ2 norms.

    Half-precision models run it on a float32 copy of the block (one block at a time, at the
    half-precision stream): the block's function at their weights, without half-precision rounding
    in the iteration, and without the slow half-precision matrix products of the backward pass on
    CPUs (``workbench.weight_layout``).
    """
    block = model.blocks[layer]
    x = resid.detach()
    if x.dtype in (torch.bfloat16, torch.float16):
        block = copy.deepcopy(block).to(torch.float32)
        block.cfg.dtype = torch.float32  # the copy's own config: its LayerNorms cast to this
        x = x.float()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(block, x)  # w ↦ Jᵀ w
        _, jvp_fn = torch.func.vjp(lambda w: vjp_fn(w)[0], torch.zeros_like(x))  # v ↦ J v
        sigma = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(max(1, iters)):
            v = v / torch.linalg.vector_norm(v.double(), dim=(1, 2)).to(x)[:, None, None]
            (jv,) = jvp_fn(v)
            sigma = torch.linalg.vector_norm(jv.double(), dim=(1, 2))
            (v,) = vjp_fn(jv)
    return sigma.detach()
