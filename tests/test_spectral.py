"""Certified spectral norms (``workbench.spectral``) against dense SVDs, and the weight tier's
log space and cache (``workbench.bounds_weights``)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_config
from transformer_lens import HookedTransformer

from workbench import bounds_weights as bw
from workbench import spectral


def _matrix(draw) -> torch.Tensor:
    m, n = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    a = torch.randn(m, n, generator=gen, dtype=torch.float64)
    kind = draw(st.sampled_from(["gauss", "low_rank", "repeated", "graded", "tiny"]))
    if kind == "low_rank":
        r = draw(st.integers(1, min(m, n)))
        a = a[:, :r] @ torch.randn(r, n, generator=gen, dtype=torch.float64)
    elif kind == "repeated":  # a doubled top singular value: slow for iterative methods
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        s = torch.ones(min(m, n), dtype=torch.float64)
        s[1:] = torch.rand(min(m, n) - 1, generator=gen, dtype=torch.float64)
        s[: min(2, min(m, n))] = 1.0
        a = u * s @ vh
    elif kind == "graded":
        a = a * torch.logspace(-8, 0, n, dtype=torch.float64)
    elif kind == "tiny":
        a = a * 1e-150
    return a * draw(st.sampled_from([1e-3, 1.0, 1e4]))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), lanczos=st.booleans())
def test_spectral_norm_is_a_close_upper_bound(data, lanczos, monkeypatch_small):
    monkeypatch_small(1 if lanczos else spectral.SMALL)  # both estimators, on small matrices
    a = _matrix(data.draw)
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32]))
    a = a.to(dtype)
    exact = torch.linalg.matrix_norm(a.double(), ord=2)
    got = spectral.spectral_norm(a)
    assert got >= exact, (got, exact)
    assert got <= exact * (1 + 1e-6) + 1e-300


@pytest.fixture
def monkeypatch_small(monkeypatch):
    def set_small(value):
        monkeypatch.setattr(spectral, "SMALL", value)

    return set_small


def test_batched_and_wide_tall_agree():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(5, 30, 7, generator=gen, dtype=torch.float64)
    got = spectral.spectral_norm(a)
    exact = torch.linalg.matrix_norm(a, ord=2)
    assert (got >= exact).all() and (got <= exact * (1 + 1e-8)).all()
    torch.testing.assert_close(spectral.spectral_norm(a.mT), got, rtol=1e-8, atol=0)


def test_dsyrk_gram_matches_the_product():
    gen = torch.Generator().manual_seed(4)
    for shape in ((300, 700), (700, 300)):
        a = torch.randn(shape, generator=gen, dtype=torch.float32)
        g = spectral.gram(a)
        ref = a.double() @ a.double().T if shape[0] < shape[1] else a.double().T @ a.double()
        torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-9)
        exact = torch.linalg.matrix_norm(a.double(), ord=2)
        got = spectral.spectral_norm(a)
        assert exact <= got <= exact * (1 + 1e-6)


def _deep_model(n_layers: int, dtype) -> HookedTransformer:
    cfg = tiny_config(
        n_layers=n_layers,
        d_model=16,
        n_ctx=16,
        d_head=4,
        n_heads=2,
        d_mlp=32,
        d_vocab=20,
        act_fn="gelu",
        parallel_attn_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=4,
        eps=1e-6,
        dtype=dtype,
        seed=1,
        device="cpu",
    )
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(20.0)  # large weights: a gain of ~1e6-1e8 per block
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_weight_tier_is_finite_at_36_blocks(dtype):
    model = _deep_model(36, dtype)
    consts = bw.layer_consts(model, 16)
    logs = bw.weight_bounds(consts, 0)
    assert len(logs) == 36 and all(math.isfinite(x) for x in logs)
    assert logs[-1] / math.log(10) > 308  # beyond float64: a product would have overflowed
    # the log-space recursion against the plain product where it does not overflow
    prod = consts[0].injection
    for c, lw in zip(consts[1:6], logs[1:6], strict=True):
        prod *= c.gain
        assert math.isclose(math.log(prod), lw, rel_tol=1e-12)


def test_weight_norms_are_cached_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_BOUNDS_CACHE", str(tmp_path))
    model = _deep_model(2, torch.float64)
    first = bw.weight_norms(model)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].stem == bw.weights_key(model)
    calls = []
    monkeypatch.setattr(bw, "_block_norms", lambda *a: calls.append(a) or {})
    again = bw.weight_norms(model)  # from the cache: nothing recomputed
    assert not calls
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    key = bw.weights_key(model)
    with torch.no_grad():
        model.blocks[1].mlp.W_in[0, 0] += 1e-9
    assert bw.weights_key(model) != key


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entries_are_refused(bad):
    a = torch.randn(3, 5, dtype=torch.float64)
    a[1, 2] = bad
    with pytest.raises(ArithmeticError, match="non-finite"):
        spectral.spectral_norm(a)
    with pytest.raises(ArithmeticError, match="non-finite"):
        spectral.spectral_norm(torch.stack([torch.ones(3, 5, dtype=torch.float64), a]))
