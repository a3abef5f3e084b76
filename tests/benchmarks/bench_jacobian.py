"""What the bounds' Jacobian reference costs per power iteration at the Pythia-2.8b block shape:
J v by forward mode (``torch.func.jvp``, what it used) against J v as the vjp of the vjp, built
once and replayed (``workbench.bounds_math.jacobian_norms``), with Jᵀ w (``torch.func.vjp``)
and a plain forward for scale, in float32 on 4 × 64 tokens; prints each time, the ratio of the
two J v methods measured in the same run, and their largest difference.

Run by hand (not collected by pytest):

    python tests/benchmarks/bench_jacobian.py --threads 2
"""

from __future__ import annotations

import torch
from bench_weight_layout import parse_args, pythia_block_model, seconds


def main() -> None:
    args = parse_args(__doc__)
    block = pythia_block_model(torch.float32).blocks[0]
    gen = torch.Generator().manual_seed(0)
    x, v = (torch.randn(4, 64, 2560, generator=gen) for _ in range(2))
    r = args.repeats
    with torch.no_grad():
        forward = seconds(block, x, repeats=r)
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(block, x)
        _, jvp_fn = torch.func.vjp(lambda w: vjp_fn(w)[0], torch.zeros_like(x))
        vjp = seconds(vjp_fn, v, repeats=r)
        replayed = seconds(jvp_fn, v, repeats=r)
        dual = seconds(lambda t: torch.func.jvp(block, (x,), (t,)), v, repeats=r)
        diff = (jvp_fn(v)[0] - torch.func.jvp(block, (x,), (v,))[1]).abs().max().item()
    print(f"torch {torch.__version__}, {args.threads} threads, float32, [4, 64, 2560]")
    print(f"forward {forward:.3f} s; J^T w (vjp) {vjp:.3f} s")
    print(
        f"J v: forward mode {dual:.3f} s, vjp of the vjp {replayed:.3f} s, "
        f"{dual / replayed:.1f}x; max |difference| {diff:.2e}"
    )
    print(f"power iteration step: {dual + vjp:.3f} s -> {replayed + vjp:.3f} s")


if __name__ == "__main__":
    main()
