"""Shared fixtures: tiny Hugging Face checkpoints written on the fly, and a check that no test
leaves a hook behind on any HookedTransformer."""

from __future__ import annotations

import gc
import os
import sys
import warnings
from pathlib import Path

# Tests never reach a model hub: everything they load is written by the tests or shipped in data/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "WORKBENCH_BOUNDS_CACHE" not in os.environ:  # the bounds' weight norms: never the user's
    import tempfile  # (the rest of the workbench cache, the fetched wheels, is shared)

    os.environ["WORKBENCH_BOUNDS_CACHE"] = tempfile.mkdtemp(prefix="workbench-bounds-")

import pytest
import torch
from transformer_lens import HookedTransformer

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import write_tiny_neo, write_tiny_neox

from workbench.models import load_model

# Tiny models gain nothing from threads, and contended threads slow them by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory) -> Path:
    return write_tiny_neox(tmp_path_factory.mktemp("tiny-neox"))


@pytest.fixture(scope="session")
def tiny_neo_dir(tmp_path_factory) -> Path:
    return write_tiny_neo(tmp_path_factory.mktemp("tiny-neo"))


@pytest.fixture(scope="session")
def tiny_neox(tiny_neox_dir) -> HookedTransformer:
    return load_model(tiny_neox_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_neo(tiny_neo_dir) -> HookedTransformer:
    return load_model(tiny_neo_dir, device="cpu")


@pytest.fixture(params=["neox", "neo"])
def tiny_model(request) -> HookedTransformer:
    """Each test that takes this runs on both families."""
    return request.getfixturevalue(f"tiny_{request.param}")


def live_hooks(model: torch.nn.Module) -> list[str]:
    """Names of modules that still carry a forward or backward hook."""
    return [
        name
        for name, mod in model.named_modules()
        if mod._forward_hooks
        or mod._backward_hooks
        or mod._forward_pre_hooks
        or getattr(mod, "fwd_hooks", None)
        or getattr(mod, "bwd_hooks", None)
    ]


@pytest.fixture(autouse=True)
def no_hook_outlives_its_call():
    """Every test: afterwards, no HookedTransformer alive anywhere carries a hook."""
    yield
    leaks = {}
    with warnings.catch_warnings():  # isinstance on some torch objects warns of deprecation
        warnings.simplefilter("ignore")
        models = [obj for obj in gc.get_objects() if isinstance(obj, HookedTransformer)]
    for model in models:
        if names := live_hooks(model):
            leaks[model.cfg.model_name] = names[:5]
    assert not leaks, f"hooks left on models after the test: {leaks}"
