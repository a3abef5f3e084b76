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


@pytest.mark.parametrize(
    "sc",
    [CLEAN, ShortCircuit((2,)), ShortCircuit((1, 2), kind="zero"), ShortCircuit(2, (0, 3))],
)
def test_trimmed_last_block_equals_the_full_forward_there(family, sc):  # noqa: F811
    """``first``: the positions from ``first`` on, as TransformerLens computes them (to float32
    rounding: the matrix products run on fewer rows), with interventions on the last block whose
    hooks see values at every position and the attention output at the trimmed ones only."""
    if not lean_forward.supports(family):
        return
    last = family.cfg.n_layers - 1
    sc = ShortCircuit(tuple(min(b, last) for b in sc.blocks), sc.heads, sc.kind)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, family.cfg.d_vocab, (3, 20), generator=gen)
    with torch.inference_mode(), family.hooks(fwd_hooks=sc.hooks(family)):
        ref = family(tokens, stop_at_layer=family.cfg.n_layers)
        for first in (1, 7, 19):
            out = lean_forward.forward(family, tokens, None, first)
            assert out.shape == ref[:, first:].shape
            torch.testing.assert_close(out, ref[:, first:], rtol=1e-5, atol=1e-5)
            start = family(tokens, stop_at_layer=last)  # from the last block's own input
            torch.testing.assert_close(
                lean_forward.forward(family, start, last, first), ref[:, first:]
            )
