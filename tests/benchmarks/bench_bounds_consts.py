"""Benchmark: the bounds' weight constants of one Pythia-2.8b-shaped block, certified spectral
norms (``workbench.spectral``: float64 Gram + Lanczos + Cholesky certificate) against the naive
float64 SVDs (``torch.linalg.matrix_norm(ord=2)``) they replace; extrapolated to 32 blocks.

    python tests/benchmarks/bench_bounds_consts.py                  # d_model 2560, d_mlp 10240
    python tests/benchmarks/bench_bounds_consts.py --no-naive --threads 2

Random weights built in memory (bf16, as the model runs them); the cache is bypassed. The
blocks go through ``weight_norms`` (``--blocks``, 3 by default), as in a real model: buffers
reused from block to block are allocated by the first, so the 32-block figure is the first
block's time plus 31 times the mean of the others.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from workbench import bounds_weights as bw


class _Obj:  # the attributes _block_norms reads, nothing else
    def __init__(self, **kw):
        self.__dict__.update(kw)


def block(d: int, d_mlp: int, heads: int, dtype: torch.dtype, seed: int = 0) -> _Obj:
    gen = torch.Generator().manual_seed(seed)
    e = d // heads

    def w(*shape):
        return (torch.randn(shape, generator=gen) / math.sqrt(shape[-2])).to(dtype)

    attn = _Obj(W_Q=w(heads, d, e), W_K=w(heads, d, e), W_V=w(heads, d, e), W_O=w(heads, e, d))
    attn.b_Q, attn.b_K = torch.zeros(heads, e, dtype=dtype), torch.zeros(heads, e, dtype=dtype)
    ln = _Obj(w=1 + 0.1 * torch.randn(d, generator=gen).to(dtype), b=torch.zeros(d, dtype=dtype))
    return _Obj(attn=attn, mlp=_Obj(W_in=w(d, d_mlp), W_out=w(d_mlp, d)), ln1=ln, ln2=ln)


def naive(b: _Obj) -> dict[str, float]:
    """The former constants: dense float64 SVDs of the folded matrices."""

    def spec(x):
        return torch.linalg.matrix_norm(x.double(), ord=2)

    g = b.ln1.w.double()
    fold = bw._fold
    u, s, _ = torch.linalg.svd(b.attn.W_O.double(), full_matrices=False)  # ‖x W_O‖ = ‖x U S‖
    return {
        "vo": spec(fold(g, b.attn.W_V) @ (u * s[:, None, :])),
        "mq": spec(fold(g, b.attn.W_Q)),
        "mk": spec(fold(g, b.attn.W_K)),
        "w_out": spec(b.mlp.W_out),
        "w_in": spec(fold(b.ln2.w.double(), b.mlp.W_in)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=2560)
    ap.add_argument("--d-mlp", type=int, default=10240)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=3, help="blocks timed (≥ 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blocks = [
        block(args.d_model, args.d_mlp, args.heads, torch.bfloat16, i) for i in range(args.blocks)
    ]
    times, block_norms = [], bw._block_norms

    def timed(*a):
        t = time.perf_counter()
        out = block_norms(*a)
        times.append(time.perf_counter() - t)
        return out

    bw._block_norms = timed
    fast = bw.weight_norms(_Obj(blocks=blocks), cache=False)[0]
    bw._block_norms = block_norms
    n, rest = args.layers, sum(times[1:]) / len(times[1:])
    t_fast = (times[0] + (n - 1) * rest) / n
    print("certified constants per block: " + ", ".join(f"{x:.2f}" for x in times) + " s")
    print(f"×{n} (first + {n - 1} × mean of the others): {t_fast * n:.0f} s, {t_fast:.2f} s/block")
    b = blocks[0]
    if args.no_naive:
        return
    t = time.perf_counter()
    ref = naive(b)
    t_naive = time.perf_counter() - t
    print(f"naive float64 SVDs, one block: {t_naive:.1f} s; ×{n}: {t_naive * n:.0f} s")
    print(f"ratio naive / certified: {t_naive / t_fast:.2f}")
    for k, v in ref.items():
        excess = float((fast[k] / v - 1).max())
        low = bool((fast[k] >= v).all())
        print(f"  {k}: certified ≥ SVD: {low}, max relative excess {excess:.2e}")


if __name__ == "__main__":
    main()
