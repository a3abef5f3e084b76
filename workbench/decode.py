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
into a key/value cache and runs ordinary KV-cached greedy steps for positions k+1 … S−1, with the
intervention's hooks on in every step (``ShortCircuit`` is exact under a KV cache). Samples are
sorted by k and decoded in chunks of ``chunk_rows``; a sample joins its chunk's batch at step k,
bringing the P + k cached positions every member has at that step, so a step is one batched
single-token forward with no padding and no shifted rotary positions. Samples of different
interventions share the steps: each intervention's hooks act on its own rows only
(``routed_hooks``). With one chunk, a whole per-block sweep decodes in at most S − 1 sequential
steps per batch instead of S per intervention per batch.

**Cost** (one forward-pass equivalent, FPE = every sample's T positions through all L blocks).
Naive generation costs (T − 1)/T FPE per configuration, in S sequential calls per batch. The
engine costs 1 FPE for the clean pass, (L − i)/L for a configuration starting at block i, and
(S − 1 − k)/T for each diverging sample. Each pass's last block runs on the S + 1 positions
from P − 1 on only, when no observer hooks it (``workbench.passes``; its keys and values still
everywhere, which the decode reuses). A per-block sweep of memorized samples thus needs
~(L + 3)/2 FPE instead of ~L + 1; samples that diverge early cost about what naive generation
costs, since their remaining tokens must be decoded one at a time either way, and no exact method
can avoid that: ``workbench.cost.exact_floor`` counts the least work any exact method needs.
Steps run through ``workbench.fast_step`` where it supports the model and hooks (TransformerLens'
own modules and hook points; keys kept rotated in preallocated buffers), otherwise through
TransformerLens' KV-cached forward, which re-rotates and copies the whole cache at every step.

**Floating point.** Every argmax is ``torch.argmax`` (first index on ties) on the model's logits,
as in naive generation. Teacher-forced logits (one pass over T positions), the lean step's and
TransformerLens' KV-cached logits come from different kernels and can differ by ~1e-6; the two
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

from workbench import fast_step, metrics
from workbench.cost import Cost
from workbench.interventions import CLEAN, Hook, ShortCircuit
from workbench.passes import clean_pass, intervened_pass

Observer = Callable[[ShortCircuit, int], list[Hook]]
"""``observer(intervention, batch_index) -> hooks`` added to that intervention's teacher-forced
pass (for the clean intervention: to the shared clean pass). Hooks must not modify activations."""


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


def _count(
    cost: Cost | None, batch: int, positions: int, blocks: int, last: int | None = None
) -> None:
    if cost is not None:
        cost.add(batch, positions, blocks, last)


def _kv_capture(layers: range, store: dict[int, list], key_hook: str = "hook_k") -> list[Hook]:
    def grab(layer: int, which: int) -> Callable:
        def hook(act: Tensor, hook) -> None:
            store.setdefault(layer, [None, None])[which] = act

        return hook

    hooks = []
    for layer in layers:
        hooks.append((f"blocks.{layer}.attn.{key_hook}", grab(layer, 0)))
        hooks.append((f"blocks.{layer}.attn.hook_v", grab(layer, 1)))
    return hooks


def routed_hooks(
    model: HookedTransformer, interventions: list[ShortCircuit], rows: dict[ShortCircuit, Tensor]
) -> list[Hook]:
    """Hooks applying each intervention only to its own rows of the batch.

    ``rows[sc]`` (row indices; absent: none) is read at every call, so one set of hooks serves a
    batch whose rows change between forward calls. Each intervention's own hook functions see
    ``act[rows[sc]]``; what they return replaces those rows.
    """
    by_name: dict[str, list[tuple[ShortCircuit, Callable]]] = {}
    for sc in interventions:
        for name, fn in sc.hooks(model):
            by_name.setdefault(name, []).append((sc, fn))

    def combine(entries: list[tuple[ShortCircuit, Callable]]) -> Callable:
        def hook(act: Tensor, hook) -> Tensor | None:
            out = None
            for sc, fn in entries:
                mine = rows.get(sc)
                if mine is None or not len(mine):
                    continue
                new = fn(act[mine], hook)
                if new is not None:
                    out = act.clone() if out is None else out
                    out[mine] = new
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
    chunk_rows: int | None = None,
    lean: bool | None = None,
) -> dict[ShortCircuit, BatchResult]:
    """Teacher-forced metrics and exact greedy suffixes for every intervention on one batch.

    ``decode_rows`` bounds memory: diverging rows of several interventions are decoded together
    (sharing the sequential steps) until about that many are pooled, each holding the keys and
    values of every layer (L × T × 2 × d_model numbers a row), and the lean step copies a chunk
    of them into its buffers (twice that at the peak). ``chunk_rows`` (default ``decode_rows``)
    is how many rows one sequential decode step carries. Models whose cached keys no hook sees
    (query/key norms, clipping) decode their diverging rows with ``naive_greedy``.
    ``lean``: decode with ``workbench.fast_step`` (default: whenever it supports the model and
    the interventions' hooks) or with TransformerLens' own KV-cached forward (False).
    """
    interventions = list(dict.fromkeys(interventions))
    dev = model.cfg.device
    chunk_rows = chunk_rows or decode_rows
    hook_names = [name for sc in interventions for name, _ in sc.hooks(model)]
    hooked = [name for name, point in model.hook_dict.items() if point.fwd_hooks]  # others'
    hook_names += hooked
    if lean is None:
        lean = fast_step.supports(model, hook_names)
    elif lean and not fast_step.supports(model, hook_names):
        raise ValueError("workbench.fast_step does not support this model or these hooks.")
    key_hook = _cached_keys_hook(model, lean)
    reuse = decode and key_hook is not None
    tokens = tokens.to(dev)
    n_layers = model.cfg.n_layers
    b, seq = tokens.shape
    suffix = tokens[:, prefix_len:]
    starts = sorted({sc.blocks[0] for sc in interventions if not sc.is_clean})
    clean_kv: dict[int, list] = {}
    extra = _kv_capture(range(n_layers), clean_kv, key_hook) if reuse else []
    if observer is not None and CLEAN in interventions:
        extra = extra + observer(CLEAN, batch_index)
    at = slice(prefix_len - 1, seq - 1)  # the positions predicting the suffix
    last = f"blocks.{n_layers - 1}."  # trimmed when no hooks but the engine's own are there
    trim = observer is None and not any(name.startswith(last) for name in hooked)
    tail = seq - at.start if trim else None  # positions the last block computes
    clean_logits, resid = clean_pass(
        model, tokens, starts, extra_hooks=extra, positions=at, trim=trim
    )
    _count(cost, b, seq, n_layers, tail)

    results: dict[ShortCircuit, BatchResult] = {}
    pool: list[tuple[ShortCircuit, Tensor, Tensor, dict[int, list]]] = []

    def flush(pool: list) -> None:
        _pooled_decode(model, pool, prefix_len, suffix.shape[1], results, cost, chunk_rows, lean)

    for sc in interventions:
        if sc.is_clean:
            logits, kv = clean_logits, clean_kv
        else:
            start = sc.blocks[0]
            kv = {layer: clean_kv[layer] for layer in range(start)} if reuse else {}
            extra = _kv_capture(range(start, n_layers), kv, key_hook) if reuse else []
            if observer is not None:
                extra = extra + observer(sc, batch_index)
            logits = intervened_pass(
                model, tokens, sc, resid, extra_hooks=extra, positions=at, trim=trim
            )
            _count(cost, b, seq, n_layers - start, tail)
        res, argmax = _teacher_forced(logits, suffix)
        results[sc] = res
        if decode:
            generated = torch.where(
                torch.arange(suffix.shape[1], device=dev) <= res.first_mismatch.to(dev)[:, None],
                argmax,
                suffix,
            )
            res.generated = generated
            rows = (res.first_mismatch < suffix.shape[1] - 1).nonzero().squeeze(-1).to(dev)
            if len(rows) and not reuse:  # the cached keys are out of reach: decode naively
                prefix, n_new = tokens[rows, :prefix_len], suffix.shape[1]
                generated[rows] = naive_greedy(model, prefix, n_new, sc, cost=cost).to(dev)
            elif len(rows):
                pool.append((sc, rows, generated, kv))
            if sum(len(entry[1]) for entry in pool) >= decode_rows:
                flush(pool)
                pool = []
        del logits
    del resid, clean_logits
    if pool:
        flush(pool)
    for res in results.values():
        if res.generated is not None:
            res.generated = res.generated.cpu()
    return results


def _cached_keys_hook(model: HookedTransformer, lean: bool) -> str | None:
    """The hook whose keys are exactly what the decode caches (None: no hook sees them)."""
    if lean:  # the lean step keeps keys rotated
        return "hook_rot_k" if model.cfg.positional_embedding_type == "rotary" else "hook_k"
    return None if fast_step.keys_transformed(model.cfg) else "hook_k"


def _teacher_forced(
    logits: Float[Tensor, "batch suffix vocab"], suffix: Int[Tensor, "batch suffix"]
) -> tuple[BatchResult, Int[Tensor, "batch suffix"]]:
    k, entropy, nll, margin, argmax = metrics.teacher_forced(logits, suffix)
    res = BatchResult(
        generated=None,
        first_mismatch=k.cpu(),
        completion_entropy=entropy.cpu(),
        suffix_nll=nll.cpu(),
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
    chunk_rows: int,
    lean: bool,
) -> None:
    """KV-cached greedy steps for every diverging row of every intervention, position-aligned.

    Rows are sorted by first mismatch k and decoded ``chunk_rows`` at a time; within a chunk a row
    joins the batch at step k, bringing its teacher-forced keys and values for positions < P + k.
    """
    k = torch.cat([results[sc].first_mismatch[rows.cpu()] for sc, rows, _, _ in pool])
    owner = torch.cat([torch.full((len(rows),), i) for i, (_, rows, _, _) in enumerate(pool)])
    row = torch.cat([rows.cpu() for _, rows, _, _ in pool])
    order = torch.argsort(k * len(pool) + owner, stable=True)  # joining rows grouped by owner
    for chunk in order.split(chunk_rows):
        cache = _Lean(model, len(chunk), prefix_len + suffix_len - 1) if lean else _TLCache(model)
        args = (owner[chunk], row[chunk], k[chunk], prefix_len, suffix_len)
        _decode_chunk(model, pool, cache, *args, cost)
    for sc, _, g, _ in pool:
        results[sc].generated = g


def _decode_chunk(
    model: HookedTransformer,
    pool: list[tuple[ShortCircuit, Tensor, Tensor, dict[int, list]]],
    cache: _TLCache | _Lean,
    owner: Int[Tensor, " rows"],
    row: Int[Tensor, " rows"],
    k: Int[Tensor, " rows"],
    prefix_len: int,
    suffix_len: int,
    cost: Cost | None,
) -> None:
    """Decode rows sorted by k; ``pool[owner[r]]`` holds row ``row[r]``'s keys, values, tokens."""
    dev = model.cfg.device
    gen = torch.empty((0, suffix_len), dtype=torch.long, device=dev)
    rows: dict[ShortCircuit, Tensor] = {}
    interventions = [sc for sc, *_ in pool if not sc.is_clean]
    with torch.inference_mode(), model.hooks(fwd_hooks=routed_hooks(model, interventions, rows)):
        for j in range(int(k[0]), suffix_len - 1):
            joining = (k == j).nonzero().squeeze(-1)
            if len(joining):
                parts = [
                    (pool[int(o)], row[joining][owner[joining] == o].to(dev))
                    for o in owner[joining].unique()
                ]
                cache.join([(kv, r) for (*_, kv), r in parts], len(gen), prefix_len + j)
                gen = torch.cat([gen] + [g[r] for (_, _, g, _), r in parts])
                active = owner[: len(gen)].to(dev)
                for o in active.unique():
                    rows[pool[int(o)][0]] = (active == o).nonzero().squeeze(-1)
            logits = cache.step(gen[:, j : j + 1], prefix_len + j)
            _count(cost, len(gen), 1, model.cfg.n_layers)
            gen[:, j + 1] = logits.argmax(-1)
    for i in owner.unique():
        mine = (owner == i).nonzero().squeeze(-1)
        _, _, g, _ = pool[int(i)]
        g[row[mine].to(dev)] = gen[mine.to(dev)]


class _TLCache:
    """Decode steps through TransformerLens' own KV-cached forward (any model it supports)."""

    def __init__(self, model: HookedTransformer) -> None:
        self.model = model
        self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 0)

    def join(self, parts: list[tuple[dict[int, list], Tensor]], n: int, pos: int) -> None:
        """Append rows after the first ``n``, with their first ``pos`` keys and values."""
        for layer, entry in enumerate(self.cache.entries):
            old_k, old_v = ([entry.past_keys], [entry.past_values]) if n else ([], [])
            entry.past_keys = torch.cat(old_k + [kv[layer][0][r, :pos] for kv, r in parts])
            entry.past_values = torch.cat(old_v + [kv[layer][1][r, :pos] for kv, r in parts])
        rows = n + sum(len(r) for _, r in parts)
        self.cache.previous_attention_mask = _ones(rows, pos, self.model.cfg.device)

    def step(self, tokens: Int[Tensor, "rows 1"], pos: int) -> Float[Tensor, "rows vocab"]:
        mask = _ones(len(tokens), 1, self.model.cfg.device)
        return self.model(tokens, past_kv_cache=self.cache, attention_mask=mask)[:, -1]


class _Lean:
    """Decode steps through ``workbench.fast_step`` (keys kept rotated, buffers preallocated)."""

    def __init__(self, model: HookedTransformer, rows: int, context: int) -> None:
        self.model = model
        self.buffers = fast_step.Buffers(model, rows, context)

    def join(self, parts: list[tuple[dict[int, list], Tensor]], n: int, pos: int) -> None:
        for kv, r in parts:
            for layer in range(self.model.cfg.n_layers):
                self.buffers.load(n, layer, kv[layer][0][r, :pos], kv[layer][1][r, :pos])
            n += len(r)

    def step(self, tokens: Int[Tensor, "rows 1"], pos: int) -> Float[Tensor, "rows vocab"]:
        return fast_step.step(self.model, tokens, self.buffers, pos)
