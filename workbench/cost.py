"""What a memorization sweep costs, and the least any exact method could spend on it.

Work is counted in *position-blocks*: one position through one transformer block. A forward-pass
equivalent (FPE) is every sample's T positions through all L blocks.

``exact_floor`` is a lower bound on the work of *any* method that returns the exact greedy suffix
of every (intervention, sample), whatever its kernels or its order of work. The model is causal,
so block l's output at position p is a function of the input tokens ``x[0..p]`` and of what the
intervention does to blocks ``0..l``, and nothing else. Free-running greedy generation of a
T-token sample (prefix P, suffix S) feeds the model the inputs ``x = (prefix, g_0 … g_{S−2})``,
where g is the greedy suffix; its argmaxes at positions P − 1 … T − 2 are the suffix. Each of
those T − 1 inputs must pass through every block below the last under that intervention (later
positions attend to it), and through the last block where its logits are needed (P − 1 onward;
earlier positions need only their keys and values there, which the floor does not count). Two
(intervention, sample, position) triples can share block l's work only when their input prefixes
are identical and the two interventions act identically on blocks 0..l. The floor counts the
distinct (block, what acts on blocks 0..l, input prefix) triples, over all samples (duplicated
samples and shared openings count once), and the unembedding likewise at the positions whose
argmax is needed. ``Floor.flops`` charges each position-block only the weight matrices its block
still needs (a block whose attention is short-circuited needs no W_Q or W_K; a zero-ablated one
no attention weights at all); attention scores, norms, biases and non-linearities are left out,
so the floor is low, never high.

``teacher_forced=True`` is the floor of the memorization *table*: completion_entropy and
suffix_nll need the teacher-forced distributions ``f(· | p, s_{<j})`` at every suffix position
of every (intervention, sample), so the true inputs ``x[0..T−2]`` join each intervention's greedy
inputs (they coincide up to the sample's divergence and are counted once there).
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

    def add(self, batch: int, positions: int, blocks: int, last: int | None = None) -> None:
        """One forward call: ``positions`` through ``blocks`` blocks, the last of them through
        ``last`` positions when it computes fewer (keys and values aside, as in the floor)."""
        self.calls += 1
        last = positions if last is None else last
        self.position_blocks += batch * (positions * (blocks - 1) + last) if blocks else 0

    def forward_equivalents(self, n_samples: int, seq_len: int, n_layers: int) -> float:
        """In full forward passes over the data set (N samples × T positions × L blocks)."""
        return self.position_blocks / (n_samples * seq_len * n_layers)


@dataclass(frozen=True)
class Floor:
    """The least work any exact method needs.

    ``blocks``: position-blocks by what acts on that block (``None``: the block as trained, else
    ``(heads, kind)`` of the intervention acting on it). ``logit_positions``: unembedded
    positions.
    """

    blocks: dict[tuple | None, int]
    logit_positions: int

    @property
    def position_blocks(self) -> int:
        return sum(self.blocks.values())

    def flops(self, model: HookedTransformer) -> float:
        """Matrix-multiply FLOPs (2 per multiply-add) of the weights each position-block needs."""
        cfg = model.cfg
        total = sum(
            p.numel()
            for name, p in model.blocks.named_parameters()
            if name.rsplit(".", 1)[-1].lstrip("_").startswith("W")
        )
        head = cfg.d_model * cfg.d_head  # one head's W_Q, W_K, W_V or W_O
        kv_heads = cfg.n_key_value_heads or cfg.n_heads
        group = cfg.n_heads // kv_heads
        attention = 2 * cfg.n_heads * head + 2 * kv_heads * head
        mlp = total / cfg.n_layers - attention
        work = 0.0
        for acting, count in self.blocks.items():
            needed = attention + mlp
            if acting is not None:
                heads, kind = acting
                hit = set(range(cfg.n_heads) if heads is None else heads)
                whole = sum(set(range(g * group, (g + 1) * group)) <= hit for g in range(kv_heads))
                needed -= len(hit) * head + whole * head  # queries; keys of whole groups
                if kind == "zero":  # nor values of whole groups, nor the heads' output rows
                    needed -= len(hit) * head + whole * head
            work += count * needed
        return 2.0 * (work + self.logit_positions * cfg.d_model * cfg.d_vocab)


def exact_floor(
    tokens: Int[np.ndarray, "sample seq"],
    generated: Mapping[ShortCircuit, Int[np.ndarray, "sample suffix"]],
    prefix_len: int,
    n_layers: int,
    *,
    teacher_forced: bool = False,
) -> Floor:
    """Distinct (block, what acts up to it, input prefix) triples over every (intervention,
    sample) position; ``generated[sc]`` is each sample's exact greedy suffix under ``sc``;
    ``teacher_forced``: the true inputs too (the teacher-forced metrics)."""
    inputs = {
        sc: np.concatenate([tokens[:, :prefix_len], gen[:, :-1]], axis=1)
        for sc, gen in generated.items()
    }
    if teacher_forced:
        inputs = {sc: np.concatenate([x, tokens[:, :-1]]) for sc, x in inputs.items()}
    blocks: dict[tuple | None, int] = {}
    logits = 0
    for layer in range(n_layers + 1):  # n_layers: the unembedding
        classes: dict[tuple, list[np.ndarray]] = {}
        for sc, x in inputs.items():
            classes.setdefault(_acts_up_to(sc, layer), []).append(x)
        for key, group in classes.items():
            rows = np.concatenate(group)
            if layer == n_layers:
                logits += _trie_size(rows, prefix_len - 1)
                continue
            acting = (key[1], key[2]) if key and key[0][-1] == layer else None
            skip = prefix_len - 1 if layer == n_layers - 1 else 0
            blocks[acting] = blocks.get(acting, 0) + _trie_size(rows, skip)
    return Floor(blocks=blocks, logit_positions=logits)


def _acts_up_to(sc: ShortCircuit, layer: int) -> tuple:
    """What ``sc`` does to blocks 0..layer: interventions with equal keys compute alike there."""
    acted = tuple(b for b in sc.blocks if b <= layer)
    return (acted, sc.heads, sc.kind) if acted else ()


def _trie_size(rows: Int[np.ndarray, "row pos"], skip: int) -> int:
    """Distinct prefixes of lengths skip + 1 … len among the rows."""
    ordered = sorted(map(tuple, rows.tolist()))
    total, previous = 0, None
    for row in ordered:
        shared = 0
        if previous is not None:
            while shared < len(row) and row[shared] == previous[shared]:
                shared += 1
        total += len(row) - max(shared, skip)
        previous = row
    return total
