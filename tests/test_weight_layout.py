"""``workbench.weight_layout``: the loader re-lays weights as ``nn.Linear`` stores them. Values and
shapes never change; TransformerLens' per-forward weight copies become views; and a half-precision
MLP then computes, bit for bit, what the Hugging Face model's ``nn.Linear`` layers compute."""

from __future__ import annotations

import einops
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import FAMILIES, write_tiny
from workbench import checkpoints, fast_step
from workbench.models import load_model
from workbench.weight_layout import hf_layout

NO_PROCESSING = dict.fromkeys(
    ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"], False
)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    return request.param, write_tiny(tmp_path_factory.mktemp(request.param), request.param)


def raw_load(path, dtype):
    """The loader without the re-layout: TransformerLens' own row-major weights."""
    return checkpoints.load(path, torch.device("cpu"), dtype, NO_PROCESSING).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_shapes_unchanged(family_dir, dtype):
    _, path = family_dir
    before = raw_load(path, dtype)
    after = load_model(path, device="cpu", dtype=dtype)
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_transformer_lens_rearrangements_become_views(family_dir, dtype):
    """What TransformerLens hands ``F.linear`` is contiguous already, so ``.contiguous()`` is free;
    in half precision the standard MLP's ``addmm`` gets ``nn.Linear``'s column-major weight, in
    float32 it keeps TransformerLens' row-major one."""
    _, path = family_dir
    model = load_model(path, device="cpu", dtype=dtype)
    half = dtype != "float32"
    assert model.W_U.T.is_contiguous() == half and model.W_U.is_contiguous() != half
    for block in model.blocks:
        attn = block.attn
        w_o = einops.rearrange(attn.W_O, "h dh dm -> dm (h dh)")
        assert w_o.is_contiguous() and w_o.data_ptr() == attn.W_O.data_ptr()
        assert torch.equal(fast_step.out_weight(attn), w_o)
        if isinstance(attn.W_Q, torch.nn.Parameter):
            assert einops.rearrange(attn.W_Q, "h dm dh -> (h dh) dm").is_contiguous()
        for name in ("W_in", "W_gate", "W_out"):
            weight = getattr(block.mlp, name, None)
            if weight is not None:
                assert weight.T.is_contiguous() == half, name


def _hf_mlps(hf):
    base = getattr(hf, hf.base_model_prefix)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    return [layer.mlp for layer in layers]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_mlp_is_hugging_faces_bit_for_bit(tmp_path, dtype):
    """Oracle: the Hugging Face GPT-NeoX MLP (``nn.Linear`` → GELU → ``nn.Linear``) on the same
    half-precision input. TransformerLens' row-major ``addmm`` rounds differently (checked, so that
    the comparison can fail)."""
    path = write_tiny(tmp_path / "neox", "neox", intermediate_size=512, hidden_size=256)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    ours, theirs = load_model(path, device="cpu", dtype=dtype), raw_load(path, dtype)
    x = torch.randn(3, 17, 256, generator=torch.Generator().manual_seed(0)).to(dtype)
    differs = 0
    with torch.no_grad():
        for block, raw, mlp in zip(ours.blocks, theirs.blocks, _hf_mlps(hf), strict=True):
            assert torch.equal(block.mlp(x), mlp(x))
            differs += not torch.equal(raw.mlp(x), mlp(x))
    assert differs  # the old layout does not round as nn.Linear: the test can tell


def test_float32_logits_unchanged(family_dir):
    _, path = family_dir
    tokens = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            load_model(path, device="cpu")(tokens),
            raw_load(path, torch.float32)(tokens),
            rtol=1e-6,
            atol=1e-6,
        )


def test_relayout_is_idempotent(tiny_neox_dir):
    model = load_model(tiny_neox_dir, device="cpu", dtype="bfloat16")
    strides = {k: v.stride() for k, v in model.state_dict().items()}
    hf_layout(model)
    assert strides == {k: v.stride() for k, v in model.state_dict().items()}
