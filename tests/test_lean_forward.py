"""The lean teacher-forced forward is TransformerLens' forward, bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_fast_step import family  # noqa: F401  (neox, neo, llama, gpt2)

from workbench import lean_forward
from workbench.interventions import CLEAN, ShortCircuit


def _recorder(seen: dict):
    def hook(act, hook):
        seen.setdefault(hook.name, []).append(act.clone())

    return hook


@pytest.mark.parametrize(
    "sc", [CLEAN, ShortCircuit((1,)), ShortCircuit((0, 2), kind="zero"), ShortCircuit(1, (0, 3))]
)
@pytest.mark.parametrize("start", [None, 1])
def test_bit_identical_to_transformer_lens(family, sc, start):  # noqa: F811
    """Same stream after the last block, same activations at every hook point (pattern and
    scores included), with interventions that rewrite activations; GPT-Neo's local layers and
    sequential GPT-2 blocks too. Grouped-query models are refused."""
    if not lean_forward.supports(family):
        assert family.cfg.n_key_value_heads not in (None, family.cfg.n_heads)
        return
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(1, family.cfg.d_vocab, (3, 20), generator=gen)
    names = [n for n in family.hook_dict if n.startswith("blocks.") and ".ln1." not in n]
    runs = []
    with torch.inference_mode():
        inputs = tokens if start is None else family(tokens, stop_at_layer=start)
        for lean in (False, True):
            seen: dict = {}
            hooks = sc.hooks(family) + [(n, _recorder(seen)) for n in names]
            with family.hooks(fwd_hooks=hooks):
                if lean:
                    out = lean_forward.forward(family, inputs, start)
                else:
                    at = {} if start is None else {"start_at_layer": start, "tokens": tokens}
                    out = family(inputs, stop_at_layer=family.cfg.n_layers, **at)
            runs.append((out, seen))
    (ref, ref_seen), (out, seen) = runs
    assert torch.equal(out, ref)
    assert seen.keys() == ref_seen.keys() and len(seen) > 10
    for name, acts in ref_seen.items():
        assert len(seen[name]) == len(acts) and all(map(torch.equal, seen[name], acts)), name


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_organism_takes_the_lean_forward_in_every_dtype(dtype):
    """Half precision rounds by kernel and layout: the output projection must use TL's."""
    from workbench.models import load_model

    model = load_model(None, device="cpu", dtype=dtype)
    assert lean_forward.supports(model)
    tokens = torch.randint(
        1, model.cfg.d_vocab, (3, 64), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        assert torch.equal(lean_forward.forward(model, tokens), model(tokens, stop_at_layer=12))
