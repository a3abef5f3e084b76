"""A local Hugging Face checkpoint directory as a ``HookedTransformer``, read from its
``config.json`` alone: nothing is guessed from the directory's name.

TransformerLens' configuration mapping (``convert_hf_model_config``) decides some architectures
from the *name* it is given (any name containing ``llama`` is taken for Llama, ``gemma`` for
Gemma, before ``config.json`` is read). A checkpoint under ``~/llama-runs/pythia`` would be
converted as a Llama. So the mapping is given a copy of the checkpoint's ``config.json`` in a
fresh directory whose name guesses nothing, and its answer is checked against the architecture
``config.json`` declares (``architectures``, else the causal LM of its ``model_type``).

The weights must be the ones ``config.json`` describes: a missing, unexpected or differently
shaped tensor is an error (Hugging Face would silently drop extra layers or re-initialise missing
ones). A directory without tokenizer files loads tokenizer-free, with one warning: token ids
work, text is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from workbench.errors import UserError

log = logging.getLogger(__name__)

# Architectures TransformerLens converts from a config.json (it has a branch for each); others
# it converts only under its official names (Gemma, OLMo 1 and 2), from the hub.
LOCAL_ARCHITECTURES = frozenset(
    {
        "GPTNeoXForCausalLM",
        "GPTNeoForCausalLM",
        "GPT2LMHeadModel",
        "OPTForCausalLM",
        "GPTJForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "BloomForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "Olmo3ForCausalLM",
        "OlmoeForCausalLM",
        "GptOssForCausalLM",
        "ApertusForCausalLM",
    }
)
HUB_ONLY_ARCHITECTURES = frozenset(
    {
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "OlmoForCausalLM",
        "Olmo2ForCausalLM",
    }
)
# Words TransformerLens' mapping reads in a model's name to decide its architecture.
GUESSED_FROM_NAME = ("llama", "gemma")
# Any of these makes a tokenizer; tokenizer_config.json alone does not (it names a class only).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt", "spiece.model")


class ModelLoadError(UserError, ValueError):
    """A model name or path the workbench cannot turn into a HookedTransformer."""


def read_config(path: Path) -> dict:
    """``config.json`` of a checkpoint directory that also holds weights."""
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file, not a Hugging Face checkpoint directory.")
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(
            f"{path} is not a Hugging Face checkpoint directory: it has no config.json."
        )
    if not (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
        raise ModelLoadError(f"{path} has a config.json but no weights (*.safetensors or *.bin).")
    try:
        return json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{config} is not JSON ({err}).") from None


def architecture(config: dict, where: Path) -> str:
    """The causal LM class ``config.json`` declares: ``architectures[0]``, else the one of its
    ``model_type``; both present must agree."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    of_type = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if model_type else None
    if not archs and of_type is None:
        raise ModelLoadError(
            f"{where}/config.json names no architecture ('architectures' and 'model_type' "
            "are missing or unknown)."
        )
    arch = archs[0] if archs else of_type
    if of_type is not None and arch != of_type:
        raise ModelLoadError(
            f"{where}/config.json says architectures {arch} but model_type {model_type!r} "
            f"(a {of_type}); make them agree."
        )
    if arch in HUB_ONLY_ARCHITECTURES:
        raise ModelLoadError(
            f"{where} holds a {arch}, which TransformerLens converts only under its official "
            "name from the hub (e.g. google/gemma-2b), not from a directory."
        )
    if arch not in LOCAL_ARCHITECTURES:
        raise ModelLoadError(
            f"{where} holds a {arch}, which TransformerLens cannot convert to a "
            f"HookedTransformer. Supported: {', '.join(sorted(LOCAL_ARCHITECTURES))}."
        )
    return arch


def _for_mapping(config: dict, arch: str) -> dict:
    """``config.json`` as TransformerLens' mapping reads it: the architecture stated, and GPT-2's
    ``n_ctx`` (which ``save_pretrained`` no longer writes) equal to its ``n_positions``."""
    out = {**config, "architectures": [arch]}
    if arch == "GPT2LMHeadModel" and "n_ctx" not in out:
        out["n_ctx"] = out.get("n_positions", 1024)
    return out


def hooked_config(
    path: Path, config: dict, arch: str, hf_cfg: dict, **kwargs
) -> tl_loading.HookedTransformerConfig:
    """TransformerLens' config for the checkpoint, from its ``config.json`` only."""
    neutral = Path(tempfile.mkdtemp(prefix="workbench-config-"))
    try:
        if any(word in str(neutral).lower() for word in GUESSED_FROM_NAME):
            raise ModelLoadError(
                f"the temporary directory {neutral} contains {' or '.join(GUESSED_FROM_NAME)}, "
                "which TransformerLens reads as an architecture; set TMPDIR to another one."
            )
        (neutral / "config.json").write_text(json.dumps(_for_mapping(config, arch)))
        cfg = tl_loading.get_pretrained_model_config(
            str(neutral), hf_cfg=hf_cfg, local_files_only=True, **kwargs
        )
    finally:
        shutil.rmtree(neutral, ignore_errors=True)
    if cfg.original_architecture != arch:  # a guess took over after all: never convert it
        raise ModelLoadError(
            f"TransformerLens read {path} as a {cfg.original_architecture}, but its "
            f"config.json says {arch}."
        )
    cfg.model_name = path.name
    return cfg


def _summary(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_hf(path: Path, arch: str, dtype: torch.dtype):
    """The Hugging Face model, refused unless its weights are exactly those of the config."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=dtype, output_loading_info=True
        )
    except RuntimeError as err:
        if "mismatch" not in str(err):
            raise
        raise ModelLoadError(
            f"{path}: the weights' shapes do not match config.json (different dimensions: "
            "hidden size, heads, vocabulary?)."
        ) from None
    mismatched = [k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]]
    problems = [
        f"{what}: {_summary(sorted(keys))}"
        for what, keys in (
            ("missing from the weights", info["missing_keys"]),
            ("in the weights, not in config.json's model", info["unexpected_keys"]),
            ("of another shape", mismatched),
        )
        if keys
    ]
    if problems or info.get("error_msgs"):
        detail = "; ".join(problems) or _summary(info["error_msgs"])
        raise ModelLoadError(f"{path}: the weights do not match config.json ({detail}).")
    return model


def has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def load(
    path: Path, device: torch.device, dtype: torch.dtype, processing: dict[str, bool]
) -> HookedTransformer:
    """Convert a local checkpoint with TransformerLens' converters, its architecture read from
    ``config.json``."""
    from transformers import AutoTokenizer

    path = path.resolve()
    config = read_config(path)
    arch = architecture(config, path)
    hf_model = load_hf(path, arch, dtype)
    cfg = hooked_config(
        path,
        config,
        arch,
        hf_model.config.to_dict(),
        fold_ln=processing["fold_ln"],
        device=device,
        dtype=dtype,
    )
    tokenizer = None
    if has_tokenizer(path):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        log.warning(
            "%s has no tokenizer files (%s): loaded without a tokenizer; token ids work, "
            "text input is refused",
            path,
            ", ".join(TOKENIZER_FILES),
        )
    cfg.tokenizer_name = str(path) if tokenizer is not None else None
    state_dict = tl_loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    del hf_model
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    with no_float32_round_trip():
        model.load_and_process_state_dict(state_dict, **processing)
    del state_dict
    model.move_model_modules_to_device()
    return model


@contextmanager
def no_float32_round_trip() -> Iterator[None]:
    """TransformerLens' weight processing casts *every* weight to float32 and back, even when no
    processing is asked for: for a bfloat16 model, twice its weights' bytes held at once. With
    nothing to process, the cast and cast back are the identity; skip them. Restored on exit."""
    from transformer_lens.weight_processing import ProcessWeights

    saved = ProcessWeights.__dict__["process_weights"]
    original = ProcessWeights.process_weights

    def process_weights(state_dict, cfg, *args, **flags):
        if args or any(value for name, value in flags.items() if name != "adapter"):
            return original(state_dict, cfg, *args, **flags)
        return state_dict

    ProcessWeights.process_weights = staticmethod(process_weights)
    try:
        yield
    finally:
        ProcessWeights.process_weights = saved
