"""Sharing the clean stream below the intervened block gives the very same logits."""

from __future__ import annotations

import pytest
import torch

from workbench.interventions import CLEAN, ShortCircuit
from workbench.passes import clean_pass, intervened_pass

TOKENS = torch.randint(1, 96, (3, 20), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("padded", [False, True])
def test_intervened_pass_equals_full_hooked_pass(tiny_model, padded):
    mask = None
    if padded:
        mask = torch.ones_like(TOKENS)
        mask[0, :6] = 0  # left padding on one row
    n_layers = tiny_model.cfg.n_layers
    logits, kept = clean_pass(tiny_model, TOKENS, range(n_layers), attention_mask=mask)
    with torch.no_grad():
        assert torch.equal(logits, tiny_model(TOKENS, attention_mask=mask))
    configs = [
        CLEAN,
        *(ShortCircuit(b) for b in range(n_layers)),
        ShortCircuit((1, 2), kind="zero"),
    ]
    for sc in configs:
        with torch.no_grad(), sc.apply(tiny_model):
            full = tiny_model(TOKENS, attention_mask=mask)
        shared = intervened_pass(tiny_model, TOKENS, sc, kept, attention_mask=mask)
        assert torch.equal(shared, full), sc.label


def test_missing_block_is_a_clear_error(tiny_neox):
    _, kept = clean_pass(tiny_neox, TOKENS, [0])
    with pytest.raises(KeyError, match="entering block 2"):
        intervened_pass(tiny_neox, TOKENS, ShortCircuit(2), kept)
