"""Per-sample memorization metrics: pure tensor functions, one formula each.

Notation: a sample is ``x = (p, s)`` with a prefix ``p`` of length P and a true suffix ``s`` of
length S (the Pythia convention is P = S = 32). ``g`` is the *free-running* greedy continuation of
``p``: ``g_j = argmax_v f_θ(v | p, g_{<j})``. ``q_j`` is the *teacher-forced* next-token
distribution at suffix position j, given the true context: ``q_j = f_θ(· | p, s_{<j})``.

- exact_match       ``1[g = s]``: the 32-token greedy suffix equals the true suffix
                     (Carlini et al. 2021 "extractable"; Biderman et al. 2023; Menta et al. 2025).
- token_accuracy    ``(1/S) Σ_j 1[g_j = s_j]``: Biderman et al. 2023's memorization score, the
                     fraction of the free-running greedy suffix equal to the true suffix. The
                     original short-circuiting code truncated it to 0/1 with ``.int()``; here it
                     is the real fraction.
- completion_entropy ``(1/S) Σ_j H(q_j)``, ``H(q) = −Σ_v q_v log q_v`` (nats) over the *whole*
                     vocabulary (the original code sliced the vocabulary axis; not here).
- longest_match     ``max{m : g_{<m} = s_{<m}}``: length of the longest matching prefix of ``g``.
- suffix_nll        ``−log P_θ(s | p) = −Σ_j log q_j(s_j)`` (nats, summed over the suffix).

Log-probabilities are always computed in float32, whatever the model's dtype.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def log_probs(logits: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, "batch pos vocab"]:
    """``log_softmax`` in float32 (bf16/fp16 models included)."""
    return torch.log_softmax(logits.float(), dim=-1)


def entropy(logprobs: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, "batch pos"]:
    """``H(q) = −Σ_v q_v log q_v`` per position, over the whole vocabulary (nats)."""
    return -(logprobs.exp() * logprobs).sum(-1)


def completion_entropy(logprobs: Float[Tensor, "batch suffix vocab"]) -> Float[Tensor, " batch"]:
    """Mean over suffix positions of the teacher-forced next-token entropy (nats)."""
    return entropy(logprobs).mean(-1)


def suffix_nll(
    logprobs: Float[Tensor, "batch suffix vocab"], suffix: Int[Tensor, "batch suffix"]
) -> Float[Tensor, " batch"]:
    """``−log P(s | p) = −Σ_j log q_j(s_j)`` (nats), teacher-forced."""
    return -logprobs.gather(-1, suffix.unsqueeze(-1)).squeeze(-1).sum(-1)


def first_mismatch(
    predicted: Int[Tensor, "batch suffix"], suffix: Int[Tensor, "batch suffix"]
) -> Int[Tensor, " batch"]:
    """Index of the first position where ``predicted ≠ suffix``; S when they are equal."""
    wrong = predicted != suffix
    n = suffix.shape[-1]
    idx = torch.arange(n, device=suffix.device).expand_as(wrong)
    return torch.where(wrong, idx, torch.full_like(idx, n)).min(-1).values


def longest_match(
    generated: Int[Tensor, "batch suffix"], suffix: Int[Tensor, "batch suffix"]
) -> Int[Tensor, " batch"]:
    """``max{m : g_{<m} = s_{<m}}``."""
    return first_mismatch(generated, suffix)


def exact_match(
    generated: Int[Tensor, "batch suffix"], suffix: Int[Tensor, "batch suffix"]
) -> Bool[Tensor, " batch"]:
    """``1[g = s]``."""
    return (generated == suffix).all(-1)


def token_accuracy(
    generated: Int[Tensor, "batch suffix"], suffix: Int[Tensor, "batch suffix"]
) -> Float[Tensor, " batch"]:
    """``(1/S) Σ_j 1[g_j = s_j]`` (Biderman et al. 2023), a fraction, not truncated."""
    return (generated == suffix).float().mean(-1)


PIECE = 1 << 18  # logits per piece of ``teacher_forced``: a piece stays in a core's L2 cache


def teacher_forced(
    logits: Float[Tensor, "batch suffix vocab"], suffix: Int[Tensor, "batch suffix"]
) -> tuple[
    Int[Tensor, " batch"],
    Float[Tensor, " batch"],
    Float[Tensor, " batch"],
    Float[Tensor, " batch"],
    Int[Tensor, "batch suffix"],
]:
    """What the memorization engine reads off teacher-forced logits: first mismatch k of the
    argmax, completion entropy, suffix NLL, the smallest top-1/top-2 logit gap at positions ≤ k
    (``margin``; inf past them) and the argmax itself.

    Computed a few rows at a time: each row's numbers are those of the formulas above on the
    whole batch (row-wise kernels; tested bit for bit), but every pass over a piece reads the
    cache, not memory (the vocabulary-wide passes were 15-19 % of a sweep at 4,096 tokens).
    """
    rows = max(1, PIECE // (logits.shape[1] * logits.shape[2]))
    pieces = [
        _piece(logits[i : i + rows], suffix[i : i + rows]) for i in range(0, len(logits), rows)
    ]
    k, entropy, nll, margin, argmax = (torch.cat(parts) for parts in zip(*pieces, strict=True))
    return k, entropy, nll, margin, argmax


def _piece(logits: Tensor, suffix: Tensor) -> tuple[Tensor, ...]:
    argmax = logits.argmax(-1)
    lp = log_probs(logits)
    k = first_mismatch(argmax, suffix)
    top2 = logits.float().topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    matched = torch.arange(suffix.shape[1], device=suffix.device) <= k[:, None]
    margin = torch.where(matched, gap, torch.full_like(gap, float("inf"))).min(-1).values
    return k, completion_entropy(lp), suffix_nll(lp, suffix), margin, argmax
