"""Weights laid out in memory as Hugging Face's ``nn.Linear`` lays them out.

TransformerLens stores a standard MLP's ``W_in`` / ``W_out`` as ``[d_in, d_out]`` row-major and
multiplies with ``torch.addmm(b, x, W)``. On a CPU, PyTorch's bfloat16 and float16 ``addmm``
with that layout falls back to a naive kernel: 0.25 GFLOPS for a ``[64, 2560] @ [2560, 10240]``
product on this machine's 2 cores, against 20.1 GFLOPS (bfloat16) and 26.5 GFLOPS (float16) for
the same product with the weight stored ``[d_out, d_in]`` row-major, which is ``nn.Linear``'s
layout (at 4 rows: 0.25 against 6.6 and 10.0; ``tests/benchmarks/bench_weight_layout.py``). At
the Pythia-2.8b shape the slow MLP alone made a bfloat16 decode step take seconds.

``hf_layout`` re-lays weights without changing a value or a shape, only strides:

* in bfloat16 and float16, ``W_in``, ``W_gate``, ``W_out`` and ``W_U`` become column-major
  ``[d_in, d_out]`` views of ``[d_out, d_in]`` row-major storage, so TransformerLens' ``addmm``
  runs the kernel (and the rounding) of Hugging Face's ``nn.Linear``. In float32 both layouts give
  the same bits and row-major is the faster one at decode sizes (about 10% at 1 to 16 rows,
  measured), so float32 keeps TransformerLens' layout;
* in every dtype, ``W_Q`` / ``W_K`` / ``W_V`` ``[head, d_model, d_head]`` become views of
  ``[head, d_head, d_model]`` storage and ``W_O`` ``[head, d_head, d_model]`` of ``[d_model,
  head, d_head]`` storage: the layouts TransformerLens rearranges them into before each
  ``F.linear``, so those rearrangements are views instead of copies of every attention weight at
  every forward (same values, so same bits).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

_LINEAR = ("W_in", "W_gate", "W_out")
_HALF = (torch.bfloat16, torch.float16)


def _relay(param: torch.nn.Parameter, storage_order: tuple[int, ...]) -> None:
    """Keep ``param``'s values and shape; store it contiguous in the dimension order given."""
    inverse = sorted(range(len(storage_order)), key=storage_order.__getitem__)
    param.data = param.data.permute(storage_order).contiguous().permute(inverse)


def _is_half_matrix(weight: object) -> bool:
    return isinstance(weight, torch.nn.Parameter) and weight.ndim == 2 and weight.dtype in _HALF


def hf_layout(model: HookedTransformer) -> HookedTransformer:
    """Re-lay ``model``'s weights in place (see the module docstring); returns the model."""
    with torch.no_grad():
        for block in model.blocks:
            mlp = getattr(block, "mlp", None)
            for name in _LINEAR:
                weight = getattr(mlp, name, None)
                if _is_half_matrix(weight):
                    _relay(weight, (1, 0))
            attn = block.attn
            for name in ("W_Q", "W_K", "W_V"):
                weight = getattr(attn, name, None)
                if isinstance(weight, torch.nn.Parameter) and weight.ndim == 3:
                    _relay(weight, (0, 2, 1))
            w_o = getattr(attn, "W_O", None)
            if isinstance(w_o, torch.nn.Parameter) and w_o.ndim == 3:
                _relay(w_o, (2, 0, 1))
        if hasattr(model, "unembed") and _is_half_matrix(model.unembed.W_U):
            _relay(model.unembed.W_U, (1, 0))
    return model
