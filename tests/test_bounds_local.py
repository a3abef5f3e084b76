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
    """On the organism every certificate holds; with a wrong unembedding gain (0) the same test
    fails: it certifies memorized samples whose greedy suffix the short-circuit did change."""
    from workbench import bounds_tracker

    model = load_model(None, device="cpu", dtype="float64")
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)[:8]
    kw = dict(prefix_len=32, jacobian_samples=0, decode=False, batch_size=8, blocks=[0, 11])
    assert_certificates_sound(compute_bounds(model, tokens, **kw))
    monkeypatch.setattr(bounds_tracker, "unembed_column_gain", lambda model: 0.0)
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
