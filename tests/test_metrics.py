"""Per-sample metric formulas (workbench.metrics)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import metrics


def test_entropy_uniform_and_point_mass():
    v = 7
    uniform = metrics.log_probs(torch.zeros(1, 1, v))
    assert torch.allclose(metrics.entropy(uniform), torch.tensor([[math.log(v)]]))
    point = metrics.log_probs(torch.tensor([[[100.0, 0.0, 0.0]]]))
    assert metrics.entropy(point).item() < 1e-6


def test_entropy_uses_whole_vocabulary_and_float32():
    logits = torch.randn(2, 3, 11, dtype=torch.bfloat16)
    lp = metrics.log_probs(logits)
    assert lp.dtype == torch.float32
    p = torch.softmax(logits.float(), -1)
    expected = -(p * p.log()).sum(-1).mean(-1)
    assert torch.allclose(metrics.completion_entropy(lp), expected, atol=1e-5)


def test_suffix_nll_is_summed_cross_entropy():
    logits = torch.randn(3, 5, 9)
    suffix = torch.randint(0, 9, (3, 5))
    nll = metrics.suffix_nll(metrics.log_probs(logits), suffix)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), suffix, reduction="none").sum(-1)
    assert torch.allclose(nll, ce, atol=1e-5)


def test_token_accuracy_is_a_fraction_not_truncated():
    suffix = torch.tensor([[1, 2, 3, 4]])
    gen = torch.tensor([[1, 2, 0, 4]])
    assert metrics.token_accuracy(gen, suffix).item() == 0.75
    assert not metrics.exact_match(gen, suffix).item()
    assert metrics.longest_match(gen, suffix).item() == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), min_size=1, max_size=5),
    st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), min_size=1, max_size=5),
)
def test_metric_relations(a, b):
    n = min(len(a), len(b))
    gen, suffix = torch.tensor(a[:n]), torch.tensor(b[:n])
    acc = metrics.token_accuracy(gen, suffix)
    em = metrics.exact_match(gen, suffix)
    lm = metrics.longest_match(gen, suffix)
    assert ((acc >= 0) & (acc <= 1)).all()
    assert torch.equal(em, acc == 1)
    assert torch.equal(em, lm == suffix.shape[1])
    assert (acc * suffix.shape[1] >= lm).all()  # matched prefix counts toward accuracy
    for row in range(n):
        m = int(lm[row])
        assert torch.equal(gen[row, :m], suffix[row, :m])
        assert m == suffix.shape[1] or gen[row, m] != suffix[row, m]


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 9),
    vocab=st.sampled_from([5, 4096, 50304]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_the_engines_pieces_are_the_whole_batch_formulas(batch, vocab, dtype, seed):
    """The engine computes its teacher-forced metrics a few rows at a time (to stay in cache):
    bit for bit what the formulas give on the whole batch, ties and near-ties included."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, 6, vocab, generator=gen) * 4).round().to(dtype)  # many ties
    suffix = torch.randint(0, vocab, (batch, 6), generator=gen)
    suffix[::2] = logits[::2].argmax(-1)  # some rows match, up to a planted mismatch
    k_, entropy, nll, margin, argmax = metrics.teacher_forced(logits, suffix)
    lp = metrics.log_probs(logits)
    k = metrics.first_mismatch(logits.argmax(-1), suffix)
    top2 = logits.float().topk(2, dim=-1).values
    gap = torch.where(torch.arange(6) <= k[:, None], top2[..., 0] - top2[..., 1], torch.inf)
    assert torch.equal(argmax, logits.argmax(-1)) and torch.equal(k_, k)
    assert torch.equal(entropy, metrics.completion_entropy(lp))
    assert torch.equal(nll, metrics.suffix_nll(lp, suffix))
    assert torch.equal(margin, gap.min(-1).values)
