"""``organism.findings``: the per-block tables and the claim tests, on tables with known answers.

The oracle is counting by hand: exact-match rates, pooled group accuracies and the seed
interval are recomputed here from the synthetic rows with plain arithmetic / scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workbench.organism import findings
from workbench.organism.evaluate import wilson


def label(block: int) -> str:
    return "none" if block < 0 else f"identity:{block}"


def memorization(em_by_block: dict[int, list[bool]], acc: float = 0.5) -> pd.DataFrame:
    rows = [
        {"intervention": label(b), "sample": i, "exact_match": e, "token_accuracy": acc}
        for b, ems in em_by_block.items()
        for i, e in enumerate(ems)
    ]
    return pd.DataFrame(rows)


def benchmarks(acc_by_block: dict[int, dict[str, float]], n: int = 100) -> pd.DataFrame:
    rows = [
        {
            "model": "m",
            "task": f"t_{group}",
            "group": group,
            "intervention": label(b),
            "metric": "acc",
            "filter": "none",
            "value": v,
            "n": n,
        }
        for b, accs in acc_by_block.items()
        for group, v in accs.items()
    ]
    return pd.DataFrame(rows)


def test_block_table_counts_only_what_the_clean_model_reproduces():
    # 4 samples; the clean model reproduces samples 0-2 only
    mem = memorization(
        {
            -1: [True, True, True, False],
            0: [False, False, False, True],
            1: [True, False, True, True],
        }
    )
    bench = benchmarks({b: {"language": 0.8, "reasoning": 0.6} for b in (-1, 0, 1)})
    own = findings.block_table(mem, bench)
    assert own.n_samples.tolist() == [3, 3, 3]
    assert own.exact_match.tolist() == pytest.approx([1.0, 0.0, 2 / 3])
    lo, hi = wilson(2, 3)
    assert (own.exact_match_lo[2], own.exact_match_hi[2]) == (lo, hi)
    every = findings.block_table(mem, bench, own=False)
    assert every.exact_match.tolist() == pytest.approx([0.75, 0.25, 0.75])
    assert own.acc_mean.tolist() == pytest.approx([0.7, 0.7, 0.7])


def test_group_accuracy_pools_the_items_of_its_tasks():
    bench = pd.concat(
        [
            benchmarks({-1: {"language": 0.5}}, n=100),
            benchmarks({-1: {"language": 0.9}}, n=300).assign(task="t_other"),
        ]
    )
    table = findings.block_table(memorization({-1: [True]}), bench)
    assert table.acc_language[0] == pytest.approx((50 + 270) / 400)
    assert (table.acc_language_lo[0], table.acc_language_hi[0]) == wilson(320, 400)


def test_paper_claims_find_the_blocks_built_to_hold_them():
    n = 200
    em = {-1: [True] * n}
    acc = {-1: {"language": 0.8, "reasoning": 0.6}}
    for b in range(6):  # blocks 0-1 collapse both; 2-3 change nothing; 4-5 lower EM only
        if b < 2:
            em[b], acc[b] = [False] * n, {"language": 0.5, "reasoning": 0.3}
        elif b < 4:
            em[b], acc[b] = [True] * n, dict(acc[-1])
        else:
            em[b], acc[b] = (
                [True] * (n // 2) + [False] * (n // 2),
                {"language": 0.79, "reasoning": 0.6},
            )
    claims = findings.paper_claims(findings.block_table(memorization(em), benchmarks(acc)))
    assert claims["early_blocks"] == [0, 1] and claims["early_holds_for"] == [0, 1]
    assert claims["late_blocks"] == [4, 5] and claims["late_holds_for"] == [4, 5]
    assert claims["blocks_lowering_memorization_keeping_accuracy"] == [4, 5]


def test_seed_table_is_a_t_interval_over_seeds():
    rng = np.random.default_rng(0)
    tables = {}
    for seed in range(3):
        em = {b: list(rng.random(50) < 0.3 + 0.2 * b) for b in (0, 1)}
        em[-1] = [True] * 50
        tables[f"s{seed}"] = findings.block_table(
            memorization(em), benchmarks({b: {"language": rng.random()} for b in (-1, 0, 1)})
        )
    out = findings.seed_table(tables)
    for col in ("exact_match", "acc_mean"):
        for block in (0, 1):
            v = np.array([t.loc[t.block == block, col].item() for t in tables.values()])
            lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
            lo, hi = max(lo, 0), min(hi, 1)
            row = out[out.block == block].iloc[0]
            assert row[col] == pytest.approx(v.mean())
            assert (row[f"{col}_lo"], row[f"{col}_hi"]) == pytest.approx((lo, hi), rel=1e-3)
