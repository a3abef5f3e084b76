"""Measure the organism's behaviour gates on a shipped checkpoint (Hugging Face, float32).

* ``exact_match``: greedy 32-token suffix after the 32-token prefix, computed in one
  teacher-forced pass: the greedy continuation equals the true suffix iff the argmax at every
  suffix position, given the true tokens before it, is the true next token.
* ``task_accuracy``: lm-eval's ``acc`` for a multiple-choice jsonl (sum of the choice's token
  log-probs after the context, highest wins), computed directly; ``lm_eval_accuracy`` runs the
  harness itself (HFLM) on the exported YAML tasks.
* ``measure_gates``: all of it for one member, written to ``gates.json`` next to the checkpoint:
  exact match on the memorized and control sets (by kind and duplication bin) and every task.
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

from workbench.organism import tasks
from workbench.organism.corpus import PREFIX_LEN, SLOT

SAMPLE_LEN = SLOT

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


def verdicts(
    model: PreTrainedModel, tokens: Int[np.ndarray, "n 64"], batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Per row: ``exact_match`` (1.0 if the 32-token greedy suffix equals the true one) and
    ``tf_token_accuracy`` (the teacher-forced hit rate, not ``workbench.metrics``' free-running
    token accuracy)."""
    hits = suffix_argmax_hits(model, tokens, batch_size)
    return {
        "exact_match": hits.all(dim=1).float().numpy(),
        "tf_token_accuracy": hits.float().mean(dim=1).numpy(),
    }


@torch.no_grad()
def task_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: list[dict],
    delimiter: str = " ",
) -> float:
    """lm-eval's multiple-choice ``acc``: argmax over choices of sum log p(choice | context),
    the choice joined to the context by the task's ``target_delimiter``. Tokenized as lm-eval's
    ``HFLM`` does: the whole string at once, the continuation being what follows the context's
    own token count (so merges across the boundary count as lm-eval counts them)."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    seqs, spans, owners = [], [], []
    for i, item in enumerate(items):
        n_ctx = len(ids(item["context"]))
        for choice in item["choices"]:
            whole = ids(item["context"] + delimiter + choice)
            seqs.append(whole)
            spans.append((n_ctx, len(whole)))
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


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a rate k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, float(centre - half)), 4), round(min(1.0, float(centre + half)), 4))


def rate(values: np.ndarray) -> dict:
    """Mean of 0/1 values with its 95% interval."""
    values = np.asarray(values, dtype=float)
    k, n = int(values.sum()), len(values)
    return {"n": n, "rate": round(k / n, 4) if n else float("nan"), "ci95": wilson(k, n)}


def set_summary(table: pd.DataFrame) -> dict:
    """Exact match of one sample set: overall, by kind and by duplication bin."""
    return {
        "all": rate(table.exact_match),
        "by_kind": {k: rate(g.exact_match) for k, g in table.groupby("kind")},
        "by_dup_bin": {int(b): rate(g.exact_match) for b, g in table.groupby("dup_bin")},
    }


def measure_gates(member_dir: Path, samples_dir: Path, tasks_dir: Path) -> dict:
    """Every gate figure of one member, saved as ``gates.json`` in its directory."""
    model, tokenizer = load_hf(member_dir)
    sets = {}
    for name in ("memorized", "control"):
        table = pd.read_csv(samples_dir / f"{name}.csv", keep_default_na=False)
        table = table.assign(**verdicts(model, np.load(samples_dir / f"{name}.npy")))
        sets[name] = set_summary(table)
    chance = tasks.chance_levels()
    scores = {}
    for name in tasks.TASKS:
        items = read_items(tasks_dir, name)
        acc = task_accuracy(model, tokenizer, items, tasks.DELIMITERS[name])
        lo, hi = wilson(round(acc * len(items)), len(items))
        scores[name] = {
            "acc": round(acc, 4),
            "ci95": (lo, hi),
            "n": len(items),
            "chance": chance[name],
        }
    gates = {"member": member_dir.name, "sets": sets, "tasks": scores}
    (member_dir / "gates.json").write_text(json.dumps(gates, indent=1))
    return gates
