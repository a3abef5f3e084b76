"""Log-likelihoods of (context, continuation) token pairs under several interventions at once,
sharing their passes: the scoring behind ``workbench.lm_eval_adapter.HookedLM``'s loglikelihood
requests, free of lm-eval.

Each model input (context + continuation, left-truncated to ``max_length + 1`` tokens, the last
dropped, exactly as lm-eval's ``HFLM``) is run once per batch, longest first with right padding
(exact: attention is causal, so a real position never sees the pads after it). Per batch, one
clean pass keeps the residual stream entering each intervened block and each intervention runs
only from its lowest block on (``workbench.passes``). Pairs with the same model input (the
one-token answers of a multiple-choice question) share one row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from workbench.interventions import ShortCircuit
from workbench.passes import clean_pass, intervened_pass

TokenPair = tuple[tuple[int, ...], tuple[int, ...]]
Answer = tuple[float, bool]


def score_pairs(
    model: HookedTransformer,
    pairs: Sequence[TokenPair],
    interventions: Sequence[ShortCircuit],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = False,
) -> dict[ShortCircuit, list[Answer]]:
    """(sum of log-probs of the continuation, is it the greedy continuation) per pair and
    intervention, with the clean residual stream shared below each intervention's lowest block.

    ``pairs`` are (context tokens, continuation tokens), the context non-empty; as in HFLM the
    model reads ``(context + continuation)[-(max_length + 1):][:-1]``.
    """
    max_length = max_length or model.cfg.n_ctx
    interventions = list(dict.fromkeys(interventions))
    inputs: dict[tuple[int, ...], list[int]] = defaultdict(list)  # model input -> pair indices
    for i, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise ValueError("a loglikelihood request needs a non-empty context and continuation")
        if len(cont) > max_length:
            raise ValueError(f"continuation of {len(cont)} tokens exceeds max_length {max_length}")
        inputs[(ctx + cont)[-(max_length + 1) :][:-1]].append(i)
    order = sorted(inputs, key=lambda t: (-len(t), t))
    keep = sorted({sc.blocks[0] for sc in interventions if not sc.is_clean})
    out: dict[ShortCircuit, list[Answer]] = {
        sc: [(0.0, False)] * len(pairs) for sc in interventions
    }
    device = model.cfg.device
    bar = tqdm(
        total=len(order) * len(interventions),
        disable=not progress,
        desc=f"loglikelihood x{len(interventions)} configs",
        unit="seq",
    )
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        tokens, mask = _right_pad(batch, device)
        clean_logits, resid = clean_pass(model, tokens, keep, attention_mask=mask)
        for sc in interventions:
            logits = (
                clean_logits
                if sc.is_clean
                else intervened_pass(model, tokens, sc, resid, attention_mask=mask)
            )
            for row, inp in enumerate(batch):
                for i in inputs[inp]:
                    out[sc][i] = _score_one(logits[row], len(inp), pairs[i][1])
            bar.update(len(batch))
        del clean_logits, resid
    bar.close()
    return out


def _right_pad(
    seqs: Sequence[tuple[int, ...]], device: str | torch.device | None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    width = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for row, s in enumerate(seqs):
        tokens[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    return tokens.to(device), mask.to(device)


def _score_one(logits: Float[Tensor, "pos d_vocab"], inplen: int, cont: tuple[int, ...]) -> Answer:
    logprobs = F.log_softmax(logits[inplen - len(cont) : inplen].float(), dim=-1)
    target = torch.tensor(cont, device=logprobs.device)
    greedy = bool((logprobs.argmax(dim=-1) == target).all())
    return float(logprobs.gather(1, target[:, None]).sum()), greedy
