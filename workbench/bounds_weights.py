"""The weight tier of the layer-difference bounds: what the weights alone say.

Per block, the constants every tier reads (spectral norms of the γ-folded attention and MLP
matrices, the rotary gain, the activation's Lipschitz constant) and the weight tier itself: a gain
K_l per block and an injection bound, valid for every input. The derivation, and why the
certified tier never exceeds this one, is in ``workbench.bounds_math`` (docs/bounds.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench.spectral import Workspace, factored_norm, gram_factor, log_sum, spectral_norm

log = logging.getLogger("workbench.bounds")

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


def _fold(gamma: Tensor, w: Tensor) -> Tensor:
    """P diag(γ) W for W [..., d, k]: scale rows by γ, then centre over d (P = I − 11ᵀ/d)."""
    return _fold_into(torch.empty(w.shape, dtype=torch.float64, device=w.device), w, gamma)


def _fold_into(out: Tensor, w: Tensor, gamma: Tensor) -> Tensor:
    """:func:`_fold` written into the float64 buffer ``out`` (a copy, then in place)."""
    out.copy_(w).mul_(gamma.double()[:, None])
    return out.sub_(out.mean(dim=-2, keepdim=True))


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
    o_us: Tensor  # [H, d_head, d_head] L, W_O W_Oᵀ ≼ L Lᵀ: ‖x W_O‖ ≤ ‖x L‖ (equal to ~1e-13)
    # weight tier
    lip_a: float = math.nan
    lip_f: float = math.nan
    gain: float = math.nan  # K_l (inf if it overflows: log_gain is the number)
    injection: float = math.nan  # weight bound on ‖Δ_{l+1}‖ when l is short-circuited
    log_gain: float = math.nan
    log_injection: float = math.nan


CACHE_VERSION = 2  # bump when the cached norms or how they are computed change


def cache_dir() -> Path:
    """Where the weight norms are cached: ``$WORKBENCH_BOUNDS_CACHE``, else ``bounds/`` in the
    workbench cache (``$WORKBENCH_CACHE``, default ``~/.cache/workbench``)."""
    from workbench.organism.sources import cache_root

    return Path(os.environ.get("WORKBENCH_BOUNDS_CACHE") or cache_root() / "bounds")


def weights_key(model: HookedTransformer) -> str:
    """blake2b of every tensor the constants read (and the settings they depend on): one digest
    per tensor, on a thread per core (hashlib releases the GIL), combined in a fixed order."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = model.cfg
    parts = []
    for block in model.blocks:
        attn = block.attn
        parts += [attn.W_Q, attn.W_K, attn.W_V, attn.W_O, attn.b_Q, attn.b_K]
        parts += [block.mlp.W_in, block.mlp.W_out]
        parts += [
            getattr(ln, n) for ln in (block.ln1, block.ln2) for n in ("w", "b") if hasattr(ln, n)
        ]

    def digest(t: Tensor) -> bytes:
        t = t.detach().cpu().contiguous()
        h = hashlib.blake2b(repr((str(t.dtype), tuple(t.shape))).encode(), digest_size=20)
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        return h.digest()

    h = hashlib.blake2b(digest_size=20)
    h.update(repr((CACHE_VERSION, cfg.d_model, cfg.n_heads, cfg.act_fn)).encode())
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        for d in pool.map(digest, parts):
            h.update(d)
    return h.hexdigest()


def _block_norms(block, work: Workspace | None = None) -> dict[str, Tensor]:
    """The weight norms of one block (certified upper bounds, ``workbench.spectral``).

    Every float64 copy of a weight is written, folded, into a buffer of ``work`` (reused from
    block to block); the norms read it there (``overwrite``: no further copy)."""
    work = work or Workspace()
    attn, mlp = block.attn, block.mlp
    heads, d, e = attn.W_Q.shape
    dev = attn.W_Q.device
    ones = torch.ones(d, dtype=torch.float64, device=dev)
    b1 = getattr(block.ln1, "b", torch.zeros_like(ones)).double()
    g1 = getattr(block.ln1, "w", ones)
    qkv = work.take("qkv", (3, heads, d, e), dev)
    for buf, w in zip(qkv, (attn.W_Q, attn.W_K, attn.W_V), strict=True):
        _fold_into(buf, w, g1)
    off_q, off_k = (
        torch.linalg.vector_norm(torch.stack([b1 @ x.double() for x in w]) + b.double(), dim=-1)
        for w, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K))
    )
    mq, mk = spectral_norm(qkv[:2], work, overwrite=True)
    vo = factored_norm(qkv[2], gram_factor(attn.W_O, work), overwrite=True)
    w_in = work.take("mlp", tuple(mlp.W_in.shape), dev)
    _fold_into(w_in, mlp.W_in, getattr(block.ln2, "w", ones))
    n_in = spectral_norm(w_in, work, overwrite=True)
    w_out = work.take("mlp", tuple(mlp.W_out.shape), dev).copy_(mlp.W_out)
    n_out = spectral_norm(w_out, work, overwrite=True)
    return dict(vo=vo, mq=mq, mk=mk, off_q=off_q, off_k=off_k, w_out=n_out, w_in=n_in)


def weight_norms(model: HookedTransformer, cache: bool = True) -> list[dict[str, Tensor]]:
    """Every block's norms, cached per model under :func:`cache_dir` keyed by the weights' hash."""
    path = cache_dir() / f"{weights_key(model)}.pt" if cache else None
    if path is not None and path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError):
            log.warning("ignoring an unreadable cache file %s", path)
    start, work = time.perf_counter(), Workspace()
    with torch.no_grad():
        norms = [_block_norms(block, work) for block in model.blocks]
    norms = [{k: v.cpu() for k, v in n.items()} for n in norms]
    log.info(
        "weight constants of %d blocks: %.1f s (cached for these weights from now on)",
        len(norms),
        time.perf_counter() - start,
    )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(norms, tmp)
            tmp.replace(path)
        except OSError as err:
            log.warning("could not cache the weight norms in %s: %s", path, err)
    return norms


def layer_consts(
    model: HookedTransformer, n_pos: int, sigma_floor: float | None = None, cache: bool = True
) -> list[LayerConsts]:
    """Weight norms and the weight tier (in log space) for every block, from the weights the
    model runs; the norms come from the cache when these weights were seen before."""
    check_supported(model)
    cfg = model.cfg
    d = cfg.d_model
    sqrt_d = math.sqrt(d)
    log_sigma = math.log(max(math.sqrt(cfg.eps), sigma_floor or 0.0))
    g_act = ACT_LIPSCHITZ[cfg.act_fn]
    out = []
    for block, nm in zip(model.blocks, weight_norms(model, cache), strict=True):
        attn = block.attn
        dev = attn.W_Q.device
        rho = _rotary_gain(attn, n_pos) if cfg.positional_embedding_type == "rotary" else 1.0
        vo, mq, mk = (nm[k].to(dev) for k in ("vo", "mq", "mk"))
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
            q_max=rho * (sqrt_d * mq + nm["off_q"].to(dev)),
            k_max=rho * (sqrt_d * mk + nm["off_k"].to(dev)),
            d_max=sqrt_d * vo,
            mlp=float(nm["w_out"] * g_act * nm["w_in"]),
            o_us=gram_factor(attn.W_O),
        )
        # log space: each term is a product of finite norms, the sums are log-sum-exps
        heads = [
            math.log(float(v)) if v > 0 else -math.inf
            for v in (c.vo + (c.q * c.k_max + c.q_max * c.k) / c.scale * c.d_max)
        ]
        log_lip_a = log_sum(heads) - log_sigma
        log_lip_f = (math.log(c.mlp) if c.mlp > 0 else -math.inf) - log_sigma
        log_inj = math.log(2 * float(c.d_max.sum())) if float(c.d_max.sum()) > 0 else -math.inf
        if c.parallel:
            c.log_gain = log_sum([0.0, log_lip_a, log_lip_f])
            c.log_injection = log_inj
        else:
            c.log_gain = log_sum([0.0, log_lip_a]) + log_sum([0.0, log_lip_f])
            c.log_injection = log_inj + log_sum([0.0, log_lip_f])
        c.lip_a, c.lip_f = _exp(log_lip_a), _exp(log_lip_f)
        c.gain, c.injection = _exp(c.log_gain), _exp(c.log_injection)
        out.append(c)
    return out


def _exp(x: float) -> float:
    return math.exp(x) if x < 709 else math.inf


def weight_bounds(consts: list[LayerConsts], block: int) -> list[float]:
    """Weight tier for a short-circuit at ``block``: natural logs of the bounds on ‖Δ_l‖ for
    l = block+1 .. L (finite at any depth; ``math.exp`` of them may overflow to inf)."""
    logs = [consts[block].log_injection]
    for c in consts[block + 1 :]:
        logs.append(logs[-1] + c.log_gain)
    return logs
