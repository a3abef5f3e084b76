"""Local checkpoints load from their config.json alone: every family TransformerLens converts
from a directory against Hugging Face's logits, whatever the path says; tokenizer-free
directories; weights that do not match their config."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from tiny_models import VOCAB, write_tiny
from transformers import AutoModelForCausalLM

from workbench import checkpoints, memorization
from workbench.data import load_samples
from workbench.errors import UserError
from workbench.models import ModelLoadError, load_model

TOL = 1e-5
TOKENS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))


def assert_matches_hugging_face(model, path):
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(TOKENS).logits.log_softmax(-1)
        ours = model(TOKENS).log_softmax(-1)
    err = (ours - ref).abs().max().item()
    assert err < TOL, err
    return err


@pytest.mark.parametrize("process_weights", [False, True])
@pytest.mark.parametrize("family", ["gpt2", "opt", "gptj", "llama", "mistral", "qwen2"])
def test_family_from_a_directory_matches_hugging_face(family, process_weights, tmp_path):
    path = write_tiny(tmp_path / family, family)
    model = load_model(path, device="cpu", process_weights=process_weights)
    assert (
        model.cfg.original_architecture
        == json.loads((path / "config.json").read_text())["architectures"][0]
    )
    print(f"{family}: max |Δ log-prob| = {assert_matches_hugging_face(model, path):.1e}")


def test_gpt2_saved_by_save_pretrained_has_no_n_ctx_and_loads(tmp_path):
    path = write_tiny(tmp_path / "gpt2", "gpt2")
    assert "n_ctx" not in json.loads((path / "config.json").read_text())
    model = load_model(path, device="cpu")
    assert model.cfg.n_ctx == 128
    assert_matches_hugging_face(model, path)


@pytest.mark.parametrize(
    "where", ["runs/llama-baseline/pythia", "gemma/ckpt", "Gemma-2-sweep/neox", "llama"]
)
def test_the_path_never_decides_the_architecture(where, tmp_path):
    """TransformerLens' own mapping takes any name containing llama/gemma for Llama/Gemma."""
    path = write_tiny(tmp_path / where, "neox", num_hidden_layers=2)
    model = load_model(path, device="cpu")
    assert model.cfg.original_architecture == "GPTNeoXForCausalLM"
    assert_matches_hugging_face(model, path)


def test_a_llama_under_a_llama_path(tmp_path):
    """The name-based branch of TransformerLens never reads the config: a NoneType error."""
    path = write_tiny(tmp_path / "llama-3-tiny", "llama")
    assert_matches_hugging_face(load_model(path, device="cpu"), path)


def test_model_type_alone_names_the_architecture(tmp_path):
    path = write_tiny(tmp_path / "m", "gpt2")
    config = json.loads((path / "config.json").read_text())
    del config["architectures"]
    (path / "config.json").write_text(json.dumps(config))
    model = load_model(path, device="cpu")
    assert model.cfg.original_architecture == "GPT2LMHeadModel"
    assert_matches_hugging_face(model, path)
    config["architectures"] = ["LlamaForCausalLM"]  # contradicts model_type gpt2
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="make them agree"):
        load_model(path, device="cpu")


def test_gemma_directories_are_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["GemmaForCausalLM"], "model_type": "gemma"})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="only under its official name"):
        load_model(tmp_path, device="cpu")


def _with_config(src, dest, **changes):
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **changes}))
    return dest


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"num_hidden_layers": 3}, r"in the weights, not in config\.json's model: .*layers\.3\."),
        ({"num_hidden_layers": 8}, r"missing from the weights: .*layers\.6\."),
        ({"hidden_size": 64, "intermediate_size": 256}, "shapes do not match config.json"),
        ({"vocab_size": 128}, "shapes do not match config.json"),
    ],
)
def test_weights_that_do_not_match_the_config_are_refused(changes, says, tmp_path):
    six = write_tiny(tmp_path / "six", "neox", num_hidden_layers=6)
    assert load_model(six, device="cpu").cfg.n_layers == 6
    path = _with_config(six, tmp_path / "changed", **changes)
    with pytest.raises(ModelLoadError, match=says) as err:
        load_model(path, device="cpu")
    assert "\n" not in str(err.value)


def test_a_directory_without_tokenizer_loads_tokenizer_free(tmp_path, caplog, capsys):
    path = write_tiny(tmp_path / "bare", "neox", num_hidden_layers=2, tokenizer=False)
    assert not checkpoints.has_tokenizer(path)
    with caplog.at_level(logging.WARNING):
        model = load_model(path, device="cpu")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no tokenizer files" in warnings[0].getMessage()
    assert model.tokenizer is None
    assert_matches_hugging_face(model, path)

    ids = tmp_path / "ids.jsonl"
    rows = np.asarray(TOKENS[:, :16])
    ids.write_text("".join(json.dumps({"tokens": r.tolist()}) + "\n" for r in rows))
    assert (load_samples(ids, tokenizer=model.tokenizer).tokens == rows).all()
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "w1 w2 w3"}\n')
    with pytest.raises(UserError, match="no tokenizer") as err:
        load_samples(text, tokenizer=None)
    assert "\n" not in str(err.value)
    out = tmp_path / "run"
    argv = ["--model", str(path), "--prefix-len", "8", "--blocks", "0", "--out", str(out)]
    table = memorization.main([*argv, "--data", str(ids)])
    assert len(table) == 2 * len(rows)  # clean and block 0
    with pytest.raises(SystemExit) as exit_:
        memorization.main([*argv, "--data", str(text), "--out", str(tmp_path / "r2")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert exit_.value.code == 2 and len(lines) == 1 and "no tokenizer" in lines[0]


def test_benchmarks_refuse_a_model_without_tokenizer(tmp_path):
    from workbench.lm_eval_adapter import HookedLM

    path = write_tiny(tmp_path / "bare", "gpt2", tokenizer=False)
    with pytest.raises(UserError, match="has no tokenizer, and benchmarks are text"):
        HookedLM(load_model(path, device="cpu"))
