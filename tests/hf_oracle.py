"""The original method's short-circuit, re-created on Hugging Face models: eager attention whose
probabilities are forced to the identity in the chosen blocks (every token attends only to
itself). The oracle of ``tests/test_interventions.py`` and the baseline of
``tests/benchmarks/bench_memorization.py``."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM
from transformers.models.gpt_neox import modeling_gpt_neox


def hf_model(path):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def identity_probs(q_len: int, k_len: int, like: torch.Tensor) -> torch.Tensor:
    """Query i (absolute position k_len - q_len + i) attends to itself only."""
    probs = torch.zeros(q_len, k_len, dtype=like.dtype)
    probs[torch.arange(q_len), torch.arange(k_len - q_len, k_len)] = 1.0
    return probs


@contextmanager
def hf_identity_attention(model, blocks):
    """Re-create the original code's short-circuit: patch Hugging Face eager attention so that the
    attention probabilities of the chosen blocks are the identity."""
    if model.config.model_type == "gpt_neox":
        original = modeling_gpt_neox.eager_attention_forward

        def patched(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
            if module.layer_idx not in blocks:
                return original(module, query, key, value, attention_mask, scaling, dropout, **kw)
            probs = identity_probs(query.shape[-2], key.shape[-2], value)
            return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

        modeling_gpt_neox.eager_attention_forward = patched
        try:
            yield model
        finally:
            modeling_gpt_neox.eager_attention_forward = original
    else:
        patched_modules = [model.transformer.h[b].attn.attention for b in blocks]

        def patched_attn(query, key, value, attention_mask=None):
            probs = identity_probs(query.shape[-2], key.shape[-2], value)
            return torch.matmul(probs, value), probs

        for mod in patched_modules:
            mod._attn = patched_attn
        try:
            yield model
        finally:
            for mod in patched_modules:
                del mod._attn
