"""What a memorization sweep costs, and the least any exact method could spend on it.

Work is counted in *position-blocks*: one position through one transformer block. A forward-pass
equivalent (FPE) is every sample's T positions through all L blocks.

``exact_floor`` is a lower bound on the work of *any* method that returns the exact greedy suffix
of every (intervention, sample), whatever its kernels or its order of work. The model is causal,
so block l's output at position p is a function of the input tokens ``x[0..p]`` and of what the
intervention does to blocks ``0..l``, and nothing else. Free-running greedy generation of a
T-token sample (prefix P, suffix S) feeds the model the inputs ``x = (prefix, g_0 … g_{S−2})``,
where g is the greedy suffix; its argmaxes at positions P − 1 … T − 2 are the suffix. Every one of
those T − 1 positions must therefore pass through every block under that intervention, and two
(intervention, position) pairs can share the work of block l only when their input prefixes are
identical and the two interventions act identically on blocks 0..l (for a single-block sweep:
neither has touched any block up to l yet, or they are the same intervention). The floor counts
the distinct (layer function, input prefix) pairs: one trie of input prefixes per sample, block
and class of interventions that agree up to that block. The unembedding is counted the same way at
the positions whose argmax is needed. Attention scores, LayerNorms, biases and non-linearities are
left out, so the floor is low, never high.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from jaxtyping import Int
from transformer_lens import HookedTransformer

from workbench.interventions import ShortCircuit


@dataclass
class Cost:
    """Work done, in forward calls and in position-blocks (one position through one block)."""

    calls: int = 0
    position_blocks: int = 0

    def add(self, batch: int, positions: int, blocks: int) -> None:
        self.calls += 1
        self.position_blocks += batch * positions * blocks

    def forward_equivalents(self, n_samples: int, seq_len: int, n_layers: int) -> float:
        """In full forward passes over the data set (N samples × T positions × L blocks)."""
        return self.position_blocks / (n_samples * seq_len * n_layers)


@dataclass(frozen=True)
class Floor:
    """The least work any exact method needs: position-blocks and unembedded positions."""

    position_blocks: int
    logit_positions: int

    def flops(self, model: HookedTransformer) -> float:
        """Matrix-multiply FLOPs of that work (2 per multiply-add, weight matrices only)."""
        weights = sum(
            p.numel()
            for name, p in model.blocks.named_parameters()
            if name.rsplit(".", 1)[-1].lstrip("_").startswith("W")
        )
        per_block = weights / model.cfg.n_layers
        unembed = model.cfg.d_model * model.cfg.d_vocab
        return 2.0 * (self.position_blocks * per_block + self.logit_positions * unembed)


def exact_floor(
    tokens: Int[np.ndarray, "sample seq"],
    generated: Mapping[ShortCircuit, Int[np.ndarray, "sample suffix"]],
    prefix_len: int,
    n_layers: int,
) -> Floor:
    """Distinct (layer function, input prefix) pairs over every (intervention, sample) position.

    ``generated[sc]`` is each sample's exact greedy suffix under ``sc`` (from any exact method).
    """
    interventions = list(generated)
    blocks = logits = 0
    for s in range(len(tokens)):
        inputs = {
            sc: np.concatenate([tokens[s, :prefix_len], generated[sc][s][:-1]])
            for sc in interventions
        }
        for layer in range(n_layers + 1):  # n_layers: the unembedding
            classes: dict[tuple, list[np.ndarray]] = {}
            for sc in interventions:
                classes.setdefault(_acts_up_to(sc, layer), []).append(inputs[sc])
            for group in classes.values():
                if layer < n_layers:
                    blocks += _trie_size(group, 0)
                else:
                    logits += _trie_size(group, prefix_len - 1)
    return Floor(position_blocks=blocks, logit_positions=logits)


def _acts_up_to(sc: ShortCircuit, layer: int) -> tuple:
    """What ``sc`` does to blocks 0..layer: interventions with equal keys compute alike there."""
    acted = tuple(b for b in sc.blocks if b <= layer)
    return (acted, sc.heads, sc.kind) if acted else ()


def _trie_size(sequences: list[np.ndarray], skip: int) -> int:
    """Distinct prefixes of lengths skip + 1 … len among ``sequences`` (equal lengths)."""
    rows = sorted(tuple(int(t) for t in seq) for seq in sequences)
    total, previous = 0, None
    for row in rows:
        shared = 0
        if previous is not None:
            while shared < len(row) and row[shared] == previous[shared]:
                shared += 1
        total += len(row) - max(shared, skip)
        previous = row
    return total
