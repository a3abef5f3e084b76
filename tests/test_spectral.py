"""Certified spectral norms (``workbench.spectral``) against dense SVDs, and the weight tier's
log space and cache (``workbench.bounds_weights``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_config
from transformer_lens import HookedTransformer

from workbench import bounds_weights as bw
from workbench import spectral


def _matrix(draw, m: int | None = None) -> torch.Tensor:
    m, n = m or draw(st.integers(1, 40)), draw(st.integers(1, 40))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    a = torch.randn(m, n, generator=gen, dtype=torch.float64)
    kind = draw(st.sampled_from(["gauss", "low_rank", "repeated", "graded", "tiny", "zero_rows"]))
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
    elif kind == "zero_rows":
        a[: draw(st.integers(0, m))] = 0
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


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_factored_norm_is_a_close_upper_bound(data):
    """‖a b‖₂ through the certified factor of b bᵀ (the path of ‖P diag(γ) W_V W_O‖) against the
    SVD of the explicit product; the factor bounds ‖x b‖ for every x."""
    a = _matrix(data.draw)
    b = _matrix(data.draw, m=a.shape[1])
    lo = spectral.gram_factor(b)
    exact = torch.linalg.matrix_norm(a @ b, ord=2)
    got = spectral.factored_norm(a, lo)
    assert got >= exact, (got, exact)
    assert got <= exact * (1 + 1e-6) + 1e-300
    x = torch.randn(50, b.shape[0], dtype=torch.float64)
    xb2, xl2 = (torch.linalg.vector_norm(x @ y, dim=-1) ** 2 for y in (b, lo))
    assert (xb2 <= xl2).all()  # L Lᵀ − b bᵀ: positive semidefinite, and of the size of rounding
    assert (xl2 - xb2 <= 1e-11 * b.norm() ** 2 * x.norm(dim=-1) ** 2 + 1e-290).all()


def test_a_zero_matrix_has_the_zero_factor_and_norm():
    """b = 0: L = 0 is the exact factor (not √δ I), so ‖a b‖ comes out 0, as the SVD says (the
    case hypothesis found: a 1 × 1 a, an all-zero b, 1.5e-143 against 0)."""
    b = torch.zeros(1, 3, dtype=torch.float64)
    lo = spectral.gram_factor(b)
    assert torch.equal(lo, torch.zeros(1, 1, dtype=torch.float64))
    assert spectral.factored_norm(torch.full((1, 1), 1e-3, dtype=torch.float64), lo) == 0


def test_batched_factored_norm_with_a_zero_head():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(4, 30, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(4, 6, 40, generator=gen, dtype=torch.float64)
    b[1] = 0
    b[2, :3] = 0  # rank-deficient: no Cholesky of b bᵀ itself
    got = spectral.factored_norm(a, spectral.gram_factor(b))
    exact = torch.linalg.matrix_norm(a @ b, ord=2)
    assert (got >= exact).all() and (got <= exact * (1 + 1e-8) + 1e-130).all()


def test_large_path_reads_one_triangle_of_reused_buffers():
    """The dsyrk / dsymv / cholesky_ex path leaves one triangle of its buffers unwritten: NaN
    there changes nothing, and buffers reused across shapes (wide, then tall) give the fresh
    results; ``overwrite`` rescales the caller's matrix only by powers of two."""
    gen = torch.Generator().manual_seed(6)
    work = spectral.Workspace()
    for name in ("a", "gram", "chol", "factor"):
        work.take(name, (700, 700)).fill_(math.nan)
    for shape in ((300, 700), (700, 300), (400, 900)):
        a = torch.randn(shape, generator=gen, dtype=torch.float64)
        exact = torch.linalg.matrix_norm(a, ord=2)
        fresh = spectral.spectral_norm(a)
        assert exact <= fresh <= exact * (1 + 1e-6)
        assert spectral.spectral_norm(a, work) == fresh
        b = a.clone()
        assert spectral.spectral_norm(b, work, overwrite=True) == fresh
        ratio = b / a
        assert (ratio == ratio.flatten()[0]).all() and math.log2(ratio.flatten()[0]).is_integer()


def test_cholesky_reads_one_triangle_only():
    """What ``spectral._certified_top_upper`` relies on: ``dpotrf`` with ``lower=0`` on the
    column-major view of a row-major lower triangle ignores the NaN above it, factors in place,
    and reports a matrix that is not positive definite."""
    from scipy.linalg.lapack import dpotrf

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(300, 300, generator=gen, dtype=torch.float64)
    h = x @ x.T + torch.eye(300, dtype=torch.float64)
    lower = h.tril() + torch.full_like(h, math.nan).triu(1)
    out, info = dpotrf(lower.numpy().T, lower=0, clean=0, overwrite_a=1)
    assert info == 0 and np.shares_memory(out, lower.numpy())
    r = torch.from_numpy(out).triu()  # another LAPACK than torch's: equal to rounding
    torch.testing.assert_close(r, torch.linalg.cholesky(h, upper=True), rtol=1e-12, atol=1e-12)
    shifted = (h - 1.5 * torch.linalg.eigvalsh(h)[-1] * torch.eye(300, dtype=torch.float64)).tril()
    assert dpotrf(shifted.numpy().T, lower=0, clean=0, overwrite_a=1)[1] > 0


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


def test_weight_norms_are_cached_by_the_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WORKBENCH_BOUNDS_CACHE", str(tmp_path))
    model = _deep_model(2, torch.float64)
    with caplog.at_level("INFO", logger="workbench.bounds"):
        first = bw.weight_norms(model)
    assert "weight constants of 2 blocks:" in caplog.text  # the time of the computation is shown
    caplog.clear()
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].stem == bw.weights_key(model)
    calls = []
    monkeypatch.setattr(bw, "_block_norms", lambda *a: calls.append(a) or {})
    with caplog.at_level("INFO", logger="workbench.bounds"):
        again = bw.weight_norms(model)  # from the cache: nothing recomputed
    assert not calls and "weight constants" not in caplog.text
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
