"""The memorization engine equals naive KV-cached greedy generation, sample by sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_llama

from workbench import metrics
from workbench.cost import Cost
from workbench.decode import evaluate_batch, naive_greedy
from workbench.interventions import CLEAN, ShortCircuit, single_block_sweep
from workbench.memorization import main, summary, sweep
from workbench.runs import Run

P, S = 8, 16


def memorized_set(model, n=12, *, prefix_len=P, suffix_len=S, seed=0) -> torch.Tensor:
    """Rows whose true suffix is the model's own greedy continuation ("memorized"), then some
    perturbed at chosen positions (divergence there) and some with random suffixes."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(1, model.cfg.d_vocab, (n, prefix_len), generator=g)
    tokens = torch.cat([prefix, naive_greedy(model, prefix, suffix_len)], dim=1)
    for row, j in [(3, 0), (4, 5), (5, suffix_len - 1), (6, suffix_len // 2)][: n - 3]:
        tokens[row, prefix_len + j] = (tokens[row, prefix_len + j] + 1) % model.cfg.d_vocab
    n_rand = max(n - 8, 1)
    tokens[n - n_rand :, prefix_len:] = torch.randint(
        1, model.cfg.d_vocab, (n_rand, suffix_len), generator=g
    )
    return tokens


def interventions_for(model) -> list[ShortCircuit]:
    n = model.cfg.n_layers
    return [
        CLEAN,
        *single_block_sweep(range(n)),
        *single_block_sweep(range(n), kind="zero"),
        ShortCircuit((0, n - 1)),
        ShortCircuit((1,), heads=(0, 2)),
    ]


def check_against_naive(model, tokens, interventions, prefix_len=P, chunk_rows=3):
    """Both decode kernels (workbench.fast_step and TransformerLens' cached forward), and decode
    chunks of ``chunk_rows`` rows that others join."""
    suffix = tokens[:, prefix_len:]
    refs = {
        sc: naive_greedy(model, tokens[:, :prefix_len], suffix.shape[1], sc) for sc in interventions
    }
    for lean, chunk in ((None, None), (False, None), (None, chunk_rows)):
        results = evaluate_batch(
            model, tokens, interventions, prefix_len=prefix_len, lean=lean, chunk_rows=chunk
        )
        for sc, ref in refs.items():
            res = results[sc]
            assert torch.equal(res.generated, ref), (sc.label, lean, chunk)
            assert torch.equal(
                res.first_mismatch == suffix.shape[1], metrics.exact_match(ref, suffix)
            )
            assert torch.equal(res.first_mismatch, metrics.longest_match(ref, suffix)), sc.label
    return results


def test_engine_equals_naive_under_every_short_circuit(tiny_model):
    tokens = memorized_set(tiny_model)
    results = check_against_naive(tiny_model, tokens, interventions_for(tiny_model))
    clean = results[CLEAN].first_mismatch
    assert (clean[[0, 1, 2, 7]] == S).all()  # unperturbed rows are memorized
    assert clean[3] == 0 and clean[4] == 5 and clean[5] == S - 1 and clean[6] == S // 2
    assert any((r.first_mismatch < S).any() for sc, r in results.items() if not sc.is_clean)


def test_engine_equals_naive_at_pythia_lengths(tiny_neox):
    tokens = memorized_set(tiny_neox, n=6, prefix_len=32, suffix_len=32, seed=1)
    check_against_naive(tiny_neox, tokens, [CLEAN, *single_block_sweep(range(3))], prefix_len=32)


def test_naive_reference_is_transformer_lens_generate(tiny_model):
    prefix = torch.randint(1, 96, (4, P), generator=torch.Generator().manual_seed(3))  # no pad id
    sc = ShortCircuit((1,))
    with sc.apply(tiny_model):
        out = tiny_model.generate(
            prefix,
            max_new_tokens=S,
            do_sample=False,
            use_past_kv_cache=True,
            prepend_bos=False,
            stop_at_eos=False,
            verbose=False,
        )
    assert torch.equal(out[:, P:], naive_greedy(tiny_model, prefix, S, sc))


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, S), min_size=6, max_size=6), block=st.integers(0, 2))
def test_engine_equals_naive_for_any_divergence_pattern(tiny_neox, cuts, block):
    tokens = memorized_set(tiny_neox, n=6)
    for row, j in enumerate(cuts):  # j == S: leave the row memorized
        if j < S:
            tokens[row, P + j] = (tokens[row, P + j] + 7) % 96
    check_against_naive(tiny_neox, tokens, [CLEAN, ShortCircuit((block,))])


@pytest.mark.parametrize("heads", [None, (1, 2)])
def test_engine_equals_naive_with_grouped_query_attention(heads):
    """Two key/value heads for four query heads (Llama-style): the decode reloads the grouped
    keys and values the teacher-forced pass cached."""
    model = tiny_llama(n_layers=3)
    tokens = memorized_set(model)
    ivs = [CLEAN, *single_block_sweep(range(3)), ShortCircuit((1,), heads)]
    results = check_against_naive(model, tokens, ivs)
    assert any((results[sc].first_mismatch < S - 1).any() for sc in ivs[1:])


def test_sweep_table_batching_and_determinism(tiny_neo):
    tokens = memorized_set(tiny_neo)
    ivs = [CLEAN, *single_block_sweep(range(tiny_neo.cfg.n_layers))]
    a = sweep(tiny_neo, tokens, ivs, prefix_len=P, batch_size=5, progress=False, dataset_name="t")
    b = sweep(tiny_neo, tokens, ivs, prefix_len=P, batch_size=64, progress=False, dataset_name="t")
    # same batches, each intervention decoded alone: every column bit-for-bit the same
    c = sweep(
        tiny_neo,
        tokens,
        ivs,
        prefix_len=P,
        batch_size=5,
        progress=False,
        dataset_name="t",
        decode_rows=1,
    )
    # every diverging row decoded alone, joining nothing
    d = sweep(tiny_neo, tokens, ivs, prefix_len=P, batch_size=5, progress=False, chunk_rows=1)
    assert len(a) == len(ivs) * len(tokens)
    assert a["sample"].tolist() == list(range(len(tokens))) * len(ivs)
    assert list(a.columns[:7]) == [
        "model",
        "dataset",
        "order",
        "intervention",
        "kind",
        "blocks",
        "sample",
    ]
    for col in ["exact_match", "longest_match", "token_accuracy", "intervention", "blocks"]:
        assert a[col].tolist() == b[col].tolist(), col
    for other in (b, c, d):
        assert all(
            np.array_equal(x, y) for x, y in zip(a["generated"], other["generated"], strict=True)
        )
    assert a.drop(columns="generated").equals(c.drop(columns="generated"))
    np.testing.assert_allclose(a["suffix_nll"], b["suffix_nll"], rtol=1e-4)
    naive = naive_greedy(tiny_neo, tokens[:, :P], S, ivs[2])
    rows = a[a.intervention == ivs[2].label]
    acc = (naive == tokens[:, P:]).float().mean(1).numpy()
    np.testing.assert_array_equal(rows["token_accuracy"].to_numpy(), acc)
    assert set(summary(a).columns) == {"n", "exact_match", "token_accuracy", "entropy"}


def test_no_decode_keeps_teacher_forced_metrics(tiny_neox):
    tokens = memorized_set(tiny_neox)
    full = sweep(tiny_neox, tokens, [CLEAN, ShortCircuit((1,))], prefix_len=P, progress=False)
    fast = sweep(
        tiny_neox, tokens, [CLEAN, ShortCircuit((1,))], prefix_len=P, decode=False, progress=False
    )
    assert fast["token_accuracy"].isna().all() and fast["generated"].isna().all()
    for col in ["exact_match", "longest_match", "completion_entropy", "suffix_nll"]:
        assert full[col].tolist() == fast[col].tolist()


def test_observer_hooks_see_the_intervened_passes(tiny_neox):
    tokens = memorized_set(tiny_neox)
    seen = []

    def observer(sc, batch):
        def hook(resid, hook):
            seen.append((sc.label, batch, hook.name, tuple(resid.shape)))

        return [("blocks.2.hook_resid_post", hook)]

    ivs = [CLEAN, ShortCircuit((1,)), ShortCircuit((2,))]
    sweep(tiny_neox, tokens, ivs, prefix_len=P, batch_size=8, observer=observer, progress=False)
    expected = [
        (sc.label, b, "blocks.2.hook_resid_post", (n, P + S, 32))
        for b, n in [(0, 8), (1, 4)]
        for sc in ivs
    ]
    assert seen == expected  # once per teacher-forced pass, never during decoding


def test_resume_after_interruption(tiny_neox, tmp_path):
    tokens = memorized_set(tiny_neox)
    ivs = [CLEAN, *single_block_sweep(range(3))]
    calls = []

    def crash_on_second_batch(sc, batch):
        calls.append((sc.label, batch))
        if batch == 1 and sc.blocks == (1,):
            raise KeyboardInterrupt
        return []

    config = {"test": 1}
    with pytest.raises(KeyboardInterrupt):
        sweep(
            tiny_neox,
            tokens,
            ivs,
            prefix_len=P,
            batch_size=8,
            observer=crash_on_second_batch,
            run=Run.open(tmp_path, config),
            progress=False,
        )
    parts = sorted(p.name for p in (tmp_path / "parts" / "memorization").glob("*.parquet"))
    assert len(parts) == 1  # batch 0's unit (every intervention) is kept; nothing of batch 1
    calls.clear()
    done = sweep(
        tiny_neox,
        tokens,
        ivs,
        prefix_len=P,
        batch_size=8,
        observer=lambda sc, b: calls.append((sc.label, b)) or [],
        run=Run.open(tmp_path, config),
        progress=False,
    )
    assert {b for _, b in calls} == {1}  # only the unfinished batch is recomputed
    whole = sweep(tiny_neox, tokens, ivs, prefix_len=P, batch_size=8, progress=False)
    assert done.drop(columns="generated").equals(whole.drop(columns="generated"))


def test_cli_writes_a_resumable_run(tiny_neox_dir, tiny_neox, tmp_path, capsys):
    tokens = memorized_set(tiny_neox, n=6, prefix_len=32, suffix_len=32)
    np.save(tmp_path / "set.npy", tokens.numpy())
    argv = [
        "--model",
        str(tiny_neox_dir),
        "--data",
        str(tmp_path / "set.npy"),
        "--prefix-len",
        "32",
        "--batch-size",
        "4",
        "--blocks",
        "all",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--no-progress",
    ]
    df = main(argv)
    out = capsys.readouterr().out
    assert "identity:2" in out and "exact_match" in out
    assert (tmp_path / "run" / "memorization.parquet").is_file()
    assert (tmp_path / "run" / "config.json").is_file()
    assert (
        len(df) == 4 * 6 and df.exact_match[df.intervention == "none"].tolist() == [1] * 3 + [0] * 3
    )
    again = main(argv)
    assert again.drop(columns="generated").equals(df.drop(columns="generated"))
    first = main([*argv, "--out", str(tmp_path / "first"), "--max-samples", "2"])
    assert first.drop(columns="generated").equals(
        df[df["sample"] < 2].reset_index(drop=True).drop(columns="generated")
    )
    with pytest.raises(SystemExit):
        main([*argv, "--max-samples", "0"])


def test_cost_counts_forward_work(tiny_neox):
    tokens = memorized_set(tiny_neox)
    cost, naive = Cost(), Cost()
    evaluate_batch(tiny_neox, tokens, [CLEAN], prefix_len=P, decode=False, cost=cost)
    # two blocks on every position, the last one only from the first suffix-predicting one
    assert cost.calls == 1 and cost.position_blocks == len(tokens) * (2 * (P + S) + S + 1)
    full = Cost()  # a hook of someone else's on the last block: it runs on every position
    with tiny_neox.hooks(fwd_hooks=[("blocks.2.hook_mlp_out", lambda act, hook: None)]):
        evaluate_batch(tiny_neox, tokens, [CLEAN], prefix_len=P, decode=False, cost=full)
    assert full.forward_equivalents(len(tokens), P + S, 3) == 1.0
    naive_greedy(tiny_neox, tokens[:, :P], S, cost=naive)
    assert naive.calls == S and naive.position_blocks == len(tokens) * (P + S - 1) * 3


def _organism(name: str | None):
    from workbench.models import load_model
    from workbench.organism import registry

    name = name or registry.DEFAULT_MODEL
    data = getattr(registry, "DEFAULT_MEMORIZED_SET", None)
    path = registry.EMBEDDED_MODELS.get(name)
    if path is None or not path.is_dir() or data is None or not data.is_file():
        pytest.skip(f"organism member {name} or its memorized set is not shipped yet")
    return load_model(name, device="cpu"), np.load(data)


@pytest.mark.parametrize("member", [None, "organism-neo-m"])
def test_engine_equals_naive_on_the_organism(member):
    model, tokens = _organism(member)
    rows = torch.from_numpy(tokens[:: max(1, len(tokens) // 24)])  # spread over the set
    ivs = [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]
    # rows joining decode chunks of 16 (chunks of 3, 5x the steps here, run on the tiny models)
    results = check_against_naive(model, rows, ivs, prefix_len=32, chunk_rows=16)
    assert results[CLEAN].first_mismatch.eq(32).any()  # the organism memorizes some of them
