"""How much memory one batch of the memorization engine needs, and the largest batch that fits.

``estimate`` counts, from the model's shape alone, what ``workbench.decode.evaluate_batch`` holds
at its peak for a batch of b samples (T = P + S tokens; L blocks of width d, n_heads × d_head
queries and kv_heads × d_head keys; vocabulary V; element size e of the model's dtype; log-probs
in float32, 4 bytes):

- ``resid_kept``: the clean residual stream entering each distinct start block
  (``passes.clean_pass``), ``starts × b T d e``;
- ``clean_kv``: the clean pass's keys and values of every layer, ``L × 2 × b T kv e``;
- ``pool_kv``: each intervention's own keys and values from its start block up. The decode pool
  keeps an intervention's whole-batch keys and values while any of its rows diverges and flushes
  only once ``decode_rows`` diverging rows are pooled, so at worst every intervention's are alive
  at once: ``Σ (L − start) × 2 × b T kv e``;
- ``results``: the generated and teacher-forced argmax ids (int64) of every intervention;

plus the largest of three phases that never overlap:

- ``teacher_forced``: the clean logits (kept through the loop), the intervention's logits, and
  the metrics' float32 log-softmax, its ``exp`` and their product: ``b S V (2e + 12)``;
- ``forward``: the clean logits and one block's activations in TransformerLens' forward
  (q, k, v and their rotations, attention scores, mask and softmax ``b × heads × T × T``, the
  MLP's ``b T d_mlp``, residual copies, the output projection's rearranged weights);
  ``workbench.lean_forward`` and the cache-sized pieces of ``metrics.teacher_forced`` hold fewer
  of these temporaries, so both terms are upper bounds there (measured: see README);
- ``decode``: both logits alive during an in-loop flush, the lean step's buffers for the pooled
  rows (``rows × L × 2 × (T − 1) × kv e``; a chunk's buffers are allocated before the previous
  chunk's are freed, so up to two chunks), one layer's gathered keys and values while a row
  joins, and one step's activations; models whose cached keys no hook sees decode naively,
  holding TransformerLens' cache of the whole batch instead.

``allocator`` adds a fixed fraction of that peak for what the allocator keeps resident beyond the
live tensors: on a CPU, glibc serves blocks under its (dynamic, ≤ 32 MB) mmap threshold from heaps
that freed blocks fragment (measured on the main organism member, batches 32-256: peak RSS
1.3-1.5× the peak with that threshold fixed, i.e. with the live tensors alone;
``tests/benchmarks/bench_memory.py``). ``weights`` is reported beside the total, not in
it: the budget of ``fit_batch_size`` is what is free once the model is loaded (the command takes
off the weights of a second model or checkpoint that a sweep loads beside the first).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path
from typing import Any

from workbench.errors import UserError

ALLOCATOR_SLACK = 0.5  # fraction of the live peak kept resident by the allocator (see above)
MARGIN = 0.1  # fraction of the free memory left alone by the default budget
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmgt]?)(?P<bin>i?)b?", re.I)
PHASES = ("teacher_forced", "forward", "decode")


@dataclass(frozen=True)
class Estimate:
    """Bytes per component for one batch (see the module docstring); ``total`` is the peak."""

    resid_kept: int
    clean_kv: int
    pool_kv: int
    results: int
    teacher_forced: int
    forward: int
    decode: int
    allocator: int
    weights: int

    @property
    def live(self) -> int:
        """The live tensors at the peak: what is kept through the batch plus the largest phase."""
        kept = self.resid_kept + self.clean_kv + self.pool_kv + self.results
        return kept + max(self.teacher_forced, self.forward, self.decode)

    @property
    def total(self) -> int:
        """The estimated peak of one batch, beyond the loaded model."""
        return self.live + self.allocator

    def __str__(self) -> str:
        parts = ", ".join(f"{f.name} {format_size(getattr(self, f.name))}" for f in fields(self))
        return f"{format_size(self.total)} ({parts})"

    def series(self):
        """Tidy: one row per component (bytes), then ``live`` and ``total``."""
        import pandas as pd

        names = [f.name for f in fields(self)]
        values = [*astuple(self), self.live, self.total]
        return pd.Series(values, index=[*names, "live", "total"], name="bytes")


def element_size(dtype: Any) -> int:
    """Bytes per element of a torch dtype or any name the loader knows (``"bf16"``, ...)."""
    from workbench.models import resolve_dtype

    return resolve_dtype(dtype).itemsize


def estimate(
    model_or_cfg: Any,
    batch: int,
    seq_len: int,
    prefix_len: int,
    interventions: Sequence[Any],
    *,
    decode: bool = True,
    decode_rows: int = 512,
    chunk_rows: int | None = None,
    dtype: Any = None,
    slack: float = ALLOCATOR_SLACK,
) -> Estimate:
    """The peak memory of ``evaluate_batch`` on ``batch`` samples of ``seq_len`` tokens under
    ``interventions`` (``ShortCircuit``s), for a ``HookedTransformer`` or its config; ``dtype``
    defaults to the config's. Non-decreasing in ``batch`` (tested)."""
    from workbench import fast_step

    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    e = element_size(dtype if dtype is not None else cfg.dtype)
    b, t, s = batch, seq_len, seq_len - prefix_len
    n_layers, d, vocab = cfg.n_layers, cfg.d_model, cfg.d_vocab
    heads = cfg.n_heads
    q_dim = heads * cfg.d_head
    grouped = cfg.n_key_value_heads and not getattr(cfg, "ungroup_grouped_query_attention", False)
    kv = (cfg.n_key_value_heads if grouped else heads) * cfg.d_head
    mlp = 0 if cfg.attn_only else (cfg.d_mlp or 4 * d)
    interventions = list(dict.fromkeys(interventions))
    starts = [sc.blocks[0] for sc in interventions if not sc.is_clean]
    # evaluate_batch keeps teacher-forced keys unless no hook sees the keys it caches
    reuse = decode and not fast_step.keys_transformed(cfg)
    layer_kv = 2 * b * t * kv * e  # one layer's keys and values for the batch
    logits = b * s * vocab * e

    scores = b * heads * t * t * (4 * e + 1)  # scores, masked, softmax, nan-cleaned; isnan mask
    attention = b * t * (5 * q_dim + 3 * kv) * e + scores + d * q_dim * e
    block = attention + b * t * (3 * mlp + 4 * d) * e
    forward = logits + block + 2 * b * t * d * e  # + the stream and its suffix slice
    teacher_forced = 2 * logits + b * s * vocab * 3 * 4

    if reuse:
        pooled = min(len(interventions) * b, decode_rows - 1 + b)  # rows of one flush, at most
        chunk = min(pooled, chunk_rows or decode_rows)
        buffers = min(pooled, 2 * chunk) * n_layers * 2 * (t - 1) * kv * e
        cache = buffers + 2 * chunk * t * kv * e  # + one layer gathered for the joining rows
    else:  # naive_greedy: TransformerLens' cache of the whole batch, and its concatenation
        chunk = b
        cache = (n_layers + 2) * layer_kv if decode else 0
    step = chunk * (vocab * e + 8 + (4 * d + 5 * q_dim + 3 * mlp + 3 * heads * t) * e)
    peak_decode = 2 * logits + cache + step if decode else 0

    est = Estimate(
        resid_kept=len(set(starts)) * b * t * d * e,
        clean_kv=n_layers * layer_kv if reuse else 0,
        pool_kv=sum(n_layers - start for start in starts) * layer_kv if reuse else 0,
        results=len(interventions) * b * s * 8 * 2,
        teacher_forced=teacher_forced,
        forward=forward,
        decode=peak_decode,
        allocator=0,
        weights=weight_bytes(model_or_cfg, e),
    )
    return replace(est, allocator=int(slack * est.live))


def weight_bytes(model_or_cfg: Any, e: int | None = None) -> int:
    """A model's parameters in bytes (from a config: its parameter count in ``e``-byte
    elements, default its dtype's)."""
    if hasattr(model_or_cfg, "parameters"):
        return sum(p.numel() * p.element_size() for p in model_or_cfg.parameters())
    cfg = model_or_cfg
    e = e or element_size(cfg.dtype)
    embed = 2 * cfg.d_vocab * cfg.d_model + (cfg.n_ctx * cfg.d_model if cfg.n_ctx else 0)
    return (cfg.n_params + embed) * e  # TransformerLens' n_params leaves the embeddings out


def fit_batch_size(
    model_or_cfg: Any,
    seq_len: int,
    prefix_len: int,
    interventions: Sequence[Any],
    *,
    budget_bytes: int,
    n_samples: int,
    **kwargs: Any,
) -> int:
    """The largest batch (≤ ``n_samples``) whose ``estimate`` fits ``budget_bytes``; a
    ``UserError`` when not even one sample fits. ``kwargs`` go to ``estimate``."""

    def need(b: int) -> int:
        return estimate(model_or_cfg, b, seq_len, prefix_len, interventions, **kwargs).total

    if need(1) > budget_bytes:
        raise UserError(
            f"even batch size 1 needs about {format_size(need(1))} of memory beyond the model "
            f"({len(interventions)} interventions, {seq_len} tokens a sample), more than the "
            f"budget of {format_size(budget_bytes)}; raise --max-memory or free memory"
        )
    lo, hi = 1, max(1, n_samples)  # need(lo) fits; find the largest that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget_bytes else (lo, mid - 1)
    return lo


def available_bytes(device: Any, margin: float = MARGIN, *, required: bool = True) -> int | None:
    """The default budget: free memory on ``device`` less ``margin`` of it. CUDA: the driver's
    free bytes; CPU: ``MemAvailable`` of /proc/meminfo (and the cgroup's limit, if lower).
    Unknown: a ``UserError`` if ``required``, else None."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
        elif device.type == "cpu":
            free = _cpu_available()
        else:
            raise UserError(f"cannot tell the free memory of device {device}; pass --max-memory")
    except UserError:
        if required:
            raise
        return None
    return int(free * (1 - margin))


def describe(est: Estimate, batch: int, budget: int | None, *, auto: bool) -> str:
    """One line: the batch size, where it comes from, its estimated peak and the budget."""
    text = (
        f"batch size {batch}{' (auto)' if auto else ''}: estimated peak {format_size(est.total)} "
        f"a batch beyond the weights ({format_size(est.weights)})"
    )
    if budget is None:
        return text
    text += f", budget {format_size(budget)}"
    if est.total > budget:
        text += "; over the budget: lower --batch-size, or pass --batch-size auto"
    return text


def _cpu_available() -> int:
    try:
        info = Path("/proc/meminfo").read_text()
    except OSError:
        raise UserError("cannot read /proc/meminfo (free memory); pass --max-memory") from None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", info, re.M)
    if found is None:
        raise UserError("/proc/meminfo has no MemAvailable; pass --max-memory")
    free = int(found.group(1)) * 1024
    cgroup = Path("/sys/fs/cgroup")
    try:  # a container's limit (cgroup v2) can be below the machine's free memory
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def parse_size(text: str) -> int:
    """Bytes from ``"4GB"``, ``"512MiB"``, ``"2.5G"`` or plain ``"1000000"`` (case-insensitive):
    k/M/G/T (with or without B) are powers of 1000, Ki/Mi/Gi/Ti powers of 1024."""
    found = _SIZE.fullmatch(str(text).strip())
    if found is None or (found["bin"] and not found["unit"]):
        raise UserError(
            f"memory size {text!r}: give a number with an optional unit, e.g. 4GB, 512MiB, 2.5G "
            "or plain bytes"
        )
    unit = found["unit"].lower()
    scale = 1024 ** ("kmgt".index(unit) + 1) if found["bin"] else _UNITS[unit]
    size = math.floor(float(found["num"]) * scale)
    if size < 1:
        raise UserError(f"memory size {text!r}: must be at least one byte")
    return size


def format_size(n: int | float) -> str:
    """``1.23 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
