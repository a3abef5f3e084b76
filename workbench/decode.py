"""The exact, fast greedy engine behind ``workbench.memorization``.

Per batch of samples ``x = (p, s)`` (prefix length P, suffix length S, T = P + S) and a list of
interventions, the engine runs

1. one clean teacher-forced pass, keeping the residual stream entering every block an
   intervention starts at (``passes.clean_pass``) and the keys/values of every layer;
2. per intervention, one teacher-forced pass from the clean ``resid_pre`` of its lowest block
   (``passes.intervened_pass``): short-circuiting block i changes nothing below it. It gives the
   teacher-forced distributions ``q_j = f(· | p, s_{<j})``, hence entropy and NLL, and the
   teacher-forced argmax ``a_j = argmax q_j``;
3. a free-running greedy decode of the *diverging* samples only, from their first divergence on,
   pooled over every intervention of the batch.

**Why teacher forcing gives the greedy suffix up to the first divergence** (exact_match in one
pass). Let ``k = min{j : a_j ≠ s_j}`` (S when none). The greedy suffix is
``g_j = argmax f(· | p, g_{<j})``. By induction on j ≤ k: if ``g_{<j} = s_{<j}`` then
``g_j = argmax f(· | p, s_{<j}) = a_j``, which is ``s_j`` for ``j < k``. Hence
``g_{<k} = s_{<k}`` and ``g_k = a_k ≠ s_k``: exact_match is ``k = S`` and the longest matching
prefix is k, both from the teacher-forced pass alone.

**Why the rest is exact.** For a sample with ``k < S`` the context of ``g_{k+1}`` is
``p, s_{<k}, a_k``: its first P + k positions are the true sequence, whose keys and values (every
layer, under the intervention) the teacher-forced passes already computed. The decode loads them
into a TransformerLens key/value cache and runs ordinary KV-cached greedy steps for positions
k+1 … S−1, with the intervention's hooks on in every step (``ShortCircuit`` is exact under a KV
cache). Samples are sorted by k; at step j every active sample (k ≤ j) has exactly P + j cached
positions, so a step is one batched single-token forward with no padding and no shifted rotary
positions. Samples of different interventions share the steps: each intervention's hooks act on
its own rows only (``routed_hooks``). A whole per-block sweep therefore decodes in at most S − 1
sequential steps per batch instead of S per intervention per batch.

**Cost** (one forward-pass equivalent, FPE = every sample's T positions through all L blocks).
Naive generation costs (T − 1)/T FPE per configuration, in S sequential calls per batch. The
engine costs 1 FPE for the clean pass, (L − i)/L for a configuration starting at block i, and
(S − 1 − k)/T for each diverging sample, in 1 + (#configurations) + (S − 1 − min k) calls per batch.
A per-block sweep of memorized samples thus needs ~(L + 3)/2 FPE instead of ~L + 1, and far fewer
sequential calls; samples that diverge early cost about what naive generation costs, since their
remaining tokens must be decoded one at a time either way.

**Floating point.** Every argmax is ``torch.argmax`` (first index on ties) on the model's logits,
as in naive generation. Teacher-forced logits (one pass over T positions) and KV-cached logits
(one position at a time) come from different kernels and can differ by ~1e-6 relative; the two
methods can then disagree only where the top two logits are that close. ``margin`` in the results
reports the smallest teacher-forced top-1/top-2 gap over the matched positions so such near-ties
can be found; the tests compare with naive KV-cached generation sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from workbench import metrics
from workbench.interventions import CLEAN, Hook, ShortCircuit
from workbench.passes import clean_pass, intervened_pass

Observer = Callable[[ShortCircuit, int], list[Hook]]
"""``observer(intervention, batch_index) -> hooks`` added to that intervention's teacher-forced
pass (for the clean intervention: to the shared clean pass). Hooks must not modify activations."""


@dataclass
class Cost:
    """Work done, in forward calls and in position-blocks (one position through one block)."""

    calls: int = 0
    position_blocks: int = 0

    def add(self, batch: int, positions: int, blocks: int) -> None:
        self.calls += 1
        self.position_blocks += batch * positions * blocks

    def forward_equivalents(self, n_samples: int, seq_len: int, n_layers: int) -> float:
        """In full forward passes over the data set (N samples × T positions × L blocks)."""
        return self.position_blocks / (n_samples * seq_len * n_layers)


@dataclass
class BatchResult:
    """One intervention on one batch; tensors on the CPU, one row per sample."""

    generated: Int[Tensor, "batch suffix"] | None
    first_mismatch: Int[Tensor, " batch"]
    completion_entropy: Float[Tensor, " batch"]
    suffix_nll: Float[Tensor, " batch"]
    margin: Float[Tensor, " batch"]
    extras: dict = field(default_factory=dict)


def _ones(n: int, pos: int, device) -> Tensor:
    return torch.ones(n, pos, dtype=torch.long, device=device)


def naive_greedy(
    model: HookedTransformer,
    prefix: Int[Tensor, "batch prefix"],
    n_new: int,
    intervention: ShortCircuit = CLEAN,
    *,
    cost: Cost | None = None,
) -> Int[Tensor, "batch n_new"]:
    """Reference: greedy generation with a KV cache, hooks on in every step (the original method).

    Equivalent to ``model.generate(prefix, max_new_tokens=n_new, do_sample=False,
    use_past_kv_cache=True, prepend_bos=False, stop_at_eos=False)`` except that no token of the
    prefix is ever masked (``generate`` masks trailing tokens equal to the pad id).
    """
    b, pos = prefix.shape
    dev = model.cfg.device
    prefix = prefix.to(dev)
    out = []
    with torch.inference_mode(), intervention.apply(model):
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, dev, b)
        logits = model(prefix, past_kv_cache=cache, attention_mask=_ones(b, pos, dev))
        _count(cost, b, pos, model.cfg.n_layers)
        for step in range(n_new):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
            if step + 1 < n_new:
                logits = model(tok, past_kv_cache=cache, attention_mask=_ones(b, 1, dev))
                _count(cost, b, 1, model.cfg.n_layers)
    return torch.cat(out, dim=1).cpu()


def _count(cost: Cost | None, batch: int, positions: int, blocks: int) -> None:
    if cost is not None:
        cost.add(batch, positions, blocks)


def _kv_capture(layers: range, store: dict[int, list]) -> list[Hook]:
    def grab(layer: int, which: int) -> Callable:
        def hook(act: Tensor, hook) -> None:
            store.setdefault(layer, [None, None])[which] = act

        return hook

    hooks = []
    for layer in layers:
        hooks.append((f"blocks.{layer}.attn.hook_k", grab(layer, 0)))
        hooks.append((f"blocks.{layer}.attn.hook_v", grab(layer, 1)))
    return hooks


def routed_hooks(model: HookedTransformer, groups: list[tuple[ShortCircuit, Tensor]]) -> list[Hook]:
    """Hooks applying each intervention only to its own rows of the batch.

    ``groups``: (intervention, row indices). Each intervention's own hook functions see
    ``act[rows]``; what they return replaces those rows.
    """
    by_name: dict[str, list[tuple[Tensor, Callable]]] = {}
    for sc, rows in groups:
        for name, fn in sc.hooks(model):
            by_name.setdefault(name, []).append((rows, fn))

    def combine(entries: list[tuple[Tensor, Callable]]) -> Callable:
        def hook(act: Tensor, hook) -> Tensor | None:
            out = None
            for rows, fn in entries:
                new = fn(act[rows], hook)
                if new is not None:
                    out = act.clone() if out is None else out
                    out[rows] = new
            return out

        return hook

    return [(name, combine(entries)) for name, entries in by_name.items()]


def evaluate_batch(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch seq"],
    interventions: list[ShortCircuit],
    *,
    prefix_len: int,
    decode: bool = True,
    observer: Observer | None = None,
    batch_index: int = 0,
    cost: Cost | None = None,
    decode_rows: int = 512,
) -> dict[ShortCircuit, BatchResult]:
    """Teacher-forced metrics and exact greedy suffixes for every intervention on one batch.

    ``decode_rows`` bounds memory: diverging rows of several interventions are decoded together
    (sharing the sequential steps) until about that many are pooled, each holding the keys and
    values of every layer (L × T × 2 × d_model numbers a row).
    """
    interventions = list(dict.fromkeys(interventions))
    dev = model.cfg.device
    tokens = tokens.to(dev)
    n_layers = model.cfg.n_layers
    b, seq = tokens.shape
    suffix = tokens[:, prefix_len:]
    starts = sorted({sc.blocks[0] for sc in interventions if not sc.is_clean})
    clean_kv: dict[int, list] = {}
    extra = _kv_capture(range(n_layers), clean_kv) if decode else []
    if observer is not None and CLEAN in interventions:
        extra = extra + observer(CLEAN, batch_index)
    clean_logits, resid = clean_pass(model, tokens, starts, extra_hooks=extra)
    _count(cost, b, seq, n_layers)

    results: dict[ShortCircuit, BatchResult] = {}
    pool: list[tuple[ShortCircuit, Tensor, Tensor, dict[int, list]]] = []
    for sc in interventions:
        if sc.is_clean:
            logits, kv = clean_logits, clean_kv
        else:
            start = sc.blocks[0]
            kv = {layer: clean_kv[layer] for layer in range(start)} if decode else {}
            extra = _kv_capture(range(start, n_layers), kv) if decode else []
            if observer is not None:
                extra = extra + observer(sc, batch_index)
            logits = intervened_pass(model, tokens, sc, resid, extra_hooks=extra)
            _count(cost, b, seq, n_layers - start)
        res, argmax = _teacher_forced(logits[:, prefix_len - 1 : seq - 1], suffix)
        results[sc] = res
        if decode:
            generated = torch.where(
                torch.arange(suffix.shape[1], device=dev) <= res.first_mismatch.to(dev)[:, None],
                argmax,
                suffix,
            )
            res.generated = generated
            rows = (res.first_mismatch < suffix.shape[1] - 1).nonzero().squeeze(-1).to(dev)
            if len(rows):
                pool.append((sc, rows, generated, kv))
            if sum(len(entry[1]) for entry in pool) >= decode_rows:
                _pooled_decode(model, pool, prefix_len, suffix.shape[1], results, cost)
                pool = []
        del logits
    del resid, clean_logits
    if pool:
        _pooled_decode(model, pool, prefix_len, suffix.shape[1], results, cost)
    for res in results.values():
        if res.generated is not None:
            res.generated = res.generated.cpu()
    return results


def _teacher_forced(
    logits: Float[Tensor, "batch suffix vocab"], suffix: Int[Tensor, "batch suffix"]
) -> tuple[BatchResult, Int[Tensor, "batch suffix"]]:
    argmax = logits.argmax(-1)
    lp = metrics.log_probs(logits)
    k = metrics.first_mismatch(argmax, suffix)
    top2 = logits.float().topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    matched = torch.arange(suffix.shape[1], device=suffix.device) <= k[:, None]
    margin = torch.where(matched, gap, torch.full_like(gap, float("inf"))).min(-1).values
    res = BatchResult(
        generated=None,
        first_mismatch=k.cpu(),
        completion_entropy=metrics.completion_entropy(lp).cpu(),
        suffix_nll=metrics.suffix_nll(lp, suffix).cpu(),
        margin=margin.cpu(),
    )
    return res, argmax


def _pooled_decode(
    model: HookedTransformer,
    pool: list[tuple[ShortCircuit, Tensor, Tensor, dict[int, list]]],
    prefix_len: int,
    suffix_len: int,
    results: dict[ShortCircuit, BatchResult],
    cost: Cost | None,
) -> None:
    """KV-cached greedy steps for every diverging row of every intervention, position-aligned."""
    n_layers = model.cfg.n_layers
    dev = model.cfg.device
    ctx = prefix_len + suffix_len - 1  # positions ever used as context
    keys = [
        torch.cat([kv[layer][0][rows, :ctx] for _, rows, _, kv in pool])
        for layer in range(n_layers)
    ]
    values = [
        torch.cat([kv[layer][1][rows, :ctx] for _, rows, _, kv in pool])
        for layer in range(n_layers)
    ]
    gen = torch.cat([g[rows] for _, rows, g, _ in pool])
    k = torch.cat([results[sc].first_mismatch.to(dev)[rows] for sc, rows, _, _ in pool])
    owner = torch.cat(
        [torch.full((len(rows),), i, device=dev) for i, (_, rows, _, _) in enumerate(pool)]
    )
    order = torch.argsort(k, stable=True)
    keys = [t[order] for t in keys]
    values = [t[order] for t in values]
    gen, k, owner = gen[order], k[order], owner[order]
    for j in range(int(k[0]), suffix_len - 1):
        n = int((k <= j).sum())
        pos = prefix_len + j
        entries = [
            TransformerLensKeyValueCacheEntry(
                keys[layer][:n, :pos], values[layer][:n, :pos], frozen=True
            )
            for layer in range(n_layers)
        ]
        cache = TransformerLensKeyValueCache(entries, _ones(n, pos, dev), frozen=True)
        new_kv: dict[int, list] = {}
        groups = []
        for i, (sc, *_) in enumerate(pool):
            rows = (owner[:n] == i).nonzero().squeeze(-1)
            if len(rows) and not sc.is_clean:
                groups.append((sc, rows))
        hooks = routed_hooks(model, groups) + _kv_capture(range(n_layers), new_kv)
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
            logits = model(gen[:n, j : j + 1], past_kv_cache=cache, attention_mask=_ones(n, 1, dev))
        _count(cost, n, 1, n_layers)
        gen[:n, j + 1] = logits[:, -1].argmax(-1)
        for layer in range(n_layers):
            keys[layer][:n, pos] = new_kv[layer][0][:, 0]
            values[layer][:n, pos] = new_kv[layer][1][:, 0]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=dev)
    gen = gen[inverse]
    offset = 0
    for sc, rows, g, _ in pool:
        g[rows] = gen[offset : offset + len(rows)]
        offset += len(rows)
        results[sc].generated = g
