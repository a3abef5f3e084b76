"""What ``workbench.weight_layout`` buys on this machine: matmul kernel speed by weight layout and
dtype, and a Pythia-2.8b-shaped TransformerLens block before and after the re-layout.

Run by hand (not collected by pytest):

    python tests/benchmarks/bench_weight_layout.py --threads 2

Prints GFLOPS of ``torch.addmm(b, x, W)`` with ``W`` ``[d_in, d_out]`` row-major (TransformerLens'
MLP), the same with ``W`` column-major (after ``hf_layout``) and ``F.linear`` with ``nn.Linear``'s
``[d_out, d_in]`` weight, each ratio against row-major, then the wall time of one block's forward
(``[4, 64]`` tokens) in each layout and their ratio, and whether the outputs agree bit for bit.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def parse_args(doc: str) -> argparse.Namespace:
    """``--threads`` (set for torch here) and ``--repeats``: the options of these benchmarks."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args


def seconds(fn, *args, repeats: int) -> float:
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - start) / repeats


def kernels(rows: int, d_in: int, d_out: int, repeats: int) -> None:
    flop = 2 * rows * d_in * d_out / 1e9
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        w = torch.randn(d_in, d_out).to(dtype)
        b, x = torch.randn(d_out).to(dtype), torch.randn(rows, d_in).to(dtype)
        w_col, w_lin = w.T.contiguous().T, w.T.contiguous()
        row = seconds(torch.addmm, b, x, w, repeats=repeats)
        col = seconds(torch.addmm, b, x, w_col, repeats=repeats)
        lin = seconds(F.linear, x, w_lin, b, repeats=repeats)
        same = torch.equal(torch.addmm(b, x, w_col), F.linear(x, w_lin, b))
        print(
            f"{dtype!s:15} [{rows},{d_in}]@[{d_in},{d_out}]  row-major {flop / row:7.2f} GF  "
            f"column-major {flop / col:7.2f} GF ({row / col:6.1f}x)  F.linear {flop / lin:7.2f} GF "
            f"({row / lin:6.1f}x)  column-major == F.linear: {same}"
        )


def pythia_block_model(dtype: torch.dtype):
    """A one-block TransformerLens model of Pythia-2.8b's block shape, random weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=2560, n_heads=32, d_head=80, d_mlp=10240, n_ctx=64, d_vocab=512,
        act_fn="gelu", normalization_type="LN", positional_embedding_type="rotary",
        rotary_dim=20, parallel_attn_mlp=True, dtype=dtype,
        original_architecture="GPTNeoXForCausalLM",
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


def block(dtype: torch.dtype, repeats: int) -> None:
    from workbench.weight_layout import hf_layout

    model = pythia_block_model(dtype)
    resid = torch.randn(4, 64, 2560).to(dtype)
    with torch.no_grad():
        before = seconds(model.blocks[0], resid, repeats=repeats)
        out_before = model.blocks[0](resid)
        hf_layout(model)
        after = seconds(model.blocks[0], resid, repeats=repeats)
        out_after = model.blocks[0](resid)
    print(
        f"{dtype!s:15} Pythia-2.8b block, [4, 64] tokens: row-major {before:.3f} s, "
        f"hf_layout {after:.3f} s, {before / after:.1f}x; same bits: "
        f"{torch.equal(out_before, out_after)}"
    )


def main() -> None:
    args = parse_args(__doc__)
    print(f"torch {torch.__version__}, {args.threads} threads")
    for rows in (4, 64):
        kernels(rows, 2560, 10240, args.repeats)
    for dtype in (torch.float32, torch.bfloat16):
        block(dtype, 1 if dtype != torch.float32 else args.repeats)


if __name__ == "__main__":
    main()
