"""Time a full per-block sweep: the workbench engine against naive generation and the original
method.

Run by hand (not collected by pytest):

    python tests/benchmarks/bench_memorization.py                 # organism main member + set
    python tests/benchmarks/bench_memorization.py --proxy         # a random 6-block GPT-NeoX
    python tests/benchmarks/bench_memorization.py --n 256 --batch-size 64 --threads 1

The three methods evaluate the same configurations (the clean model and every block
short-circuited alone) on the same samples, in the same process, in alternating rounds:

- naive: for each configuration and each batch, TransformerLens greedy generation of the
  32-token suffix with a KV cache (prefill the prefix, then one step per token), hooks on;
- original (the authors' method, re-created on the Hugging Face model of a checkpoint
  directory): eager attention whose probabilities are forced to the identity in the
  short-circuited block (``tests/hf_oracle.py``, the oracle of the intervention tests),
  ``generate`` with its KV cache and ``min_new_tokens = max_new_tokens = S``, and the extra full
  forward per batch that fed their entropy (here: completion entropy, checked against ours).
  ``min_new_tokens`` bans EOS, so its suffixes equal greedy ones up to the first EOS greedy
  picks (checked: every difference starts there);
- engine: ``workbench.memorization.sweep`` (teacher-forced passes sharing the clean residual
  stream, pooled KV-cached decoding of the diverging samples only).

It checks that the generated suffixes, exact_match and token_accuracy are identical for every
(configuration, sample), then prints wall-clock times, their ratios and the cost of each method in
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


def run_original(hf, tokens, interventions, prefix_len, batch_size, cost, n_layers):
    """The original method on the Hugging Face model: identity attention, ``generate``, then a
    full forward per batch for the entropy. Returns the suffixes and completion entropies."""
    from tests.hf_oracle import hf_identity_attention
    from workbench import metrics

    suffix_len = tokens.shape[1] - prefix_len
    out, entropy = {}, {}
    for sc in interventions:
        gens, ents = [], []
        for first in range(0, len(tokens), batch_size):
            batch = torch.from_numpy(tokens[first : first + batch_size])
            prefix = batch[:, :prefix_len]
            with torch.inference_mode(), hf_identity_attention(hf, sc.blocks):
                gen = hf.generate(
                    prefix,
                    attention_mask=torch.ones_like(prefix),
                    max_new_tokens=suffix_len,
                    min_new_tokens=suffix_len,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=hf.config.pad_token_id or 0,
                )
                logits = hf(batch).logits[:, prefix_len - 1 : -1]
            gens.append(gen[:, prefix_len:])
            ents.append(metrics.completion_entropy(metrics.log_probs(logits)))
            b = len(batch)  # prefill, S - 1 cached steps, the full forward
            cost.add(b, prefix_len, n_layers)
            for _ in range(suffix_len - 1):
                cost.add(b, 1, n_layers)
            cost.add(b, tokens.shape[1], n_layers)
        out[sc.label] = torch.cat(gens).numpy()
        entropy[sc.label] = torch.cat(ents).numpy()
    return out, entropy


def hf_checkpoint(name: str | None):
    """The Hugging Face model of a checkpoint directory (an organism member or a path)."""
    from transformers import AutoModelForCausalLM

    from workbench.organism import registry

    path = registry.EMBEDDED_MODELS.get(name or registry.DEFAULT_MODEL) or Path(name)
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


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

    hf = None if args.proxy else hf_checkpoint(args.model)
    methods = ["naive", "original", "engine"] if hf is not None else ["naive", "engine"]
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    for r in range(args.repeats):
        costs = {m: Cost() for m in methods}
        for method in methods if r % 2 == 0 else methods[::-1]:  # alternating rounds
            t0, p0 = time.perf_counter(), time.process_time()
            if method == "naive":
                naive = run_naive(
                    model, tokens, ivs, args.prefix_len, args.batch_size, costs[method]
                )
            elif method == "original":
                original, hf_entropy = run_original(
                    hf, tokens, ivs, args.prefix_len, args.batch_size, costs[method], n_layers
                )
            else:
                df = sweep(
                    model,
                    tokens,
                    ivs,
                    prefix_len=args.prefix_len,
                    batch_size=args.batch_size,
                    progress=False,
                    cost=costs[method],
                    chunk_rows=args.chunk_rows,
                    lean=False if args.tl_decode else None,
                )
            wall[method].append(time.perf_counter() - t0)
            cpu[method].append(time.process_time() - p0)
        print(
            "  round: "
            + ", ".join(f"{m} {wall[m][-1]:.2f} s ({cpu[m][-1]:.2f} s CPU)" for m in methods)
        )

    suffix = tokens[:, args.prefix_len :]
    mismatches, entropy_gap, eos_rows = 0, 0.0, 0
    for sc in ivs:
        rows = df[df.intervention == sc.label].sort_values("sample")
        gen = np.stack(rows["generated"].to_list())
        ref = naive[sc.label]
        mismatches += int((gen != ref).any(1).sum())
        assert (rows["exact_match"].to_numpy() == (ref == suffix).all(1)).all(), sc.label
        assert (rows["token_accuracy"].to_numpy() == (ref == suffix).mean(1)).all(), sc.label
        if hf is not None:  # min_new_tokens bans EOS: the original differs where greedy picks it
            differ = original[sc.label] != ref
            rows_differ = differ.any(1)
            at = ref[rows_differ, differ.argmax(1)[rows_differ]]
            assert (at == hf.config.eos_token_id).all(), sc.label
            eos_rows += int(rows_differ.sum())
            gap = np.abs(rows["completion_entropy"].to_numpy() - hf_entropy[sc.label]).max()
            entropy_gap = max(entropy_gap, float(gap))
    table = df.groupby("order").agg(
        intervention=("intervention", "first"),
        exact_match=("exact_match", "mean"),
        token_accuracy=("token_accuracy", "mean"),
        min_margin=("tf_margin", "min"),
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(
        f"identical generated suffixes, engine and naive: {mismatches == 0} ({mismatches} differ)"
        f"; original: identical up to the first EOS greedy picks, which min_new_tokens bans "
        f"({eos_rows} rows); completion entropy, engine vs original: max |diff| {entropy_gap:.1e}"
    )
    med = {m: (statistics.median(wall[m]), statistics.median(cpu[m])) for m in methods}
    print("| method | wall | CPU | FPE | forward calls | engine faster (wall / CPU / FPE) |")
    print("|---|---|---|---|---|---|")
    fpe = {m: costs[m].forward_equivalents(n, seq, n_layers) for m in methods}
    for m in methods:
        (w, c), (we, ce) = med[m], med["engine"]
        print(
            f"| {m} | {w:.2f} s | {c:.2f} s | {fpe[m]:.2f} | {costs[m].calls} | "
            f"{w / we:.2f}x / {c / ce:.2f}x / {fpe[m] / fpe['engine']:.2f}x |"
        )
    print_floor(
        model, tokens, df, ivs, args.prefix_len, costs["naive"], med["naive"][1], fpe["engine"]
    )


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


def print_floor(model, tokens, df, ivs, prefix_len, c_naive, naive_cpu, engine_fpe) -> None:
    """The least work any exact method needs on these samples (``workbench.cost``)."""
    n, seq = tokens.shape
    n_layers = model.cfg.n_layers
    generated = {}
    for sc in ivs:
        rows = df[df.intervention == sc.label].sort_values("sample")
        generated[sc] = np.stack(rows["generated"].to_list())
    floor = exact_floor(tokens, generated, prefix_len, n_layers)
    fpe = floor.position_blocks / (n * seq * n_layers)
    table = exact_floor(tokens, generated, prefix_len, n_layers, teacher_forced=True)
    table_fpe = table.position_blocks / (n * seq * n_layers)
    print(
        f"engine / floor: {engine_fpe / fpe:.2f}x the generation's floor ({fpe:.2f} FPE), "
        f"{engine_fpe / table_fpe:.2f}x the table's ({table_fpe:.2f} FPE: with the teacher-forced "
        "distributions that completion_entropy and suffix_nll need at every suffix position)"
    )
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
