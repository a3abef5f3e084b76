"""The bounds beyond the three tiers: the certificate beside the memorization scores, the segment
tier's exact σ, a mutation the float64 check must catch, and the certificate's unembedding gain.
Helpers and fixtures from ``test_bounds``; the same tolerance (float64, 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bounds import ORGANISM, PREFIX, RTOL, TOKENS, _random_model

from workbench import bounds_math as bm
from workbench import bounds_weights as bw
from workbench.bounds import compute_bounds
from workbench.models import load_model
from workbench.organism import registry


@pytest.fixture(scope="module")
def neox64(tiny_neox_dir):
    return load_model(tiny_neox_dir, device="cpu", dtype="float64")


@torch.no_grad()
def greedy_tokens(model, prefix: torch.Tensor, length: int) -> torch.Tensor:
    """Prefix + its greedy continuation (naive, full forward per token): a memorized sample."""
    tokens = prefix
    while tokens.shape[1] < length:
        tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def assert_certificates_sound(tables) -> int:
    """certified unchanged ⇒ the clean greedy suffix is the true one and the intervened one is
    still it (exact match 1 in both, from the engine's own scores); returns how many."""
    s = tables["samples"]
    cert = s[s.certified_unchanged]
    assert (cert.clean_exact_match == 1).all()
    assert (cert.exact_match == 1).all(), cert[cert.exact_match != 1]
    assert (s.logit_gap_bound >= 0).all()
    return len(cert)


def test_certificate_is_reached_and_sound(tiny_neox_dir):
    """A model whose blocks barely move the stream when short-circuited (W_O × 1e-3) and whose
    logits have wide margins (W_U × 50): most samples certified, and every certificate holds."""
    model = load_model(tiny_neox_dir, device="cpu", dtype="float64")
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.W_O.mul_(1e-3)
        model.unembed.W_U.mul_(50.0)
    tokens = greedy_tokens(model, TOKENS[:, :PREFIX], TOKENS.shape[1])
    tables = compute_bounds(model, tokens, prefix_len=PREFIX, jacobian_samples=0, decode=False)
    assert (tables["samples"].clean_exact_match == 1).all()
    assert assert_certificates_sound(tables) > len(tokens)  # certificates are reached


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_certificates_hold_on_random_configurations(data):
    model = _random_model(data.draw)
    with torch.no_grad():  # wide margins and small changes sometimes, so certificates happen
        model.unembed.W_U.mul_(data.draw(st.sampled_from([1.0, 30.0, 300.0])))
        for blk in model.blocks:
            blk.attn.W_O.mul_(data.draw(st.sampled_from([1e-4, 1e-2, 1.0])))
    n, t = data.draw(st.integers(1, 4)), data.draw(st.integers(4, 16))
    p = data.draw(st.integers(1, t - 1))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    tokens = greedy_tokens(model, torch.randint(0, 40, (n, p), generator=gen), t)
    if data.draw(st.booleans()):  # and some samples that are not the greedy continuation
        tokens[0, -1] = (tokens[0, -1] + 1) % 40
    tables = compute_bounds(model, tokens, prefix_len=p, jacobian_samples=0, decode=False)
    assert_certificates_sound(tables)


@ORGANISM
def test_organism_certificates_and_a_wrong_constant(monkeypatch):
    """On the organism every certificate holds; with wrong unembedding directions (0: the gain
    and every pairwise D_ab vanish) the same test fails: it certifies memorized samples whose
    greedy suffix the short-circuit did change."""
    from workbench import bounds_tracker

    model = load_model(None, device="cpu", dtype="float64")
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)[:8]
    kw = dict(prefix_len=32, jacobian_samples=0, decode=False, batch_size=8, blocks=[0, 11])
    assert_certificates_sound(compute_bounds(model, tokens, **kw))
    real = bounds_tracker.unembed_directions
    monkeypatch.setattr(
        bounds_tracker, "unembed_directions", lambda model, cols: 0 * real(model, cols)
    )
    with pytest.raises(AssertionError):
        assert_certificates_sound(compute_bounds(model, tokens, **kw))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    d=st.integers(2, 12),
    shift=st.sampled_from([0.0, 1.0, 30.0]),
    eps=st.sampled_from([1e-5, 0.1]),
)
def test_segment_sigma_is_the_exact_minimum(seed, d, shift, eps):
    """min_τ σ(x + τΔ) against a dense grid over τ (endpoints included): never above any point
    of the segment, and attained to within the grid's resolution."""
    from workbench.bounds_segment import segment_sigma

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 6, d, generator=gen, dtype=torch.float64) + shift
    x2 = torch.randn(1, 6, d, generator=gen, dtype=torch.float64)
    if seed % 3 == 0:  # through the centre: the minimum is inside the segment
        x2 = -x + 1e-3 * x2
    got = segment_sigma(x, x2, eps)
    tau = torch.linspace(0, 1, 10_001, dtype=torch.float64)[:, None, None, None]
    pts = x + tau * (x2 - x)
    sig = torch.sqrt(pts.var(-1, unbiased=False) + eps).amin(0)
    assert (got <= sig * (1 + 1e-12)).all()
    # σ(x + τΔ) is c(Δ)/√d-Lipschitz in τ: the grid's minimum is within that × the step
    slope = bm.centred_norm(x2 - x) / math.sqrt(d)
    assert (got >= sig - slope * 1e-4 / 2 - 1e-12).all()


def test_a_wrong_constant_is_caught(neox64, monkeypatch):
    """Mutation: the MLP and attention constants 100× too small make the float64 check fail."""
    from workbench import bounds_tracker

    real = bw.layer_consts

    def shrunk(*args, **kwargs):
        consts = real(*args, **kwargs)
        for c in consts:
            c.mlp, c.vo, c.d_max = c.mlp / 100, c.vo / 100, c.d_max / 100
        return consts

    monkeypatch.setattr(bounds_tracker.bw, "layer_consts", shrunk)
    tables = compute_bounds(neox64, TOKENS, prefix_len=PREFIX, jacobian_samples=0, decode=False)
    assert tables["layers"].violations.sum() > 0
    tok = tables["tokens"]
    assert (tok.measured > tok.segment * (1 + RTOL) + RTOL * tok.resid_norm).any()


@torch.no_grad()
def test_unembed_gain_against_an_explicit_projection(neox64):
    """G of the certificate from the definition (explicit P and diag(γ)), chunked or not."""
    from workbench.bounds_tracker import unembed_column_gain

    d = neox64.cfg.d_model
    p = torch.eye(d, dtype=torch.float64) - torch.full((d, d), 1 / d, dtype=torch.float64)
    m = p @ torch.diag(neox64.ln_final.w.double()) @ neox64.unembed.W_U.double()
    expect = float(torch.linalg.vector_norm(m, dim=0).max())
    for chunk in (3, 4096):
        got = unembed_column_gain(neox64, chunk=chunk)
        assert expect <= got <= expect * (1 + 1e-9)


def explicit_directions(model) -> torch.Tensor:
    """P diag(γ_f) W_U with an explicit centring matrix (float64), [d_model, vocab]."""
    d = model.cfg.d_model
    p = torch.eye(d, dtype=torch.float64) - torch.full((d, d), 1 / d, dtype=torch.float64)
    return p @ torch.diag(model.ln_final.w.double()) @ model.unembed.W_U.double()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0]))
def test_pairwise_certificate_against_the_explicit_gaps(neox64, seed, scale):
    """``pairwise_safe`` equals the rule computed from explicit column differences, is sound
    against the worst perturbation of each competitor (ε (w_b − w_a)/‖w_b − w_a‖ on the
    normalised output flips the gap exactly when it is not certified), and never certifies
    less than the single-gain test."""
    from workbench.bounds_tracker import pairwise_safe, unembed_column_gain

    gen = torch.Generator().manual_seed(seed)
    m = explicit_directions(neox64)
    n, v = 7, m.shape[1]
    logits = torch.randn(n, v, generator=gen, dtype=torch.float64) * 3
    top = logits.argmax(-1)
    eps_n = torch.rand(n, generator=gen, dtype=torch.float64) * scale
    slack = torch.zeros(n, dtype=torch.float64)
    got = pairwise_safe(neox64, top, logits, eps_n, slack, rtol=0.0, chunk=5)
    dist = torch.linalg.vector_norm(m.T[top][:, :, None] - m[None], dim=1)  # [n, v]
    gap = logits.gather(-1, top[:, None]) - logits
    worst = gap - eps_n[:, None] * dist  # the gap after the worst perturbation against b
    worst.scatter_(1, top[:, None], math.inf)
    assert torch.equal(got, (worst > 0).all(-1))
    g = unembed_column_gain(neox64)
    top2 = logits.topk(2, -1).values
    assert (got >= (top2[:, 0] - top2[:, 1] > 2 * g * eps_n)).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    d=st.integers(3, 24),
    frac=st.floats(0.01, 0.99),
    eps=st.sampled_from([1e-12, 1e-5, 0.1]),
)
def test_layernorm_chord_bound_holds_and_is_attained_on_the_tangent(seed, d, frac, eps):
    """(LN)'s chord term: a change of size e along the tangent of the cone around x (the largest
    turn of the normalised vector) reaches the bound when eps is negligible, and never exceeds
    it; the mean-value term alone would be looser there by up to c/(c − e)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, d, generator=gen, dtype=torch.float64)
    y = x - x.mean(-1, keepdim=True)
    c = torch.linalg.vector_norm(y, dim=-1)
    t = torch.randn(1, d, generator=gen, dtype=torch.float64)
    t = t - t.mean(-1, keepdim=True)
    t = t - (t * y).sum(-1, keepdim=True) / c**2 * y
    t = t / torch.linalg.vector_norm(t, dim=-1, keepdim=True)
    e = frac * c
    delta = -(e**2 / c**2)[:, None] * y + (e * math.sqrt(1 - frac**2))[:, None] * t

    def n(z):
        z = z - z.mean(-1, keepdim=True)
        return z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + eps)

    got = torch.linalg.vector_norm(n(x + delta) - n(x), dim=-1)
    bound = bm._ln_gain(e, c, d, eps)
    assert (got <= bound * (1 + 1e-9)).all()
    if eps * d < 1e-9 * c.item() ** 2:
        assert (got >= bound * (1 - 1e-6)).all()
