"""Time a full per-block sweep: the workbench engine against the original naive method.

Run by hand (not collected by pytest):

    python tests/benchmarks/bench_memorization.py                 # organism main member + set
    python tests/benchmarks/bench_memorization.py --proxy         # a random 6-block GPT-NeoX
    python tests/benchmarks/bench_memorization.py --n 256 --batch-size 64 --threads 1

Both methods evaluate the same configurations (the clean model and every block short-circuited
alone) on the same samples, in the same process:

- naive (the original code): for each configuration and each batch, greedy generation of the
  32-token suffix with a KV cache (prefill the prefix, then one step per token), hooks on;
- engine: ``workbench.memorization.sweep`` (teacher-forced passes sharing the clean residual
  stream, pooled KV-cached decoding of the diverging samples only).

It checks that the generated suffixes, exact_match and token_accuracy are identical for every
(configuration, sample), then prints wall-clock times, their ratio and the cost of each method in
forward-pass equivalents (one FPE = every sample's T positions through all L blocks once) and in
sequential forward calls. Timings alternate between the methods over ``--repeats`` rounds and the
median is reported (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workbench.cost import Cost, exact_floor
from workbench.decode import naive_greedy
from workbench.interventions import CLEAN, single_block_sweep
from workbench.memorization import sweep


def proxy(n: int, prefix_len: int, suffix_len: int, seed: int = 0):
    """A random GPT-NeoX shaped like the organism's main member, and a set where a third of the
    rows are its own greedy continuations ("memorized") and the rest random."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=6,
        d_model=128,
        n_heads=4,
        d_head=32,
        d_mlp=512,
        d_vocab=2048,
        n_ctx=128,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=8,
        parallel_attn_mlp=True,
        original_architecture="GPTNeoXForCausalLM",
        model_name="proxy-neox-6x128",
        init_weights=True,
    )
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, cfg.d_vocab, (n, prefix_len), generator=g)
    suffix = torch.randint(0, cfg.d_vocab, (n, suffix_len), generator=g)
    mem = torch.arange(n) % 3 == 0
    suffix[mem] = naive_greedy(model, prefix[mem], suffix_len)
    return model, torch.cat([prefix, suffix], 1).numpy()


def run_naive(model, tokens, interventions, prefix_len, batch_size, cost):
    out = {}
    for sc in interventions:
        gens = []
        for first in range(0, len(tokens), batch_size):
            batch = torch.from_numpy(tokens[first : first + batch_size, :prefix_len])
            gens.append(naive_greedy(model, batch, tokens.shape[1] - prefix_len, sc, cost=cost))
        out[sc.label] = torch.cat(gens).numpy()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="default: the organism's main member")
    p.add_argument("--data", default=None, help="default: the organism's memorized set")
    p.add_argument("--proxy", action="store_true", help="random 6x128 GPT-NeoX instead")
    p.add_argument("--n", type=int, default=None, help="first n samples (default: all)")
    p.add_argument("--prefix-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per decode step")
    p.add_argument(
        "--tl-decode",
        action="store_true",
        help="engine decode steps through TransformerLens' cached forward, not workbench.fast_step",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--memorized-only",
        action="store_true",
        help="keep the samples the clean model reproduces exactly (as Pythia's "
        "memorized-evals sets do); the selection is not timed",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.proxy:
        model, tokens = proxy(args.n or 512, args.prefix_len, 32)
        name = model.cfg.model_name
    else:
        from workbench.data import load_samples
        from workbench.models import load_model
        from workbench.organism import registry

        model = load_model(args.model, device="cpu")
        name = args.model or registry.DEFAULT_MODEL
        data = args.data or registry.DEFAULT_MEMORIZED_SET
        tokens = load_samples(data, prefix_len=args.prefix_len).tokens[: args.n]
    if args.memorized_only:
        clean = sweep(
            model,
            tokens,
            [CLEAN],
            prefix_len=args.prefix_len,
            decode=False,
            batch_size=args.batch_size,
            progress=False,
        )
        tokens = tokens[clean["exact_match"].to_numpy()]
        if not len(tokens):
            raise SystemExit("the clean model reproduces none of these samples exactly")
    n, seq = tokens.shape
    n_layers = model.cfg.n_layers
    ivs = [CLEAN, *single_block_sweep(range(n_layers))]
    print(
        f"{name}: {n_layers} blocks, d_model {model.cfg.d_model}, vocab {model.cfg.d_vocab}; "
        f"{n} samples x {seq} tokens (prefix {args.prefix_len}); {len(ivs)} configurations; "
        f"batch {args.batch_size}; {args.threads} thread(s)"
    )

    t_naive, t_fast, cpu_naive, cpu_fast = [], [], [], []
    for _ in range(args.repeats):
        c_naive, c_fast = Cost(), Cost()
        t0, p0 = time.perf_counter(), time.process_time()
        naive = run_naive(model, tokens, ivs, args.prefix_len, args.batch_size, c_naive)
        t_naive.append(time.perf_counter() - t0)
        cpu_naive.append(time.process_time() - p0)
        t0, p0 = time.perf_counter(), time.process_time()
        df = sweep(
            model,
            tokens,
            ivs,
            prefix_len=args.prefix_len,
            batch_size=args.batch_size,
            progress=False,
            cost=c_fast,
            chunk_rows=args.chunk_rows,
            lean=False if args.tl_decode else None,
        )
        t_fast.append(time.perf_counter() - t0)
        cpu_fast.append(time.process_time() - p0)
        print(
            f"  round: naive {t_naive[-1]:.2f} s ({cpu_naive[-1]:.2f} s CPU), "
            f"engine {t_fast[-1]:.2f} s ({cpu_fast[-1]:.2f} s CPU)"
        )

    suffix = tokens[:, args.prefix_len :]
    mismatches = 0
    for sc in ivs:
        rows = df[df.intervention == sc.label].sort_values("sample")
        gen = np.stack(rows["generated"].to_list())
        ref = naive[sc.label]
        mismatches += int((gen != ref).any(1).sum())
        assert (rows["exact_match"].to_numpy() == (ref == suffix).all(1)).all(), sc.label
        assert (rows["token_accuracy"].to_numpy() == (ref == suffix).mean(1)).all(), sc.label
    table = df.groupby("order").agg(
        intervention=("intervention", "first"),
        exact_match=("exact_match", "mean"),
        token_accuracy=("token_accuracy", "mean"),
        min_margin=("tf_margin", "min"),
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"identical generated suffixes: {mismatches == 0} ({mismatches} samples differ)")
    tn, tf = statistics.median(t_naive), statistics.median(t_fast)
    cn, cf = statistics.median(cpu_naive), statistics.median(cpu_fast)
    fpe_n = c_naive.forward_equivalents(n, seq, n_layers)
    fpe_f = c_fast.forward_equivalents(n, seq, n_layers)
    for label, t, c, cost in (("naive ", tn, cn, c_naive), ("engine", tf, cf, c_fast)):
        fpe = cost.forward_equivalents(n, seq, n_layers)
        print(
            f"{label}: {t:7.2f} s wall, {c:7.2f} s CPU, {fpe:6.2f} forward-pass equivalents, "
            f"{cost.calls:6d} forward calls"
        )
    print(
        f"speed-up (medians): wall {tn / tf:.2f}x, CPU {cn / cf:.2f}x; forward-pass equivalents "
        f"{fpe_n / fpe_f:.2f}x; forward calls {c_naive.calls / c_fast.calls:.1f}x"
    )
    print_floor(model, tokens, df, ivs, args.prefix_len, c_naive, cn)


def matmul_peak(model, repeats: int = 10) -> float:
    """Best FLOP/s of this core on the model's MLP matrix shapes, at row counts that favour it,
    and on a large square matrix product."""
    d, m = model.cfg.d_model, model.cfg.d_mlp or 4 * model.cfg.d_model
    shapes = [(rows, k, out) for rows in (4096, 16384) for k, out in ((d, m), (m, d))]
    best = 0.0
    for rows, k, out in [*shapes, (1536, 1536, 1536)]:
        a = torch.randn(rows, k, dtype=model.cfg.dtype)
        w = torch.randn(k, out, dtype=a.dtype)
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ w
            best = max(best, 2 * rows * k * out / (time.perf_counter() - t0))
    return best


def print_floor(model, tokens, df, ivs, prefix_len, c_naive, naive_cpu) -> None:
    """The least work any exact method needs on these samples (``workbench.cost``)."""
    n, seq = tokens.shape
    n_layers = model.cfg.n_layers
    generated = {}
    for sc in ivs:
        rows = df[df.intervention == sc.label].sort_values("sample")
        generated[sc] = np.stack(rows["generated"].to_list())
    floor = exact_floor(tokens, generated, prefix_len, n_layers)
    fpe = floor.position_blocks / (n * seq * n_layers)
    peak = matmul_peak(model)
    floor_s = floor.flops(model) / peak
    print(
        f"floor of any exact method: {floor.position_blocks} position-blocks = {fpe:.2f} FPE; at "
        f"naive's cost per position-block it is at most "
        f"{c_naive.position_blocks / floor.position_blocks:.2f}x faster than naive"
    )
    print(
        f"  = {floor.flops(model) / 1e9:.1f} GFLOP of weight matmuls; at this core's matmul peak "
        f"measured now ({peak / 1e9:.0f} GFLOP/s) {floor_s:.2f} s, at most "
        f"{naive_cpu / floor_s:.1f}x faster than naive's {naive_cpu:.2f} s CPU"
    )


if __name__ == "__main__":
    main()
