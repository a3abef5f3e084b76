"""Half-precision loading without TransformerLens' float32 round trip (which holds twice the
weights' bytes at once) gives exactly the model TransformerLens' own loading gives."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading
from transformer_lens.weight_processing import ProcessWeights
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.models import load_model


def transformer_lens_own(path, dtype, process_weights):
    """TransformerLens' loading path, step by step, float32 round trip included."""
    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    flags = dict.fromkeys(
        ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"],
        process_weights,
    )
    cfg = tl_loading.get_pretrained_model_config(
        str(path),
        hf_cfg=hf.config.to_dict(),
        fold_ln=process_weights,
        device="cpu",
        dtype=dtype,
        local_files_only=True,
    )
    model = HookedTransformer(cfg, AutoTokenizer.from_pretrained(path), move_to_device=False)
    model.load_and_process_state_dict(
        tl_loading.get_pretrained_state_dict(str(path), cfg, hf, dtype=dtype), **flags
    )
    return model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("process_weights", [False, True])
@pytest.mark.parametrize("family", ["neox", "neo"])
def test_same_weights_bit_for_bit(request, family, dtype, process_weights):
    path = request.getfixturevalue(f"tiny_{family}_dir")
    ours = load_model(path, device="cpu", dtype=dtype, process_weights=process_weights)
    ref = transformer_lens_own(path, dtype, process_weights)
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert {p.dtype for p in ours.parameters()} == {dtype}


def test_the_round_trip_is_skipped_only_while_loading(tiny_neox_dir, monkeypatch):
    """During an unprocessed half-precision load no weight is cast to float32; TransformerLens'
    own processing is back in place afterwards."""
    saved = ProcessWeights.__dict__["process_weights"]
    casts = []
    original_float = torch.Tensor.float

    def spy(self, *args, **kwargs):
        casts.append(tuple(self.shape))
        return original_float(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "float", spy)
    load_model(tiny_neox_dir, device="cpu", dtype="bfloat16")
    assert casts == []
    assert ProcessWeights.__dict__["process_weights"] is saved
    load_model(tiny_neox_dir, device="cpu", dtype="bfloat16", process_weights=True)
    assert len(casts) > 10  # processing still casts (its own choice, for precision)
