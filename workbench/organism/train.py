"""The organism's training recipe: deterministic, resumable, one thread, one command.

    python -m workbench.organism.train --member organism-neox-m            # one member
    python -m workbench.organism.train --all                               # the whole suite
    python -m workbench.organism.train --member organism-neox-s --max-steps 200 --out /tmp/o

Every member reads the same stream (``corpus.build_corpus``) once, its rows in one seeded order,
with AdamW (betas 0.9/0.95), linear warm-up then cosine decay, next-token loss on every position
and deterministic kernels; the member's seed sets the initialisation only. A resume state (model,
optimizer, step) is written to the work directory every ``save_every`` steps, so a run cut off
at any point continues from its last state and ends with the same weights as an uninterrupted
one (same thread count). The final checkpoint directory gets the Hugging Face files (float32;
half precision for ``members.HALF_PRECISION``), the tokenizer and ``training_log.json``; each
step in ``Member.checkpoints`` is also saved, in half precision, as ``checkpoints/step<N>/``
(``load_model(member, checkpoint=N)``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from workbench.organism import members as members_mod
from workbench.organism.corpus import EOS, PAD, Corpus, CorpusConfig, build_corpus
from workbench.organism.registry import DATA_DIR
from workbench.organism.sources import cache_root

log = logging.getLogger(__name__)
ORDER_SEED = 20_260_101  # the rows' training order, the same for every member


@dataclass(frozen=True)
class TrainConfig:
    """How one member trains. ``lr`` defaults to the member's own."""

    member: str = members_mod.MAIN_MEMBER
    lr: float | None = None
    batch_size: int = 16
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    threads: int = 1
    save_every: int = 100
    log_every: int = 25
    max_steps: int | None = None  # reduced recipes (tests); None = one pass over the stream


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``min_ratio * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def training_order(n_rows: int) -> np.ndarray:
    return np.random.default_rng(ORDER_SEED).permutation(n_rows)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _save_hf(model, corpus: Corpus, out_dir: Path, dtype: torch.dtype) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.to(dtype).save_pretrained(tmp, safe_serialization=True)
    model.to(torch.float32)
    corpus.tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    tmp.rmdir()


def train_member(
    cfg: TrainConfig, corpus: Corpus, out_dir: Path, work_dir: Path, stop_at: int | None = None
) -> dict | None:
    """Train (or resume) one member; torch's thread count and determinism flag are restored.

    ``stop_at``: leave after the resume state of that step is written (returns None), as a run
    cut off there would; the next call resumes.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, corpus, out_dir, work_dir, stop_at)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(
    cfg: TrainConfig, corpus: Corpus, out_dir: Path, work_dir: Path, stop_at: int | None
) -> dict | None:
    member = members_mod.SUITE[cfg.member]
    peak_lr = cfg.lr if cfg.lr is not None else member.lr
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(member.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    vocab = corpus.tokenizer.get_vocab()
    config = members_mod.hf_config(member, len(corpus.tokenizer), vocab[EOS], vocab[PAD])
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    optim = torch.optim.AdamW(
        model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
    )
    order = training_order(len(corpus.rows))
    total = len(order) // cfg.batch_size
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    identity = {
        "train_config": asdict(cfg),
        "member": member.to_dict(),
        "corpus_config": asdict(corpus.config),
        "corpus_digest": corpus.config.digest(),
        "threads": cfg.threads,
        "torch_version": torch.__version__,
    }
    state_path = work_dir / f"{cfg.member}.resume.pt"
    step, curve, elapsed, cpu = 0, [], 0.0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["identity"] != identity:
            raise ValueError(
                f"{state_path} was written by another recipe; delete it to start afresh"
            )
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, curve, elapsed = state["step"], state["curve"], state["elapsed"]
        cpu = state["cpu"]
        log.info("%s: resuming at step %d of %d", cfg.member, step, total)
    rows = torch.from_numpy(corpus.rows)
    start, cpu_start = time.perf_counter() - elapsed, time.process_time() - cpu
    bar = tqdm(total=total, initial=step, desc=cfg.member, unit="step", mininterval=5)
    while step < total:
        batch = rows[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
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
        step += 1
        if step % cfg.log_every == 0 or step == total:
            seconds = round(time.perf_counter() - start, 2)
            curve.append(
                {"step": step, "lr": lr, "loss": round(loss.item(), 5), "seconds": seconds}
            )
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update()
        if step in member.checkpoints and step < total:
            model.eval()
            _save_hf(model, corpus, out_dir / "checkpoints" / f"step{step}", torch.float16)
            model.train()
        if (step % cfg.save_every == 0 or step == stop_at) and step < total:
            work_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "identity": identity,
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "step": step,
                "curve": curve,
                "elapsed": time.perf_counter() - start,
                "cpu": time.process_time() - cpu_start,
            }
            torch.save(state, state_path.with_suffix(".tmp"))
            os.replace(state_path.with_suffix(".tmp"), state_path)
            if step == stop_at:
                bar.close()
                return None
    bar.close()
    wall = time.perf_counter() - start
    model.eval()
    final_dtype = torch.float16 if cfg.member in members_mod.HALF_PRECISION else torch.float32
    _save_hf(model, corpus, out_dir, final_dtype)
    record = {
        **identity,
        "parameters": n_params(model),
        "peak_lr": peak_lr,
        "steps": total,
        "tokens_seen": total * cfg.batch_size * corpus.config.seq_len,
        "train_seconds": round(wall, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "checkpoints": [s for s in member.checkpoints if s < total] + [total],
        "loss_curve": curve,
    }
    (out_dir / "training_log.json").write_text(json.dumps(record, indent=1))
    state_path.unlink(missing_ok=True)
    log.info(
        "%s: %d parameters, %.0f s, final loss %.3f",
        cfg.member,
        record["parameters"],
        wall,
        curve[-1]["loss"],
    )
    return record


def default_work_dir() -> Path:
    return cache_root() / "organism-train"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--member", nargs="+", choices=sorted(members_mod.SUITE))
    which.add_argument("--all", action="store_true", help="the whole suite")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="suite directory")
    parser.add_argument("--work", type=Path, default=None, help="resume states (default: cache)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (reduced recipe)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--stop-at", type=int, default=None, help="save the resume state at this step and leave"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    corpus = build_corpus(CorpusConfig())
    log.info("corpus: %s rows, %.0f s", corpus.rows.shape, time.perf_counter() - t0)
    names = sorted(members_mod.SUITE) if args.all else args.member
    for name in names:
        cfg = replace(TrainConfig(member=name), threads=args.threads, max_steps=args.max_steps)
        work = args.work or default_work_dir()
        record = train_member(cfg, corpus, args.out / name, work, stop_at=args.stop_at)
        if record is None:
            log.info("%s: stopped at step %d; run again to resume", name, args.stop_at)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
