"""The organism's training recipe: deterministic, CPU, one command.

    python -m workbench.organism.train --all                 # the shipped suite into data/organism
    python -m workbench.organism.train --member organism-neox-m --out /tmp/organism

Every member reads the same corpus (``data.build_corpus`` with ``DataConfig()``), trains with
AdamW, linear warm-up then cosine decay, next-token loss on every position, in a fixed order from
fixed seeds with deterministic kernels. Each checkpoint directory gets the Hugging Face files,
the tokenizer, and ``training_log.json`` (loss curve, wall time, parameters, configs). ``--all``
also writes the exports (memorized-sample set, ground truth, lm-eval tasks) and measures the
behaviour gates of each member into ``gates.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from workbench.organism import members as members_mod
from workbench.organism.data import EOS, Corpus, DataConfig, build_corpus
from workbench.organism.registry import DATA_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How one member trains. ``epochs`` and ``lr`` default to the member's own."""

    member: str = members_mod.MAIN_MEMBER
    epochs: int | None = None
    lr: float | None = None
    batch_size: int = 16
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 1234
    threads: int = 2
    log_every: int = 20
    data: DataConfig = field(default_factory=DataConfig)


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``min_ratio * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_member(cfg: TrainConfig, corpus: Corpus, out_dir: Path) -> dict:
    """Train one member on ``corpus`` and save it as a Hugging Face checkpoint in ``out_dir``.

    Torch's thread count and deterministic-algorithms flag are set for the run and restored after.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, corpus, out_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: TrainConfig, corpus: Corpus, out_dir: Path) -> dict:
    member = members_mod.SUITE[cfg.member]
    epochs = cfg.epochs if cfg.epochs is not None else member.epochs
    peak_lr = cfg.lr if cfg.lr is not None else member.lr
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    eos_id = corpus.tokenizer.get_vocab()[EOS]
    config = members_mod.hf_config(member, len(corpus.tokenizer), eos_id)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    optim = torch.optim.AdamW(
        model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
    )
    rows = torch.from_numpy(corpus.rows)
    order_rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(rows) // cfg.batch_size
    total = epochs * steps_per_epoch
    curve: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=cfg.member, unit="step")
    step = 0
    for epoch in range(epochs):
        perm = torch.from_numpy(order_rng.permutation(len(rows)))
        for b in range(steps_per_epoch):
            batch = rows[perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            lr = lr_at(step, total, peak_lr, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in optim.param_groups:
                group["lr"] = lr
            logits = model(batch).logits
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
            )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            if step % cfg.log_every == 0 or step == total - 1:
                curve.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "lr": lr,
                        "loss": round(loss.item(), 5),
                        "seconds": round(time.perf_counter() - start, 2),
                    }
                )
                bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
            step += 1
    bar.close()
    wall = time.perf_counter() - start

    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    corpus.tokenizer.save_pretrained(out_dir)
    record = {
        "member": member.to_dict(),
        "parameters": n_params(model),
        "epochs": epochs,
        "peak_lr": peak_lr,
        "steps": total,
        "tokens_seen": total * cfg.batch_size * corpus.config.seq_len,
        "train_seconds": round(wall, 1),
        "threads": cfg.threads,
        "torch_version": torch.__version__,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "data"},
        "data_config": asdict(corpus.config),
        "loss_curve": curve,
    }
    (out_dir / "training_log.json").write_text(json.dumps(record, indent=1))
    log.info(
        "%s: %d parameters, %.0f s, final loss %.3f",
        cfg.member,
        record["parameters"],
        wall,
        curve[-1]["loss"],
    )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--member", nargs="+", choices=sorted(members_mod.SUITE))
    which.add_argument("--all", action="store_true", help="the whole suite, plus exports")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="suite directory")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--rows", type=int, default=None, help="corpus rows (reduced recipes)")
    parser.add_argument("--repeat-max-len", type=int, default=None, help="data variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-gates", action="store_true", help="skip measuring the gates")
    parser.add_argument("--no-export", action="store_true", help="skip writing the exports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data_cfg = DataConfig() if args.rows is None else replace(DataConfig(), n_rows=args.rows)
    if args.repeat_max_len is not None:
        data_cfg = replace(data_cfg, repeat_max_len=args.repeat_max_len)
    t0 = time.perf_counter()
    corpus = build_corpus(data_cfg)
    print(
        f"corpus: {corpus.rows.shape} rows, vocab {len(corpus.tokenizer)}, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    names = sorted(members_mod.SUITE) if args.all else args.member
    from workbench.organism import evaluate, export  # heavy imports only for the CLI

    if not args.no_export:
        export.export_samples(corpus, args.out / "samples")
        export.export_tasks(args.out / "tasks")
    for name in names:
        cfg = TrainConfig(
            member=name, epochs=args.epochs, lr=args.lr, threads=args.threads, data=data_cfg
        )
        record = train_member(cfg, corpus, args.out / name)
        print(f"{name}: {record['parameters']:,} parameters, {record['train_seconds']:.0f} s")
        if not args.no_gates and (args.out / "samples").is_dir():
            gates = evaluate.measure_gates(args.out / name, args.out / "samples")
            print(json.dumps(gates["exact_match_by_group"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
