"""measured ≤ certified ≤ weight, everywhere, in float64; the exact facts the bounds rest on.

Tolerance (stated in ``workbench.bounds``): float64, 1e-9 relative, plus 1e-9·‖x_{l,t}‖ absolute on
the measured side for the rounding of the forward pass itself. A violation is a bug in the bound.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_config
from transformer_lens import HookedTransformer

from workbench import bounds_math as bm
from workbench import bounds_weights as bw
from workbench.bounds import compute_bounds, main, summary
from workbench.bounds_report import figure
from workbench.interventions import ShortCircuit
from workbench.models import load_model
from workbench.organism import registry
from workbench.passes import clean_pass, intervened_pass

RTOL = 1e-9
TOKENS = torch.randint(1, 96, (5, 24), generator=torch.Generator().manual_seed(7))
PREFIX = 12


@pytest.fixture(scope="module")
def neox64(tiny_neox_dir):
    return load_model(tiny_neox_dir, device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def neo64(tiny_neo_dir):
    return load_model(tiny_neo_dir, device="cpu", dtype="float64")


@pytest.fixture(params=["neox64", "neo64"])
def model64(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def tables_cache():
    return {}


def tables_for(model, cache) -> dict[str, pd.DataFrame]:
    key = model.cfg.model_name + str(model.cfg.parallel_attn_mlp)
    if key not in cache:
        cache[key] = compute_bounds(
            model, TOKENS, prefix_len=PREFIX, batch_size=3, jacobian_samples=2, jacobian_iters=3
        )
    return cache[key]


def assert_ordered(tables: dict[str, pd.DataFrame], n_layers: int, n_tokens: int) -> None:
    tok, lay = tables["tokens"], tables["layers"]
    blocks = sorted(lay.block.unique())
    assert len(tok) == n_tokens * sum(n_layers - b for b in blocks)
    slack = RTOL * tok.resid_norm
    over = tok.measured - (tok.certified * (1 + RTOL) + slack)
    assert (over <= 0).all(), tok[over > 0].head()
    over = lay.certified - lay.weight * (1 + RTOL)
    assert (over <= 0).all(), lay[over > 0].head()
    over = lay.certified - lay.trivial * (1 + RTOL)  # never looser than the input-free bound
    assert (over <= 0).all(), lay[over > 0].head()
    over = tok.measured - (tok.segment * (1 + RTOL) + slack)  # the segment tier: still a bound
    assert (over <= 0).all(), tok[over > 0].head()
    assert (tok.segment <= tok.certified * (1 + RTOL)).all()
    assert lay.violations.sum() == 0
    assert np.isfinite(lay[["measured", "certified", "weight"]].to_numpy()).all()


def test_measured_le_certified_le_weight(model64, tables_cache):
    tables = tables_for(model64, tables_cache)
    assert_ordered(tables, model64.cfg.n_layers, TOKENS.numel())
    lay = tables["layers"]
    # the bounds are not vacuous: the certified tier is far below the weight tier after a block
    deep = lay[lay.layer == lay.layer.max()]
    assert (deep.certified < deep.weight).all()
    assert (deep.measured > 0).all()


@torch.no_grad()
def _range_oracle(model) -> list[tuple[float, float]]:
    """2√d (Σ_h ‖P diag(γ₁) W_V W_O‖₂ + ‖W_out‖₂ g' ‖P diag(γ₂) W_in‖₂) per block, from the
    definitions (dense float64 SVDs of the full d × d matrices, centring by an explicit P)."""
    d = model.cfg.d_model
    p = torch.eye(d, dtype=torch.float64) - torch.full((d, d), 1 / d, dtype=torch.float64)
    out = []
    for blk in model.blocks:
        g1 = torch.diag(blk.ln1.w.double()) if hasattr(blk.ln1, "w") else torch.eye(d).double()
        g2 = torch.diag(blk.ln2.w.double()) if hasattr(blk.ln2, "w") else torch.eye(d).double()
        a = blk.attn
        vo = sum(
            torch.linalg.svdvals(p @ g1 @ a.W_V[h].double() @ a.W_O[h].double())[0]
            for h in range(model.cfg.n_heads)
        )
        lf = (
            torch.linalg.svdvals(blk.mlp.W_out.double())[0]
            * bw.ACT_LIPSCHITZ[model.cfg.act_fn]
            * torch.linalg.svdvals(p @ g2 @ blk.mlp.W_in.double())[0]
        )
        out.append((float(vo), float(lf)))
    return out


def test_certified_never_looser_than_trivial(model64, tables_cache):
    """The trivial tier against an independent recomputation, and measured ≤ certified ≤ it."""
    lay = tables_for(model64, tables_cache)["layers"]
    per_block = _range_oracle(model64)
    d2 = 2 * math.sqrt(model64.cfg.d_model)
    for block in sorted(lay.block.unique()):
        vo, lf = per_block[block]
        expect = d2 * (vo + (0 if model64.cfg.parallel_attn_mlp else lf))
        for layer in range(block + 1, model64.cfg.n_layers + 1):
            if layer > block + 1:
                expect += d2 * sum(per_block[layer - 1])
            got = lay[(lay.block == block) & (lay.layer == layer)].trivial
            # certified spectral norms: above the dense SVD's, by at most a relative 1e-8
            assert (got >= expect * (1 - 1e-12)).all() and (got <= expect * (1 + 1e-8)).all()
    assert (lay.measured <= lay.certified * (1 + RTOL) + RTOL * lay.resid_norm).all()
    assert (lay.certified <= lay.trivial * (1 + RTOL)).all()


def test_token_zero_is_never_changed(model64, tables_cache):
    tok = tables_for(model64, tables_cache)["tokens"]
    first = tok[tok.pos == 0]
    assert (first.measured <= 1e-12 * first.resid_norm).all()
    assert (first.certified == 0).all()
    assert (tok[tok.pos > 0].measured > 0).any()


def test_injection_exact_within_lemma_bound(model64, tables_cache):
    lay = tables_for(model64, tables_cache)["layers"]
    first = lay[lay.layer == lay.block + 1]
    assert (first.injection <= first.injection_bound * (1 + RTOL)).all()
    if model64.cfg.parallel_attn_mlp:  # Δ_{i+1} = −δ_i exactly: measured is the injection
        np.testing.assert_allclose(first.measured, first.injection, rtol=1e-10)
        np.testing.assert_allclose(first.certified, first.injection, rtol=1e-12)


@pytest.mark.parametrize("block", [0, 1, 2])
def test_parallel_injection_is_minus_delta(neox64, block):
    """x'_{i+1} − x_{i+1} = −δ_i, δ_{i,t} = Σ_h Σ_s a_ts (v_s − v_t) W_O, as vectors."""
    model = neox64
    got: dict[str, torch.Tensor] = {}

    def grab(name):
        def hook(x, hook):
            got[name] = x.clone()

        return hook

    nxt = (
        f"blocks.{block + 1}.hook_resid_pre"
        if block + 1 < model.cfg.n_layers
        else f"blocks.{block}.hook_resid_post"
    )
    hooks = [
        (f"blocks.{block}.attn.hook_pattern", grab("a")),
        (f"blocks.{block}.attn.hook_v", grab("v")),
        (nxt, grab("x")),
    ]
    _, kept = clean_pass(model, TOKENS, [block], extra_hooks=hooks)
    clean_next, a, v = got["x"], got["a"], got["v"]
    intervened_pass(model, TOKENS, ShortCircuit(block), kept, extra_hooks=[(nxt, grab("x"))])
    # δ_t = Σ_h Σ_s a^h_ts (v^h_s − v^h_t) W^h_O, from its definition
    mixed = torch.einsum("bhts,bshe->bthe", a, v)
    delta = torch.einsum("bthe,hem->btm", mixed - v, model.blocks[block].attn.W_O)
    torch.testing.assert_close(got["x"] - clean_next, -delta, rtol=0, atol=1e-12)
    assert (
        torch.equal(delta[:, 0], torch.zeros_like(delta[:, 0])) or delta[:, 0].abs().max() < 1e-13
    )


def test_final_delta_against_block_is_in_the_output(model64, tables_cache):
    tables = tables_for(model64, tables_cache)
    table = summary(tables)
    blocks = [str(b) for b in range(model64.cfg.n_layers)]
    assert list(table.index) == ["none", *blocks]
    per_block = table.loc[blocks]
    for col in (
        "exact_match",
        "token_accuracy",
        "measured",
        "certified",
        "weight",
        "tightness_median",
        "tightness_max",
        "kl",
        "max_abs_dlogp",
        "trivial",
        "weight_log10",
        "certified_unchanged",
        "exact_match_changed",
    ):
        assert per_block[col].notna().all(), col
    assert (per_block.tightness_median >= 1 - 1e-9).all()
    fig = figure(tables)
    names = {t.name for t in fig.data}
    assert {"measured", "certified", "weight"} <= names
    assert fig.layout.yaxis.type == "log"


def test_memorization_scores_come_from_the_same_passes(model64, tables_cache):
    from workbench.memorization import sweep

    tables = tables_for(model64, tables_cache)
    mem = sweep(model64, TOKENS.numpy(), [ShortCircuit(1)], prefix_len=PREFIX, progress=False)
    ours = tables["samples"][tables["samples"].block == 1].sort_values("sample")
    np.testing.assert_array_equal(ours.exact_match.to_numpy(), mem.exact_match.to_numpy())
    np.testing.assert_allclose(ours.token_accuracy.to_numpy(), mem.token_accuracy.to_numpy())
    assert (ours.kl >= -1e-12).all()


def test_jacobian_power_iteration_matches_dense_svd(neo64):
    model = neo64
    _, kept = clean_pass(model, TOKENS[:1, :8], [1])
    x = kept[1].clone()
    est = bm.jacobian_norms(model, x, 1, iters=60)
    jac = torch.autograd.functional.jacobian(lambda y: model.blocks[1](y), x)
    dense = torch.linalg.matrix_norm(jac.reshape(x.numel(), x.numel()), ord=2)
    assert est[0] <= dense * (1 + 1e-9)
    assert est[0] >= dense * (1 - 1e-3)


def test_jacobian_reference_reports_its_cost(neox64, caplog):
    with caplog.at_level("INFO", logger="workbench.bounds"):
        tables = compute_bounds(
            neox64, TOKENS[:3], [1], prefix_len=PREFIX, jacobian_samples=2, jacobian_iters=2
        )
    n_layers = neox64.cfg.n_layers - 1  # from the swept block on
    assert len(tables["jacobian"]) == n_layers * 2
    assert f"Jacobian reference: {n_layers} layers x 2 samples x 2 iterations" in caplog.text


def test_half_precision_jacobian_is_the_float32_blocks(tiny_neox_dir):
    """A bfloat16 model's reference is the float32 block at its (bf16-rounded) weights, at its
    bf16 stream: oracle, the float32 model whose weights and tables (rotary sin/cos) are rounded
    through bfloat16; the model itself keeps its dtype."""
    half = load_model(tiny_neox_dir, device="cpu", dtype="bfloat16")
    ref = load_model(tiny_neox_dir, device="cpu")
    with torch.no_grad():
        for p in [*ref.parameters(), *ref.buffers()]:
            if p.is_floating_point():
                p.copy_(p.to(torch.bfloat16).float())
    _, kept = clean_pass(half, TOKENS[:2, :16], [1])
    x = kept[1].clone()
    est = bm.jacobian_norms(half, x, 1, iters=5)
    assert est.dtype == torch.float64
    torch.testing.assert_close(est, bm.jacobian_norms(ref, x.float(), 1, iters=5))
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.cfg.dtype == torch.bfloat16


@pytest.mark.parametrize("act", sorted(bw.ACT_LIPSCHITZ))
def test_activation_lipschitz_constants(act):
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    fn = SUPPORTED_ACTIVATIONS[act]
    x = torch.linspace(-8, 8, 400_001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    sup = grad.abs().max().item()
    assert sup <= bw.ACT_LIPSCHITZ[act]
    assert sup >= bw.ACT_LIPSCHITZ[act] - 1e-4


def test_folded_weights_are_consistent(tiny_neo_dir):
    """With TransformerLens' weight processing (γ, β folded, LNPre) the bounds still hold."""
    model = load_model(tiny_neo_dir, device="cpu", dtype="float64", process_weights=True)
    assert model.cfg.normalization_type == "LNPre"
    tables = compute_bounds(model, TOKENS[:3], prefix_len=PREFIX, jacobian_samples=0, decode=False)
    assert_ordered(tables, model.cfg.n_layers, TOKENS[:3].numel())


def test_unsupported_model_is_refused():
    cfg = tiny_config(
        n_layers=1,
        d_model=8,
        n_ctx=8,
        d_head=4,
        n_heads=2,
        d_vocab=10,
        act_fn="silu",
        normalization_type="RMS",
    )
    with pytest.raises(bw.UnsupportedModel, match=r"normalization 'RMS'.*activation 'silu'"):
        bw.check_supported(HookedTransformer(cfg))


def _random_model(draw) -> HookedTransformer:
    n_heads = draw(st.integers(1, 3))
    d_head = draw(st.sampled_from([4, 6, 8]))
    n_layers = draw(st.integers(1, 3))
    rotary = draw(st.booleans())
    local = draw(st.booleans())
    cfg = tiny_config(
        n_layers=n_layers,
        d_model=draw(st.sampled_from([8, 12, 16])),
        n_ctx=32,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=draw(st.sampled_from([16, 32])),
        d_vocab=40,
        act_fn=draw(st.sampled_from(sorted(bw.ACT_LIPSCHITZ))),
        parallel_attn_mlp=draw(st.booleans()),
        use_attn_scale=draw(st.booleans()),
        positional_embedding_type="rotary" if rotary else "standard",
        rotary_dim=draw(st.sampled_from([2, d_head])) if rotary else None,
        attn_types=[("local" if local and i % 2 else "global") for i in range(n_layers)],
        window_size=draw(st.integers(1, 6)),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        dtype=torch.float64,
        seed=draw(st.integers(0, 1000)),
        device="cpu",
    )
    model = HookedTransformer(cfg).eval()
    scale = draw(st.sampled_from([0.3, 1.0, 3.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.copy_(
                    scale
                    * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                    / math.sqrt(p.shape[-2] if p.ndim >= 2 else 1)
                )
    return model


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_configurations_and_inputs(data):
    model = _random_model(data.draw)
    n, t = data.draw(st.integers(1, 3)), data.draw(st.integers(3, 20))
    tokens = torch.tensor(
        data.draw(
            st.lists(st.lists(st.integers(0, 39), min_size=t, max_size=t), min_size=n, max_size=n)
        )
    )
    tables = compute_bounds(
        model,
        tokens,
        prefix_len=data.draw(st.integers(1, t - 1)),
        jacobian_samples=0,
        decode=False,
        batch_size=2,
    )
    tok = tables["tokens"]
    over = tok.measured - (tok.certified * (1 + RTOL) + RTOL * tok.resid_norm)
    assert (over <= 0).all(), tok[over > 0].head()
    lay = tables["layers"]
    assert (lay.certified <= lay.weight * (1 + RTOL)).all()
    assert (lay.certified <= lay.trivial * (1 + RTOL)).all()
    assert (lay.measured <= lay.trivial * (1 + RTOL)).all()
    over = tok.measured - (tok.segment * (1 + RTOL) + RTOL * tok.resid_norm)
    assert (over <= 0).all(), tok[over > 0].head()
    assert (tok.segment <= tok.certified * (1 + RTOL)).all()
    assert (tok[tok.pos == 0].measured <= 1e-12 * tok[tok.pos == 0].resid_norm).all()


def test_cli_writes_a_run(tiny_neox_dir, tmp_path, capsys):
    data = tmp_path / "samples.npy"
    np.save(data, TOKENS.numpy())
    out = tmp_path / "run"
    main(
        [
            "--model",
            str(tiny_neox_dir),
            "--data",
            str(data),
            "--dtype",
            "float64",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--prefix-len",
            str(PREFIX),
            "--blocks",
            "0-1",
            "--jacobian-iters",
            "2",
            "--batch-size",
            "4",
        ]
    )
    printed = capsys.readouterr().out
    assert "tightness_median" in printed and "wall time" in printed
    assert "certified_unchanged" in printed and "exact_match_changed" in printed
    for name in ("layers", "tokens", "samples", "memorization", "jacobian"):
        assert (out / f"{name}.parquet").is_file(), name
    assert (out / "bounds.html").is_file() and (out / "summary.csv").is_file()
    layers = pd.read_parquet(out / "layers.parquet")
    assert sorted(layers.block.unique()) == [0, 1]
    assert layers.violations.sum() == 0


ORGANISM = pytest.mark.skipif(
    registry.DEFAULT_MODEL is None
    or not registry.EMBEDDED_MODELS.get(registry.DEFAULT_MODEL, None)
    or not registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL].is_dir()
    or not getattr(registry, "DEFAULT_MEMORIZED_SET", None)
    or not registry.DEFAULT_MEMORIZED_SET.is_file(),
    reason="the embedded organism is not shipped in this checkout",
)


@ORGANISM
def test_organism_float64():
    model = load_model(None, device="cpu", dtype="float64")
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)[:4]
    tables = compute_bounds(
        model, tokens, prefix_len=32, jacobian_samples=0, decode=False, batch_size=4
    )
    assert_ordered(tables, model.cfg.n_layers, tokens.size)


def test_layernorm_lemma_is_sharp_and_holds():
    """(LN) is never exceeded, and is attained to first order (so a weaker constant would fail)."""
    gen = torch.Generator().manual_seed(0)
    d, eps = 16, 1e-5
    x = (
        torch.randn(200, d, generator=gen, dtype=torch.float64)
        * torch.rand(200, 1, generator=gen, dtype=torch.float64)
        * 3
    )

    def n(y):
        y = y - y.mean(-1, keepdim=True)
        return y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps)

    c = bm.centred_norm(x[None])[0]
    # worst case: shrink the centred part (σ falls along the segment), and generic directions
    for direction in (
        -(x - x.mean(-1, keepdim=True)),
        torch.randn(x.shape, generator=gen, dtype=torch.float64),
    ):
        for size in (1e-6, 0.1, 1.0, 10.0):
            delta = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True) * size
            e = torch.full_like(c, size)
            bound = bm._ln_gain(e[None], c[None], d, eps)[0]
            got = torch.linalg.vector_norm(n(x + delta) - n(x), dim=-1)
            assert (got <= bound * (1 + 1e-9)).all()
    # first order, a centred direction orthogonal to x − mean: ratio → 1
    xc = x - x.mean(-1, keepdim=True)
    r = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    r = r - r.mean(-1, keepdim=True)
    r = r - (r * xc).sum(-1, keepdim=True) / (xc * xc).sum(-1, keepdim=True) * xc
    delta = 1e-7 * r / torch.linalg.vector_norm(r, dim=-1, keepdim=True)
    got = torch.linalg.vector_norm(n(x + delta) - n(x), dim=-1)
    bound = bm._ln_gain(torch.full_like(c, 1e-7)[None], c[None], d, eps)[0]
    assert (got / bound > 1 - 1e-5).all()
