"""ShortCircuit against independent oracles: the Hugging Face weights by hand, a Hugging Face model
whose eager attention probabilities are forced to the identity (the paper's own mechanism), and
KV-cached vs uncached greedy generation."""

from __future__ import annotations

import pytest
import torch
from hf_oracle import hf_identity_attention, hf_model
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from workbench.interventions import CLEAN, ShortCircuit, parse_blocks, single_block_sweep

GEN = torch.Generator().manual_seed(0)
TOKENS = torch.randint(1, 96, (3, 24), generator=GEN)


def hf_identity_attn_out(model, hidden: torch.Tensor, block: int) -> torch.Tensor:
    """A_sc(u) = W_O (W_V LN1(x) + b_V) + b_O, from the Hugging Face modules' weights by hand."""
    if model.config.model_type == "gpt_neox":
        layer = model.gpt_neox.layers[block]
        u = layer.input_layernorm(hidden)
        n_heads, d_head = (
            model.config.num_attention_heads,
            model.config.hidden_size // model.config.num_attention_heads,
        )
        w = layer.attention.query_key_value.weight.view(n_heads, 3, d_head, -1)[:, 2]
        b = layer.attention.query_key_value.bias.view(n_heads, 3, d_head)[:, 2]
        v = torch.einsum("btm,hdm->bthd", u, w) + b
        return layer.attention.dense(v.flatten(-2))
    block_mod = model.transformer.h[block]
    attn = block_mod.attn.attention
    return attn.out_proj(attn.v_proj(block_mod.ln_1(hidden)))


@pytest.mark.parametrize("family", ["neox", "neo"])
def test_identity_output_by_hand_from_hf_weights(request, family):
    model = request.getfixturevalue(f"tiny_{family}")
    hf = hf_model(request.getfixturevalue(f"tiny_{family}_dir"))
    with torch.no_grad():
        hidden = hf(TOKENS, output_hidden_states=True).hidden_states
        for block in range(model.cfg.n_layers):
            name = f"blocks.{block}.hook_attn_out"
            with ShortCircuit(block).apply(model):
                _, cache = model.run_with_cache(TOKENS, names_filter=name)
            expected = hf_identity_attn_out(hf, hidden[block], block)
            torch.testing.assert_close(cache[name], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["neox", "neo"])
@pytest.mark.parametrize("blocks", [(0,), (1,), (0, 2), (2,)])
def test_equals_hf_model_with_identity_attention(request, family, blocks):
    model = request.getfixturevalue(f"tiny_{family}")
    hf = hf_model(request.getfixturevalue(f"tiny_{family}_dir"))
    with torch.no_grad(), hf_identity_attention(hf, blocks):
        ref = hf(TOKENS).logits.log_softmax(-1)
    with torch.no_grad(), ShortCircuit(blocks).apply(model):
        ours = model(TOKENS).log_softmax(-1)
    with torch.no_grad():
        clean = model(TOKENS).log_softmax(-1)
    assert (clean - ref).abs().max() > 1e-2  # the intervention really changes something
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["neox", "neo"])
def test_kv_cached_generation_equals_uncached_and_hf(request, family):
    model = request.getfixturevalue(f"tiny_{family}")
    hf = hf_model(request.getfixturevalue(f"tiny_{family}_dir"))
    prompt = TOKENS[:, :10]
    for block in range(model.cfg.n_layers):
        sc = ShortCircuit(block)
        outs = {}
        for cached in (True, False):
            with sc.apply(model):
                outs[cached] = model.generate(
                    prompt,
                    max_new_tokens=12,
                    do_sample=False,
                    use_past_kv_cache=cached,
                    stop_at_eos=False,
                    verbose=False,
                )
        with torch.no_grad(), hf_identity_attention(hf, (block,)):
            ref = hf.generate(
                prompt,
                max_new_tokens=12,
                do_sample=False,
                use_cache=True,
                attention_mask=torch.ones_like(prompt),
                pad_token_id=0,
            )
        assert torch.equal(outs[True], outs[False])
        assert torch.equal(outs[True], ref)


def test_kv_cached_logits_match_full_pass(tiny_neox):
    """Decoding with a cache: the new token attends to itself only, so cached logits equal the
    logits of one full short-circuited pass over the same sequence."""
    from transformer_lens import TransformerLensKeyValueCache

    sc = ShortCircuit((1,))
    with torch.no_grad(), sc.apply(tiny_neox):
        full = tiny_neox(TOKENS)
        cache = TransformerLensKeyValueCache.init_cache(tiny_neox.cfg, tiny_neox.cfg.device, 3)
        first = tiny_neox(TOKENS[:, :8], past_kv_cache=cache)
        steps = [tiny_neox(TOKENS[:, t : t + 1], past_kv_cache=cache) for t in range(8, 24)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    blocks=st.sets(st.integers(0, 2), min_size=1),
    heads=st.none() | st.sets(st.integers(0, 3), min_size=1),
    kind=st.sampled_from(["identity", "zero"]),
    family=st.sampled_from(["neox", "neo"]),
)
def test_token_zero_never_changes(request, blocks, heads, kind, family):
    model = request.getfixturevalue(f"tiny_{family}")
    sc = ShortCircuit(tuple(blocks), None if heads is None else tuple(heads), kind)
    names = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    with torch.no_grad():
        _, clean = model.run_with_cache(TOKENS, names_filter=names)
        with sc.apply(model):
            _, cut = model.run_with_cache(TOKENS, names_filter=names)
    for name in clean:
        if kind == "identity":
            torch.testing.assert_close(cut[name][:, 0], clean[name][:, 0], rtol=0, atol=1e-6)
    if kind == "identity":
        assert any((cut[n][:, 1:] - clean[n][:, 1:]).abs().max() > 1e-4 for n in clean)


def test_mlp_output_of_short_circuited_parallel_block_is_unchanged(tiny_neox):
    assert tiny_neox.cfg.parallel_attn_mlp
    for block in range(tiny_neox.cfg.n_layers):
        name = f"blocks.{block}.hook_mlp_out"
        with torch.no_grad():
            _, clean = tiny_neox.run_with_cache(TOKENS, names_filter=name)
            with ShortCircuit(block).apply(tiny_neox):
                _, cut = tiny_neox.run_with_cache(TOKENS, names_filter=name)
        torch.testing.assert_close(cut[name], clean[name], rtol=0, atol=0)


def test_all_heads_subset_equals_whole_block(tiny_model):
    n_heads = tiny_model.cfg.n_heads
    for kind in ("identity", "zero"):
        with torch.no_grad(), ShortCircuit((1,), kind=kind).apply(tiny_model):
            whole = tiny_model(TOKENS)
        with torch.no_grad(), ShortCircuit((1,), tuple(range(n_heads)), kind).apply(tiny_model):
            heads = tiny_model(TOKENS)
        # "zero" on every head keeps b_O; the whole-block zero removes it too.
        if kind == "identity":
            torch.testing.assert_close(heads, whole, rtol=1e-5, atol=1e-5)


def test_head_subset_touches_only_its_heads(tiny_neox):
    """Short-circuiting heads {0, 2} = each head's z replaced by its value, others untouched."""
    block, heads = 1, (0, 2)

    with torch.no_grad():
        _, cache = tiny_neox.run_with_cache(
            TOKENS, names_filter=lambda n: n.startswith(f"blocks.{block}.attn.hook_")
        )
        z, v = cache[f"blocks.{block}.attn.hook_z"].clone(), cache[f"blocks.{block}.attn.hook_v"]
        z[:, :, list(heads)] = v[:, :, list(heads)]
        ref = tiny_neox.run_with_hooks(
            TOKENS, fwd_hooks=[(f"blocks.{block}.attn.hook_z", lambda act, hook: z)]
        )
        with ShortCircuit(block, heads).apply(tiny_neox):
            ours = tiny_neox(TOKENS)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_zero_ablation_is_not_identity(tiny_model):
    with torch.no_grad():
        with ShortCircuit(1, kind="zero").apply(tiny_model):
            zero = tiny_model(TOKENS)
        with ShortCircuit(1).apply(tiny_model):
            ident = tiny_model(TOKENS)
        with ShortCircuit(1, kind="zero").apply(tiny_model):
            _, cut = tiny_model.run_with_cache(TOKENS, names_filter="blocks.1.hook_attn_out")
    assert (zero - ident).abs().max() > 1e-3
    assert cut["blocks.1.hook_attn_out"].abs().max() == 0


def test_hooks_removed_when_body_raises(tiny_neox):
    from conftest import live_hooks

    with pytest.raises(RuntimeError, match="boom"), ShortCircuit((0, 1)).apply(tiny_neox):
        assert live_hooks(tiny_neox)
        raise RuntimeError("boom")
    assert live_hooks(tiny_neox) == []


def test_record_is_small_printable_serializable():
    sc = ShortCircuit([3, 1, 3], heads=[2, 0], kind="zero")
    assert sc.blocks == (1, 3) and sc.heads == (0, 2)
    assert str(sc) == "zero:1,3[h0,2]"
    assert ShortCircuit.from_json(sc.to_json()) == sc
    assert hash(ShortCircuit.from_dict(sc.to_dict())) == hash(sc)
    assert str(CLEAN) == "none" and CLEAN.is_clean
    assert [s.label for s in single_block_sweep(range(2))] == ["identity:0", "identity:1"]


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.integers(0, 40), max_size=4),
    heads=st.none() | st.lists(st.integers(0, 40), min_size=1, max_size=4),
    kind=st.sampled_from(["identity", "zero"]),
)
def test_from_label_inverts_label(blocks, heads, kind):
    sc = ShortCircuit(blocks, None if not blocks else heads, kind)
    if not blocks:  # the clean model's label names no kind
        sc = CLEAN
    back = ShortCircuit.from_label(sc.label)
    assert back == sc and back.label == sc.label
    whole = len(sc.blocks) == 1 and sc.heads is None
    assert back.single_block == (sc.blocks[0] if whole else None)


@pytest.mark.parametrize(
    "label", ["", "None", "identity", "identity:", "identity:1,", "identity:1[h]", "mean:1", "3"]
)
def test_from_label_rejects_other_text(label):
    with pytest.raises(ValueError):
        ShortCircuit.from_label(label)


def identity_pattern(heads):
    """TransformerLens' own attention with the chosen heads' probabilities set to the identity."""

    def hook(pattern, hook):
        eye = torch.eye(pattern.shape[-1], dtype=pattern.dtype)
        pattern = pattern.clone()
        pattern[:, list(heads)] = eye
        return pattern

    return hook


@pytest.mark.parametrize("heads", [None, (1,), (0, 3)])
def test_grouped_query_attention_against_identity_pattern(heads):
    """Grouped key/value heads (Llama-style): values are shared by query heads, and the
    replacement must expand them exactly as the model's own attention does."""
    model = tiny_llama()
    sc = ShortCircuit((1,), heads)
    oracle = identity_pattern(range(4) if heads is None else heads)
    with torch.no_grad():
        ref = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.1.attn.hook_pattern", oracle)])
        with sc.apply(model):
            ours = model(TOKENS)
        clean = model(TOKENS)
    assert (clean - ref).abs().max() > 1e-4
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_table_columns_name_the_clean_model_none():
    assert CLEAN.columns() == {"intervention": "none", "kind": "none", "blocks": ""}
    assert ShortCircuit((2, 0), kind="zero").columns() == {
        "intervention": "zero:0,2",
        "kind": "zero",
        "blocks": "0,2",
    }


def test_bad_records_and_specs(tiny_neox):
    with pytest.raises(ValueError, match="unknown kind"):
        ShortCircuit((1,), kind="mean-ish")
    with pytest.raises(ValueError, match="selects no head"):
        ShortCircuit((1,), heads=())
    with pytest.raises(TypeError):  # our own check, or the run-time type checker's in the tests
        ShortCircuit(("a",))
    with pytest.raises(ValueError, match="out of range"):
        ShortCircuit((7,)).hooks(tiny_neox)
    with pytest.raises(ValueError, match="out of range"):
        ShortCircuit((0,), heads=(9,)).hooks(tiny_neox)
    assert parse_blocks("all", 4) == [0, 1, 2, 3]
    assert parse_blocks("0,2-3", 4) == [0, 2, 3]
    assert parse_blocks("none", 4) == []
    with pytest.raises(ValueError, match="cannot read"):
        parse_blocks("x-y", 4)
    with pytest.raises(ValueError, match="out of range"):
        parse_blocks("5", 4)
