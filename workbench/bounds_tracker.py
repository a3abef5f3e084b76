"""The observer of ``workbench.bounds``: hooks on the memorization engine's passes that collect
the clean run's statistics and the measured ‖Δ_l‖, turned into the three tiers per batch (see
``workbench.bounds`` and ``workbench.bounds_math``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from workbench import bounds_math as bm
from workbench import bounds_weights as bw
from workbench.bounds_segment import Segment, segment_bounds, segment_sigma
from workbench.interventions import ShortCircuit

log = logging.getLogger("workbench.bounds")

RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def norm_dtype(model: HookedTransformer) -> torch.dtype:
    return torch.float64 if model.cfg.dtype == torch.float64 else torch.float32


def unembed_directions(model: HookedTransformer, cols: Tensor | slice) -> Tensor:
    """P diag(γ_f) W_U[:, cols] in float64: how the final LayerNorm's normalised output (centred,
    so only P of it matters) moves each of those logits. [d_model, len(cols)]"""
    g = model.unembed.W_U.detach()[:, cols].double()
    gamma = getattr(model.ln_final, "w", None)
    g = g if gamma is None else gamma.detach().double()[:, None] * g
    return g - g.mean(0, keepdim=True)


def unembed_column_gain(model: HookedTransformer, chunk: int = 4096) -> float:
    """G = max_j ‖P diag(γ_f) W_U[:, j]‖₂ (float64, rounded up): the gain from the final
    LayerNorm's normalised output to any one logit (columns in chunks: no float64 copy of W_U)."""
    best = 0.0
    for j in range(0, model.cfg.d_vocab, chunk):
        w = unembed_directions(model, slice(j, j + chunk))
        best = max(best, float(torch.linalg.vector_norm(w, dim=0).max()))
    return best * (1 + 1e-12)


def pairwise_safe(
    model: HookedTransformer,
    top: Int[Tensor, " n"],
    logits: Float[Tensor, "n vocab"],
    eps_n: Float[Tensor, " n"],
    slack: Float[Tensor, " n"],
    rtol: float,
    chunk: int = 4096,
) -> Bool[Tensor, " n"]:
    """Per position: no competitor b can overtake the clean top-1 a when ‖n' − n‖ ≤ eps_n.

    The gap logit_a − logit_b moves by (n' − n)·P diag(γ_f)(W_U[:, a] − W_U[:, b]) (b_U and β
    cancel, n' − n is centred), at most eps_n D_ab with D_ab = ‖w_a − w_b‖ (``unembed_directions``);
    so the argmax holds when every clean gap exceeds eps_n D_ab (with the rounding slack). D_ab ≤
    2G: never weaker than the single-gain test, and far stronger where the runner-up's direction
    is close to the top token's. D_ab² = ‖w_a‖² + ‖w_b‖² − 2 w_a·w_b in float64, plus 1e-12 of
    the squared norms for its rounding."""
    dev = logits.device
    w_a = unembed_directions(model, top.cpu()).T.to(dev)  # [n, d]
    na = (w_a * w_a).sum(-1, keepdim=True)
    ok = torch.ones(len(top), dtype=torch.bool, device=dev)
    for j in range(0, model.cfg.d_vocab, chunk):
        w = unembed_directions(model, slice(j, j + chunk)).to(dev)
        nb = (w * w).sum(0, keepdim=True)
        d2 = (na + nb - 2 * w_a @ w).clamp(min=0) + 1e-12 * (na + nb)
        need = (eps_n[:, None].double() * d2.sqrt()) * (1 + rtol) + slack[:, None].double()
        gap = (logits.gather(-1, top[:, None]) - logits[:, j : j + chunk]).double()
        own = torch.arange(j, j + w.shape[1], device=dev)[None] == top[:, None]
        ok &= ((gap > need) | own).all(-1)
    return ok


class Tracker:
    """Observer for the memorization engine's passes that turns them into the three tiers."""

    def __init__(
        self,
        model: HookedTransformer,
        blocks: Sequence[int],
        prefix_len: int,
        tokens: Int[Tensor, "batch seq"],
        sigma_floor: float | None = None,
        n_pos: int | None = None,
    ):
        self.model, self.blocks, self.prefix_len = model, sorted(blocks), prefix_len
        self.tokens = tokens  # the batch the passes run on (its suffix: the true tokens)
        self.nd = norm_dtype(model)
        self.rtol = RTOL.get(model.cfg.dtype, 1e-2)
        self.consts = bw.layer_consts(model, n_pos or model.cfg.n_ctx, sigma_floor)
        self.L = model.cfg.n_layers
        self.low = min(self.blocks) if self.blocks else self.L
        self.unembed_gain = unembed_column_gain(model)
        self._reset()

    def _reset(self) -> None:
        self.stats = [bm.LayerStats() for _ in range(self.L + 1)]  # index L: final stream
        self.clean: dict[int, Tensor] = {}  # layer -> clean x_l (references)
        self.clean_mid: dict[int, Tensor] = {}  # layer -> clean m_l (sequential blocks)
        self.clean_pattern: dict[int, Tensor] = {}  # layer -> clean attention pattern
        self.segments: dict[int, Segment] = {}
        self.clean_lp: Tensor | None = None
        self.logits: Tensor | None = None  # [B, S, V] clean logits, suffix positions
        self.margin: Tensor | None = None  # [B, S] clean top-1 − top-2 logit, suffix positions
        self.greedy_true: Tensor | None = None  # [B] the clean argmax is the true token at all S
        self.logit_scale: Tensor | None = None  # [B] max |logit| (rounding slack)
        self.measured: dict[int, dict] = {}

    def observer(self, sc: ShortCircuit, batch_index: int) -> list:
        if sc.is_clean:
            self._reset()
            return self._clean_hooks()
        if sc.heads is not None or sc.kind != "identity" or len(sc.blocks) != 1:
            raise ValueError(f"bounds cover single-block identity short-circuits, not {sc.label}")
        return self._measure_hooks(sc.blocks[0])

    def _clean_hooks(self) -> list:
        nd, last = self.nd, self.L - 1
        hooks = bm.stat_hooks(self.model, self.consts, self.stats[: self.L], nd)

        def keep(layer):
            def hook(x, hook):
                self.clean[layer] = x

            return hook

        def final(x, hook):
            self.clean[self.L] = x
            self.stats[self.L].xnorm = torch.linalg.vector_norm(x.to(nd), dim=-1)
            self.stats[self.L].c1 = bm.centred_norm(x.to(nd))
            self.logits = logits = self._suffix_logits(x)
            self.clean_lp = torch.log_softmax(logits, dim=-1)
            top = logits.topk(min(2, logits.shape[-1]), dim=-1)
            self.margin = top.values[..., 0] - top.values[..., -1]
            true = self._true_tokens(x.device)
            self.greedy_true = (top.indices[..., 0] == true).all(-1)
            self.logit_scale = logits.abs().amax((-1, -2))

        def keep_in(store, layer):
            def hook(x, hook):
                store[layer] = x

            return hook

        hooks += [(f"blocks.{lay}.hook_resid_pre", keep(lay)) for lay in range(self.low, self.L)]
        for lay in range(self.low, self.L):  # the segment tier's clean references
            hooks.append((f"blocks.{lay}.attn.hook_pattern", keep_in(self.clean_pattern, lay)))
            if not self.consts[lay].parallel:
                hooks.append((f"blocks.{lay}.hook_resid_mid", keep_in(self.clean_mid, lay)))
        return [*hooks, (f"blocks.{last}.hook_resid_post", final)]

    def _suffix_logits(self, x: Tensor) -> Tensor:
        """The logits at the positions that predict the suffix, in the norm dtype."""
        return self.model.unembed(self.model.ln_final(x[:, self.prefix_len - 1 : -1])).to(self.nd)

    def _suffix_logprobs(self, x: Tensor) -> Tensor:
        """log p(· | context) at the positions that predict the suffix, in the norm dtype."""
        return torch.log_softmax(self._suffix_logits(x), dim=-1)

    def certificate(self, e_final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per sample: whether the greedy suffix provably cannot change, the fraction of suffix
        positions whose teacher-forced argmax provably cannot (NaN where the clean greedy suffix
        is not the true one: no certificate there), and the single-gain logit bound.

        With e_t ≥ ‖Δ_{L,t}‖ at the final stream, the final LayerNorm moves by at most ε̃_t (LN),
        and logit j by |(n' − n)·P diag(γ_f) W_U[:, j]| ≤ ε̃_t ‖P diag(γ_f) W_U[:, j]‖ ≤ ε̃_t G
        (b_U cancels). A clean top-1/top-2 margin above 2 ε̃_t G keeps the argmax at t; where it
        does not, ``pairwise_safe`` checks every competitor's own gap against ε̃_t D_ab. When the
        clean argmax is the true token at every suffix position, the clean greedy suffix *is*
        the true one and the teacher-forced contexts are the greedy ones, so the intervened
        greedy suffix is the same if the argmax holds at every suffix position.
        """
        st, c = self.stats[self.L], self.consts[-1]
        e = e_final[:, self.prefix_len - 1 : -1]
        eps_n = bm._ln_gain(e, st.c1[:, self.prefix_len - 1 : -1], c.d, float(self.model.cfg.eps))
        bound = 2 * self.unembed_gain * eps_n  # [B, S] bound on the change of any logit gap
        slack = (self.rtol * self.logit_scale[:, None]).expand_as(bound)  # the logits' rounding
        held = self.margin > bound * (1 + self.rtol) + slack
        rest = ~held & self.greedy_true[:, None]  # elsewhere no certificate is possible
        if rest.any():
            top = self.logits[rest].argmax(-1)
            held[rest] = pairwise_safe(
                self.model, top, self.logits[rest], eps_n[rest], slack[rest], self.rtol
            )
        safe = held.all(-1) & self.greedy_true
        positions = held.double().mean(-1).masked_fill(~self.greedy_true, float("nan"))
        return safe, positions, bound.amax(-1)

    def _measure_hooks(self, block: int) -> list:
        out = self.measured[block] = {}
        seg = self.segments[block] = Segment()
        nd, eps = self.nd, float(self.model.cfg.eps)

        def delta(layer):
            def hook(x, hook):
                d = x.to(self.nd) - self.clean[layer].to(self.nd)
                out[layer] = torch.linalg.vector_norm(d, dim=-1)
                if layer < self.L:
                    seg.sigma1[layer] = segment_sigma(self.clean[layer].to(nd), x.to(nd), eps)
                if layer == self.L:
                    lp = self._suffix_logprobs(x)
                    out["kl"] = (self.clean_lp.exp() * (self.clean_lp - lp)).sum(-1).mean(-1)
                    true = self._true_tokens(x.device)
                    dl = (lp - self.clean_lp).gather(-1, true[..., None])[..., 0]
                    out["dlogp"] = dl.abs().amax(-1)

            return hook

        def mid(layer):
            def hook(x, hook):
                clean = self.clean_mid[layer].to(nd)
                seg.sigma2[layer] = segment_sigma(clean, x.to(nd), eps)

            return hook

        def pattern(layer):
            def hook(a, hook):
                diff = a.to(nd) - self.clean_pattern[layer].to(nd)
                seg.l1[layer] = diff.abs().sum(-1)

            return hook

        hooks = [(f"blocks.{lay}.hook_resid_pre", delta(lay)) for lay in range(block + 1, self.L)]
        hooks += [
            (f"blocks.{lay}.attn.hook_pattern", pattern(lay)) for lay in range(block + 1, self.L)
        ]
        if not self.consts[block].parallel:
            hooks += [(f"blocks.{lay}.hook_resid_mid", mid(lay)) for lay in range(block, self.L)]
        return [*hooks, (f"blocks.{self.L - 1}.hook_resid_post", delta(self.L))]

    def _true_tokens(self, device) -> Tensor:
        return self.tokens[:, self.prefix_len :].to(device)

    def finish_batch(
        self, first: int, model_name: str, token_table: bool = True
    ) -> dict[str, pd.DataFrame]:
        """Certified and weight tiers for every block measured on this batch; tidy rows."""
        layers, tokens, samples = [], [], []
        for block, meas in self.measured.items():
            cert = bm.certified_bounds(self.consts, self.stats, block)
            segment = segment_bounds(self.consts, self.stats, self.segments[block], block, cert)
            log_weight = bw.weight_bounds(self.consts, block)
            trivial = bm.trivial_bounds(self.consts, block)
            prev = None
            for k, lay in enumerate(range(block + 1, self.L + 1)):
                m, c, lw = meas[lay].cpu(), cert[k].cpu(), log_weight[k]
                sg = segment[k].cpu()
                w = bw._exp(lw)
                xn = self.stats[lay].xnorm.cpu()
                bad = m > c * (1 + self.rtol) + self.rtol * xn
                bad |= (m > sg * (1 + self.rtol) + self.rtol * xn) | (sg > c * (1 + self.rtol))
                bad |= c.double().log() > lw + math.log1p(self.rtol)
                bad |= c > trivial[k] * (1 + self.rtol)
                n, t = m.shape
                m_max, c_max = m.amax(-1), c.amax(-1)
                layers.append(
                    pd.DataFrame(
                        {
                            "block": block,
                            "layer": lay,
                            "sample": np.arange(first, first + n),
                            "measured": m_max.double().numpy(),
                            "certified": c_max.double().numpy(),
                            "segment": sg.amax(-1).double().numpy(),
                            "trivial": trivial[k],
                            "weight": w,
                            "weight_log10": lw / math.log(10),
                            "measured_gain": (m_max / prev[0]).double().numpy() if prev else np.nan,
                            "certified_gain": (c_max / prev[1]).double().numpy()
                            if prev
                            else np.nan,
                            "weight_gain": self.consts[lay - 1].gain if prev else np.nan,
                            "resid_norm": xn.amax(-1).double().numpy(),
                            "injection": self.stats[block].injection.amax(-1).cpu().double().numpy()
                            if prev is None
                            else np.nan,
                            "injection_bound": self.stats[block]
                            .injection_bound.amax(-1)
                            .cpu()
                            .double()
                            .numpy()
                            if prev is None
                            else np.nan,
                            "violations": bad.sum(-1).numpy(),
                        }
                    )
                )
                prev = (m_max, c_max)
                if token_table:
                    tokens.append(
                        pd.DataFrame(
                            {
                                "block": block,
                                "layer": lay,
                                "sample": np.repeat(np.arange(first, first + n), t),
                                "pos": np.tile(np.arange(t), n),
                                "measured": m.reshape(-1).double().numpy(),
                                "certified": c.reshape(-1).double().numpy(),
                                "segment": sg.reshape(-1).double().numpy(),
                                "resid_norm": xn.reshape(-1).double().numpy(),
                            }
                        )
                    )
                if bad.any():
                    log.error(
                        "bound violated: block %d layer %d, %d tokens", block, lay, int(bad.sum())
                    )
            safe, positions, logit_bound = self.certificate(cert[-1])
            samples.append(
                pd.DataFrame(
                    {
                        "intervention": ShortCircuit(block).label,
                        "block": block,
                        "sample": np.arange(first, first + n),
                        "kl": meas["kl"].cpu().double().numpy(),
                        "max_abs_dlogp": meas["dlogp"].cpu().double().numpy(),
                        "certified_unchanged": safe.cpu().numpy(),
                        "certified_positions": positions.cpu().numpy(),
                        "logit_gap_bound": logit_bound.cpu().double().numpy(),
                        "min_margin": self.margin.amin(-1).cpu().double().numpy(),
                    }
                )
            )
        frames = {"layers": layers, "tokens": tokens, "samples": samples}
        out = {
            k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in frames.items()
        }
        for df in out.values():
            df.insert(0, "model", model_name)
        return out

    def jacobian(self, n_samples: int, iters: int, first: int, model_name: str) -> pd.DataFrame:
        """Spectral norm of each block's Jacobian (lowest swept block on) on a few samples."""
        rows, start = [], time.perf_counter()
        lowest = self.clean.get(self.low)
        for lay in range(self.low, self.L):
            x = self.clean.get(lay, lowest if lay == self.low else None)
            if x is None:
                continue
            x = x[:n_samples].clone()
            sigma = bm.jacobian_norms(self.model, x, lay, iters=iters)
            rows.append(
                pd.DataFrame(
                    {
                        "model": model_name,
                        "layer": lay,
                        "sample": np.arange(first, first + len(x)),
                        "jacobian_norm": sigma.cpu().numpy(),
                        "iters": iters,
                    }
                )
            )
        log.info(
            "Jacobian reference: %d layers x %d samples x %d iterations, %.1f s",
            len(rows),
            min(n_samples, len(self.tokens)),
            iters,
            time.perf_counter() - start,
        )
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
