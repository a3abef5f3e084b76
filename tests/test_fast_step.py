"""The lean decode step computes TransformerLens' own forward, one position at a time."""

from __future__ import annotations

import pytest
import torch
from test_memorization import check_against_naive
from tiny_models import tiny_config, tiny_llama

from workbench import fast_step
from workbench.decode import evaluate_batch
from workbench.interventions import CLEAN, ShortCircuit, single_block_sweep


@pytest.fixture(params=["neox", "neo", "llama", "gpt2"])
def family(request, tiny_neox, tiny_neo):
    from transformer_lens import HookedTransformer

    if request.param == "llama":
        return tiny_llama(n_layers=3)
    if request.param == "gpt2":  # absolute position embeddings, sequential blocks
        torch.manual_seed(0)
        return HookedTransformer(tiny_config(n_layers=3)).eval()
    return {"neox": tiny_neox, "neo": tiny_neo}[request.param]


@pytest.mark.parametrize(
    "sc",
    [CLEAN, ShortCircuit((1,)), ShortCircuit((0, 2), kind="zero"), ShortCircuit((1,), (0, 3))],
    ids=str,
)
def test_step_by_step_equals_the_full_forward(family, sc):
    """From an empty buffer, feeding a sequence one token at a time gives the logits of one full
    pass at every position (past GPT-Neo's local window of 8, too)."""
    tokens = torch.randint(1, 96, (3, 20), generator=torch.Generator().manual_seed(1))
    buffers = fast_step.Buffers(family, rows=3, context=20)
    with torch.inference_mode(), sc.apply(family):
        full = family(tokens)
        steps = [fast_step.step(family, tokens[:, p : p + 1], buffers, p) for p in range(20)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=2e-5)


def test_loaded_keys_continue_a_teacher_forced_pass(tiny_neox):
    """Rotated keys and values captured from a full pass, loaded into the buffers, give the next
    position's logits."""
    tokens = torch.randint(1, 96, (2, 12), generator=torch.Generator().manual_seed(2))
    store: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        store[hook.name] = act

    names = [f"blocks.{i}.attn.{h}" for i in range(3) for h in ("hook_rot_k", "hook_v")]
    with torch.inference_mode():
        full = tiny_neox.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
        buffers = fast_step.Buffers(tiny_neox, rows=2, context=12)
        for i in range(3):
            k, v = store[f"blocks.{i}.attn.hook_rot_k"], store[f"blocks.{i}.attn.hook_v"]
            buffers.load(0, i, k[:, :11], v[:, :11])
        last = fast_step.step(tiny_neox, tokens[:, 11:], buffers, 11)
    torch.testing.assert_close(last, full[:, -1], rtol=0, atol=2e-5)


def test_unsupported_models_and_hooks_fall_back(tiny_neox):
    from transformer_lens import HookedTransformer

    assert fast_step.supports(tiny_neox, ["blocks.1.hook_attn_out", "blocks.0.attn.hook_v"])
    assert not fast_step.supports(tiny_neox, ["blocks.1.attn.hook_pattern"])
    capped = HookedTransformer(tiny_config(attn_scores_soft_cap=30.0))
    assert not fast_step.supports(capped)
    alibi = HookedTransformer(tiny_config(positional_embedding_type="alibi"))
    assert not fast_step.supports(alibi)
    tokens = torch.randint(1, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="fast_step does not support"):
        evaluate_batch(capped, tokens, [CLEAN], prefix_len=4, lean=True)
    assert evaluate_batch(capped, tokens, [CLEAN], prefix_len=4)[CLEAN].generated.shape == (2, 8)


def _random_tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 96, (8, 24), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("feature", [{"use_qk_norm": True}, {"clip_qkv": 0.05}], ids=str)
def test_models_whose_cached_keys_no_hook_sees_decode_exactly(feature):
    """TransformerLens caches keys after query/key norms or clipping, which hook_k does not see:
    the lean step refuses such models and the engine decodes their diverging rows naively."""
    model = tiny_llama(n_layers=3, **feature)
    with torch.no_grad():  # sharper distributions, so short-circuits change the greedy suffix
        for param in model.parameters():
            param.mul_(3.0)
    assert not fast_step.supports(model)
    ivs = [CLEAN, *single_block_sweep(range(3))]
    results = check_against_naive(model, _random_tokens(), ivs)
    assert any((results[sc].first_mismatch < 15).any() for sc in ivs)


@pytest.mark.parametrize("where", ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_z"])
def test_hooks_already_on_the_model_act_in_every_decode_step(where, tiny_neo):
    """A user's own hook: elsewhere than q, k, v, z or the attention output it turns the lean
    step off; either way generation equals naive generation under the same hook."""

    def nudge(act, hook):
        return act + 0.5 * torch.sin(torch.arange(act.shape[-1], dtype=act.dtype) + 1.0)

    with tiny_neo.hooks(fwd_hooks=[(where, nudge)]):
        names = [n for n, point in tiny_neo.hook_dict.items() if point.fwd_hooks]
        assert fast_step.supports(tiny_neo, names) == where.endswith("hook_z")
        check_against_naive(tiny_neo, _random_tokens(1), [CLEAN, ShortCircuit((2,))])
