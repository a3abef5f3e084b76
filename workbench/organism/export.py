"""The organism's exports: the memorized-sample set and the local lm-evaluation-harness tasks.

* ``samples/memorized_samples.npy``: int64 ``[N, 64]`` token ids (32-token prefix + 32-token
  suffix, the original paper's format), one row per sample of ``data.samples_table``;
  ``samples/ground_truth.csv`` is that table, aligned row by row.
* ``tasks/``: one YAML + jsonl per task, items drawn from the generators with seeds training never
  used, and two groups, ``organism_language`` and ``organism_reasoning``. A task loads through
  lm-eval's ``custom_dataset`` hook (``organism_utils.py`` next to the YAML files), so nothing
  depends on the working directory or a network.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.organism import grammar
from workbench.organism.data import Corpus, samples_array, samples_table

TASK_SEED = 9_000_001  # never used for training data
ITEMS_PER_TASK = 200


def export_samples(corpus: Corpus, out_dir: Path) -> Path:
    """Write the [N, 64] token array, its ground-truth table and the data config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = samples_array(corpus)
    table = samples_table(corpus)
    table["prefix_text"] = [corpus.tokenizer.decode(t[:32]) for t in tokens]
    table["suffix_text"] = [corpus.tokenizer.decode(t[32:]) for t in tokens]
    np.save(out_dir / "memorized_samples.npy", tokens.astype(np.int64))
    table.drop(columns=["exposures"]).to_csv(out_dir / "ground_truth.csv", index=False)
    return out_dir / "memorized_samples.npy"


# ---------------------------------------------------------------- task items


def agreement_item(rng: random.Random) -> dict:
    """Subject with an attractor of the opposite number; choose the agreeing verb."""
    number = rng.choice(["sg", "pl"])
    other = "pl" if number == "sg" else "sg"
    words = grammar.noun_phrase(rng, number, rng.choice(grammar.AGENTS))
    other_np = grammar.noun_phrase(rng, other, rng.choice(grammar.AGENTS))
    if rng.random() < 0.5:  # "the dog near the cats"
        words += [rng.choice(grammar.PREPOSITIONS), *other_np]
    else:  # "the dog that the cats see"
        (v_sg, v_pl), _ = rng.choice([t for t in grammar.TRANSITIVE if t[1] is None])
        words += ["that", *other_np, v_sg if other == "sg" else v_pl]
    sg, pl = rng.choice(grammar.INTRANSITIVE + [pair for pair, _ in grammar.TRANSITIVE])
    return {"context": " ".join(words), "choices": [sg, pl], "gold": 0 if number == "sg" else 1}


def selection_item(rng: random.Random) -> dict:
    """``the man eats the`` -> a food, not a text, vehicle or animal."""
    number = rng.choice(["sg", "pl"])
    (v_sg, v_pl), category = rng.choice([t for t in grammar.TRANSITIVE if t[1] is not None])
    words = [
        *grammar.noun_phrase(rng, number, rng.choice(grammar.AGENTS)),
        v_sg if number == "sg" else v_pl,
        "the",
    ]
    obj_number = rng.choice([0, 1])
    cats = [category, *[c for c in ("food", "text", "vehicle", "animal") if c != category][:3]]
    choices = [rng.choice(grammar.NOUNS[c])[obj_number] for c in cats]
    order = list(range(4))
    rng.shuffle(order)
    return {
        "context": " ".join(words),
        "choices": [choices[i] for i in order],
        "gold": order.index(0),
    }


def arithmetic_item(rng: random.Random) -> dict:
    a = rng.randint(0, grammar.MAX_SUM_OPERAND)
    b = rng.randint(0, grammar.MAX_SUM_OPERAND)
    answer = a + b
    pool = [answer + d for d in (-3, -2, -1, 1, 2, 3) if answer + d >= 0]
    choices = [answer, *rng.sample(pool, 3)]
    rng.shuffle(choices)
    return {
        "context": f"{a} + {b} =",
        "choices": [str(c) for c in choices],
        "gold": choices.index(answer),
    }


def induction_item(rng: random.Random) -> dict:
    """Copy a list: the next word is the one after the same position in the original."""
    while True:
        items = rng.sample(grammar.LIST_WORDS, rng.randint(5, 10))
        shown = rng.randint(1, len(items) - 1)
        answer = items[shown]
        distractors = [w for w in items if w != answer]
        if len(distractors) >= 3:
            break
    choices = [answer, *rng.sample(distractors, 3)]
    rng.shuffle(choices)
    context = " ".join(["copy", *items, ":", *items[:shown]])
    return {"context": context, "choices": choices, "gold": choices.index(answer)}


def compare_item(rng: random.Random) -> dict:
    a, b = rng.sample(range(grammar.MAX_COMPARE + 1), 2)
    return {"context": f"max of {a} {b} is", "choices": [str(a), str(b)], "gold": 0 if a > b else 1}


# name -> (group, generator, number of choices)
TASKS: dict[str, tuple[str, Callable[[random.Random], dict], int]] = {
    "organism_agreement": ("organism_language", agreement_item, 2),
    "organism_selection": ("organism_language", selection_item, 4),
    "organism_arithmetic": ("organism_reasoning", arithmetic_item, 4),
    "organism_induction": ("organism_reasoning", induction_item, 4),
    "organism_compare": ("organism_reasoning", compare_item, 2),
}
GROUPS = ("organism_language", "organism_reasoning")

UTILS = '''"""Loads the organism's task items (jsonl next to this file) for lm-eval."""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def _load(name: str) -> datasets.DatasetDict:
    lines = (HERE / f"{name}.jsonl").read_text().splitlines()
    items = [json.loads(x) for x in lines]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(items)})

'''

TASK_YAML = """task: {name}
tag: {group}_tasks
dataset_path: json
custom_dataset: !function organism_utils.load_{short}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  chance: {chance}
"""

GROUP_YAML = """group: {group}
task:
{tasks}
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


def task_items(name: str, n: int = ITEMS_PER_TASK) -> list[dict]:
    """The held-out items of one task, from its own seed."""
    _, make, _ = TASKS[name]
    rng = random.Random(f"{TASK_SEED}-{name}")
    return [make(rng) for _ in range(n)]


def export_tasks(out_dir: Path) -> Path:
    """Write the task YAMLs, jsonl items, group YAMLs and the loader module."""
    out_dir.mkdir(parents=True, exist_ok=True)
    utils = UTILS
    for name, (group, _, n_choices) in TASKS.items():
        short = name.removeprefix("organism_")
        items = task_items(name)
        lines = "\n".join(json.dumps(x) for x in items) + "\n"
        (out_dir / f"{name}.jsonl").write_text(lines)
        yaml = TASK_YAML.format(name=name, group=group, short=short, chance=1 / n_choices)
        (out_dir / f"{name}.yaml").write_text(yaml)
        utils += (
            f"\ndef load_{short}(**kwargs) -> datasets.DatasetDict:\n    return _load({name!r})\n\n"
        )
    (out_dir / "organism_utils.py").write_text(utils.rstrip() + "\n")
    for group in GROUPS:
        tasks = "\n".join(f"  - {n}" for n, (g, _, _) in TASKS.items() if g == group)
        (out_dir / f"{group}.yaml").write_text(GROUP_YAML.format(group=group, tasks=tasks))
    return out_dir


def chance_levels() -> dict[str, float]:
    return {name: 1 / n for name, (_, _, n) in TASKS.items()}
