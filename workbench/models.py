"""Load any model the workbench studies as a TransformerLens ``HookedTransformer``.

Three kinds of name, tried in this order:

1. the embedded organism (``workbench.organism.registry``): ``None`` means its default member;
2. a local Hugging Face checkpoint directory (``config.json`` + weights), converted fully offline
   with TransformerLens' own configuration mapping and weight converters (GPT-NeoX/Pythia,
   GPT-Neo, GPT-2, OPT, GPT-J, Llama, ...), its architecture read from ``config.json``, never
   from the path (``workbench.checkpoints``);
3. a TransformerLens official name or alias (``pythia-1.4b``, ``EleutherAI/gpt-neo-1.3B``, ...),
   loaded by TransformerLens from the Hugging Face hub or the local Hugging Face cache, with the
   Pythia training checkpoints available through ``checkpoint=step``.

Weight processing is *off* by default, deliberately: with ``process_weights=False`` the residual
stream of the ``HookedTransformer`` equals the Hugging Face model's hidden states, so the norms the
bounds module measures are the model's own. TransformerLens' usual processing (fold LayerNorm
scales into the next matrices, centre the writing weights and the unembedding, fold value biases
into the output bias) keeps every log-prob but removes the mean of each residual vector, which
changes its norm; ask for it with ``process_weights=True`` when you want TransformerLens' view.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
from pathlib import Path

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from workbench import checkpoints
from workbench.checkpoints import ModelLoadError
from workbench.organism import registry
from workbench.weight_layout import hf_layout

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

HUB_HELP = (
    "Its weights are neither in the local Hugging Face cache ({cache}) nor reachable on the hub. "
    "Download them on a machine with access (`huggingface-cli download {repo}`) and copy the "
    "cache here, or point HF_HOME / HF_HUB_CACHE at a cache that has them, or pass the path of "
    "a local checkpoint directory instead of the name."
)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but torch sees no CUDA device.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but MPS is not available.")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def official_names() -> list[str]:
    """Every name TransformerLens accepts: official names and their aliases."""
    return sorted(set(tl_loading.OFFICIAL_MODEL_NAMES) | set(tl_loading.make_model_alias_map()))


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    process_weights: bool = False,
    checkpoint: int | None = None,
    **from_pretrained_kwargs,
) -> HookedTransformer:
    """Load a model as a ``HookedTransformer`` in eval mode.

    Args:
        name_or_path: organism member name, local checkpoint directory, or TransformerLens
            official name/alias; ``None`` is the embedded default model.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: float32 / float64 / bfloat16 / float16 (``fp32``, ``bf16``, ... also accepted).
        process_weights: TransformerLens' weight processing (fold_ln, centering, value-bias
            folding). Off by default so that residual-stream norms are the model's own.
        checkpoint: a training checkpoint (step) for models that have them (Pythia).
        from_pretrained_kwargs: passed on to ``HookedTransformer.from_pretrained``.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    processing = dict(
        fold_ln=process_weights,
        center_writing_weights=process_weights,
        center_unembed=process_weights,
        fold_value_biases=process_weights,
    )
    if name_or_path is None:
        if registry.DEFAULT_MODEL is None:
            raise ModelLoadError("no embedded default model is registered; pass a name or path.")
        name_or_path = registry.DEFAULT_MODEL
    name = str(name_or_path)
    if name in registry.EMBEDDED_MODELS:
        path = registry.EMBEDDED_MODELS[name]
        if not path.is_dir():
            raise ModelLoadError(f"embedded model {name!r} is registered but {path} is missing.")
        if checkpoint is not None:  # the organism's training checkpoints, as Pythia's steps
            try:
                path = registry.checkpoint_dir(name, int(checkpoint))
            except KeyError as err:
                raise ModelLoadError(err.args[0]) from None
        model = checkpoints.load(path, dev, torch_dtype, processing)
    elif Path(name).expanduser().exists():
        if checkpoint is not None:
            raise ModelLoadError(
                "checkpoint= selects a hub training checkpoint; a directory is one."
            )
        model = checkpoints.load(Path(name).expanduser(), dev, torch_dtype, processing)
    else:
        model = _load_hub(name, dev, torch_dtype, processing, checkpoint, from_pretrained_kwargs)
    return hf_layout(model).eval()


def _load_hub(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    processing: dict[str, bool],
    checkpoint: int | None,
    kwargs: dict,
) -> HookedTransformer:
    aliases = tl_loading.make_model_alias_map()
    if name.lower() not in aliases:
        close = difflib.get_close_matches(name, official_names(), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        embedded = ", ".join(sorted(registry.EMBEDDED_MODELS)) or "none"
        raise ModelLoadError(
            f"unknown model {name!r}: not an embedded model ({embedded}), not a directory, and "
            f"not a TransformerLens model name.{hint}"
        )
    repo = aliases[name.lower()]
    revision = "main"
    if checkpoint is not None:
        revision = _hub_revision(repo, int(checkpoint))
        kwargs = {**kwargs, "checkpoint_value": int(checkpoint)}
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()) as said,  # TransformerLens prints
            checkpoints.no_float32_round_trip(),
        ):
            model = HookedTransformer.from_pretrained(
                repo, device=str(device), dtype=dtype, **processing, **kwargs
            )
        log.info(said.getvalue().strip())
        return model
    except OSError as err:  # hub unreachable and not cached: transformers raises OSError
        from huggingface_hub import constants

        what = repo if revision == "main" else f"{repo} --revision {revision}"
        msg = HUB_HELP.format(cache=constants.HF_HUB_CACHE, repo=what)
        at = "" if revision == "main" else f" at {revision}"
        raise ModelLoadError(f"cannot load {name!r} ({repo}{at}). {msg}") from err


def _hub_revision(repo: str, step: int) -> str:
    """The hub revision of a training checkpoint (``step1000``), refused unless the model has
    that checkpoint."""
    try:
        labels, _ = tl_loading.get_checkpoint_labels(repo)
    except ValueError:
        raise ModelLoadError(
            f"{repo} has no training checkpoints (TransformerLens knows those of Pythia and "
            "stanford-crfm); leave checkpoint out."
        ) from None
    if step not in labels:
        near = ", ".join(map(str, sorted(sorted(labels, key=lambda s: abs(s - step))[:3])))
        raise ModelLoadError(f"{repo} has no checkpoint at step {step}; nearest: {near}.")
    return f"step{step}"
