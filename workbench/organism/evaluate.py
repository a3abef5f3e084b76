"""Measure the organism's behaviour gates on a shipped checkpoint (Hugging Face, float32).

* ``exact_match``: greedy 32-token suffix after the 32-token prefix, computed in one
  teacher-forced pass: the greedy continuation equals the true suffix iff the argmax at every
  suffix position, given the true tokens before it, is the true next token.
* ``task_accuracy``: lm-eval's ``acc`` for a multiple-choice jsonl (sum of the choice's token
  log-probs after the context, highest wins), computed directly; ``lm_eval_accuracy`` runs the
  harness itself (HFLM) on the exported YAML tasks.
* ``measure_gates``: all of it for one member, written to ``gates.json`` next to the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from workbench.organism import export
from workbench.organism.data import PREFIX_LEN, SAMPLE_LEN

log = logging.getLogger(__name__)


def load_hf(member_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(member_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(member_dir)


@torch.no_grad()
def suffix_argmax_hits(
    model: PreTrainedModel, tokens: Int[np.ndarray, "n 64"], batch_size: int = 128
) -> Bool[Tensor, "n 32"]:
    """Whether the greedy prediction at each suffix position is the true token."""
    ids = torch.as_tensor(tokens, dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] != SAMPLE_LEN:
        raise ValueError(f"expected [N, {SAMPLE_LEN}] token ids, got {tuple(ids.shape)}")
    out = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        logits: Float[Tensor, "b 64 v"] = model(batch).logits
        pred = logits[:, PREFIX_LEN - 1 : SAMPLE_LEN - 1].argmax(-1)
        out.append(pred == batch[:, PREFIX_LEN:])
    return torch.cat(out)


def exact_match(model: PreTrainedModel, tokens: Int[np.ndarray, "n 64"]) -> np.ndarray:
    """Per row: 1.0 if the 32-token greedy suffix equals the true suffix, else 0.0."""
    return suffix_argmax_hits(model, tokens).all(dim=1).float().numpy()


def exact_match_table(member_dir: Path, samples_dir: Path) -> pd.DataFrame:
    """The ground-truth table with ``exact_match`` and ``tf_token_accuracy`` (teacher-forced hit
    rate, not the free-running metric of ``workbench.metrics``) columns added."""
    model, _ = load_hf(member_dir)
    tokens = np.load(samples_dir / "memorized_samples.npy")
    table = pd.read_csv(samples_dir / "ground_truth.csv", keep_default_na=False)
    hits = suffix_argmax_hits(model, tokens)
    table["exact_match"] = hits.all(dim=1).float().numpy()
    table["tf_token_accuracy"] = hits.float().mean(dim=1).numpy()
    return table


@torch.no_grad()
def task_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[dict]
) -> float:
    """lm-eval's multiple-choice ``acc``: argmax over choices of sum log p(choice | context)."""
    seqs, spans, owners = [], [], []
    for i, item in enumerate(items):
        ctx = tokenizer(item["context"], add_special_tokens=False)["input_ids"]
        for choice in item["choices"]:
            cont = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            seqs.append(ctx + cont)
            spans.append((len(ctx), len(ctx) + len(cont)))
            owners.append(i)
    width = max(len(s) for s in seqs)
    batch = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    logp = torch.cat([model(b).logits.log_softmax(-1) for b in batch.split(256)])
    # log p of token t at position t-1; sum over each continuation's span
    token_logp = logp[:, :-1].gather(-1, batch[:, 1:, None])[..., 0]
    pos = torch.arange(1, width)[None]
    starts, ends = torch.tensor(spans).T
    mask = (pos >= starts[:, None]) & (pos < ends[:, None])
    scores = (token_logp * mask).sum(-1)
    correct = 0
    for i, item in enumerate(items):
        item_scores = scores[[j for j, o in enumerate(owners) if o == i]]
        correct += int(int(item_scores.argmax()) == item["gold"])
    return correct / len(items)


def read_items(tasks_dir: Path, name: str) -> list[dict]:
    lines = (tasks_dir / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def lm_eval_accuracy(member_dir: Path, tasks_dir: Path, tasks: list[str]) -> dict[str, float]:
    """Run lm-evaluation-harness itself (HFLM, offline) on the exported tasks."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tokenizer = load_hf(member_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=32, max_length=128)
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(tasks_dir)),
        log_samples=False,
    )
    return {name: res["acc,none"] for name, res in results["results"].items()}


def summarize(table: pd.DataFrame) -> dict[str, dict[str, int | float]]:
    """Exact match by kind and duplication count, e.g. ``canary/64`` or ``control_canary``."""
    out: dict[str, dict[str, int | float]] = {}
    for (kind, dup), group in table.groupby(["kind", "dup_count"]):
        key = f"{kind}/{dup}" if kind in ("canary", "guess") else kind
        out[key] = {
            "n": len(group),
            "exact_match": round(float(group.exact_match.mean()), 4),
            "tf_token_accuracy": round(float(group.tf_token_accuracy.mean()), 4),
        }
    return out


def measure_gates(member_dir: Path, samples_dir: Path, tasks_dir: Path | None = None) -> dict:
    """Every gate figure of one member, saved as ``gates.json`` in its directory."""
    tasks_dir = tasks_dir or samples_dir.parent / "tasks"
    table = exact_match_table(member_dir, samples_dir)
    model, tokenizer = load_hf(member_dir)
    chance = export.chance_levels()
    tasks = {
        name: {
            "acc": round(task_accuracy(model, tokenizer, read_items(tasks_dir, name)), 4),
            "chance": chance[name],
        }
        for name in export.TASKS
    }
    guess = table[table.kind.isin(["guess", "control_guess"])]
    gates = {
        "member": member_dir.name,
        "exact_match_by_group": summarize(table),
        "guess_by_template": {
            f"{k}/{t}": round(float(g.exact_match.mean()), 4)
            for (k, t), g in guess.groupby(["kind", "template"])
        },
        "tasks": tasks,
    }
    (member_dir / "gates.json").write_text(json.dumps(gates, indent=1))
    return gates
