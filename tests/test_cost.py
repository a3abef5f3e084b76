"""The work counters and the floor of any exact method."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from workbench.cost import Cost, Floor, exact_floor
from workbench.decode import evaluate_batch, naive_greedy
from workbench.interventions import CLEAN, ShortCircuit, single_block_sweep

MENU = [
    CLEAN,
    ShortCircuit((0,)),
    ShortCircuit((1,)),
    ShortCircuit((2,)),
    ShortCircuit((1,), kind="zero"),
    ShortCircuit((1, 2)),
    ShortCircuit((2,), heads=(0,)),
]


def brute_force(tokens, generated, prefix_len, n_layers, teacher_forced=False) -> Floor:
    """Enumerate every (block, what acts on blocks up to it, input prefix) over all samples."""
    blocks, logits = {}, set()
    for s, row in enumerate(tokens):
        for sc, gen in generated.items():
            inputs = [tuple(row[:prefix_len]) + tuple(gen[s][:-1])]
            inputs += [tuple(row[:-1])] if teacher_forced else []
            for x, layer in ((x, layer) for x in inputs for layer in range(n_layers + 1)):
                acted = frozenset((b, sc.heads, sc.kind) for b in sc.blocks if b <= layer)
                acting = (sc.heads, sc.kind) if layer in sc.blocks else None
                for p in range(len(x)):
                    needs_logits = p >= prefix_len - 1
                    if layer == n_layers and needs_logits:
                        logits.add((acted, x[: p + 1]))
                    elif layer < n_layers - 1 or (layer == n_layers - 1 and needs_logits):
                        blocks.setdefault(acting, set()).add((layer, acted, x[: p + 1]))
    return Floor({k: len(v) for k, v in blocks.items()}, len(logits))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.sampled_from(MENU), min_size=1, max_size=5, unique=True),
    st.integers(1, 4),
    st.integers(1, 5),
    st.booleans(),
)
def test_floor_counts_distinct_layer_inputs(seed, interventions, prefix_len, suffix_len, tf):
    rng = np.random.default_rng(seed)
    n = 3
    tokens = rng.integers(0, 2, (n, prefix_len + suffix_len))  # two token values: many ties
    generated = {sc: rng.integers(0, 2, (n, suffix_len)) for sc in interventions}
    floor = exact_floor(tokens, generated, prefix_len, 3, teacher_forced=tf)
    assert floor == brute_force(tokens, generated, prefix_len, 3, tf)
    if tf:  # the table's floor: the generation's and the teacher-forced inputs' together
        assert (
            floor.position_blocks >= exact_floor(tokens, generated, prefix_len, 3).position_blocks
        )


def test_floor_is_below_both_methods_and_equals_naive_when_nothing_is_shared(tiny_neox):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 96, (6, 24), generator=g)
    tokens[:, 0] = torch.arange(1, 7)  # no two samples share an opening
    prefix_len, suffix_len, n_layers = 8, 16, tiny_neox.cfg.n_layers
    ivs = [CLEAN, *single_block_sweep(range(n_layers))]
    engine, naive = Cost(), Cost()
    results = evaluate_batch(tiny_neox, tokens, ivs, prefix_len=prefix_len, cost=engine)
    for sc in ivs:
        naive_greedy(tiny_neox, tokens[:, :prefix_len], suffix_len, sc, cost=naive)
    generated = {sc: results[sc].generated.numpy() for sc in ivs}
    floor = exact_floor(tokens.numpy(), generated, prefix_len, n_layers)
    assert floor.position_blocks <= engine.position_blocks
    table = exact_floor(tokens.numpy(), generated, prefix_len, n_layers, teacher_forced=True)
    assert floor.position_blocks < table.position_blocks <= engine.position_blocks
    assert floor.position_blocks < naive.position_blocks  # blocks below 1 and 2 are shared
    assert floor.logit_positions == len(ivs) * len(tokens) * suffix_len

    apart = [ShortCircuit((0,)), ShortCircuit((0,), kind="zero")]  # differ from block 0 on
    naive = Cost()
    for sc in apart:
        naive_greedy(tiny_neox, tokens[:, :prefix_len], suffix_len, sc, cost=naive)
    generated = {sc: results[ivs[1]].generated.numpy() for sc in apart}  # even equal suffixes
    floor = exact_floor(tokens.numpy(), generated, prefix_len, n_layers)
    # every input through every block, but the last block only where logits are needed
    unneeded = len(apart) * len(tokens) * (prefix_len - 1)
    assert floor.position_blocks == naive.position_blocks - unneeded


def test_floor_flops_count_the_weight_matrices_each_block_needs(tiny_neox):
    cfg = tiny_neox.cfg
    head, mlp = cfg.d_model * cfg.d_head, 2 * cfg.d_model * cfg.d_mlp
    full = 4 * cfg.n_heads * head + mlp
    assert Floor({None: 3}, 2).flops(tiny_neox) == 2 * (3 * full + 2 * cfg.d_model * cfg.d_vocab)
    identity = Floor({(None, "identity"): 1}, 0).flops(tiny_neox)
    assert identity == 2 * (2 * cfg.n_heads * head + mlp)  # no queries, no keys
    assert Floor({(None, "zero"): 1}, 0).flops(tiny_neox) == 2 * mlp
    assert Floor({((1,), "zero"): 1}, 0).flops(tiny_neox) == 2 * (full - 4 * head)


def test_grouped_keys_count_until_their_whole_group_is_short_circuited():
    llama = tiny_llama()  # 4 query heads in 2 groups of 2
    cfg = llama.cfg
    head = cfg.d_model * cfg.d_head
    full = Floor({None: 1}, 0).flops(llama)
    assert full - Floor({((0,), "identity"): 1}, 0).flops(llama) == 2 * head  # W_Q of head 0
    assert full - Floor({((0, 1), "identity"): 1}, 0).flops(llama) == 2 * 3 * head  # + W_K
    assert full - Floor({((1, 2), "zero"): 1}, 0).flops(llama) == 2 * 4 * head  # Q, O of two
