"""load_model against the Hugging Face model itself, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.models import ModelLoadError, load_model, resolve_device, resolve_dtype

TOL = 1e-5


def hf_log_probs(path, tokens):
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(tokens).logits.log_softmax(-1)


@pytest.mark.parametrize("family", ["neox", "neo"])
@pytest.mark.parametrize("process_weights", [False, True])
def test_log_probs_match_hugging_face(request, family, process_weights):
    path = request.getfixturevalue(f"tiny_{family}_dir")
    tokens = torch.randint(0, 96, (4, 64), generator=torch.Generator().manual_seed(1))
    model = load_model(path, device="cpu", process_weights=process_weights)
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
    ref = hf_log_probs(path, tokens)
    err = (ours - ref).abs().max().item()
    print(f"{family} process_weights={process_weights}: max |Δ log-prob| = {err:.2e}")
    assert err < TOL


def test_unprocessed_residual_stream_is_hugging_faces(tiny_neox_dir, tiny_neox):
    """process_weights=False keeps the residual stream (and so its norms) the model's own."""
    tokens = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(2))
    hf = AutoModelForCausalLM.from_pretrained(tiny_neox_dir).eval()
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
        _, cache = tiny_neox.run_with_cache(tokens)
    for layer in range(tiny_neox.cfg.n_layers):
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_pre"], hidden[layer], rtol=1e-5, atol=1e-5
        )


def test_dtypes_and_device(tiny_neox_dir):
    model = load_model(tiny_neox_dir, device="cpu", dtype="bf16")
    assert model.cfg.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.bfloat16
    model64 = load_model(tiny_neox_dir, device="cpu", dtype=torch.float64)
    assert next(model64.parameters()).dtype == torch.float64
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("float8")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_absent_is_a_clear_error(tiny_neox_dir):
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        load_model(tiny_neox_dir, device="cuda")


def test_training_checkpoint_needs_a_hub_model(tiny_neox_dir):
    with pytest.raises(ModelLoadError, match="checkpoint"):
        load_model(tiny_neox_dir, device="cpu", checkpoint=1000)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelLoadError, match=r"Did you mean.*pythia-160m"):
        load_model("pythia-160", device="cpu")


def test_hub_name_without_weights_says_what_to_download(monkeypatch):
    """Here the hub is out of reach and the cache is empty: the message must say what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="huggingface-cli download EleutherAI/pythia-14m"):
        load_model("pythia-14m", device="cpu")


def test_directory_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(tmp_path, device="cpu")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"]})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="cannot convert"):
        load_model(tmp_path, device="cpu")
