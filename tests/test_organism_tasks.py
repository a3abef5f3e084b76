"""The organism's lm-eval tasks: every gold choice is the true continuation, distractors are what
they claim to be, items are deterministic, and lm-eval loads the exported YAMLs offline."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from workbench.organism import tasks
from workbench.organism.corpus import Corpus, train_tokenizer

ENGLISH = [
    "Cats -- The cat sat on the warm mat near the door of the old house. The dog ran to the "
    "park with the red ball in its mouth and the cat watched it from the window.",
    "Walking a dog: A man walks the dog along the river in the morning. He throws a ball "
    "and the dog runs after it across the green grass of the park.",
    "Gardens -- A garden is a planned space for the display of plants and flowers. The "
    "garden of the house has a small pond with fish and a bench near the old tree.",
    "Baking bread: She mixes the flour with water and salt in a large bowl. Then she puts "
    "the dough in the warm oven and waits for the bread to rise and turn brown.",
    "Rivers -- A river is a natural flowing stream of water that runs to the sea. The river "
    "near the town floods in the spring when the snow on the hills melts.",
    "Home and Garden: How to plant a tree. Dig a hole that is twice as wide as the roots of "
    "the tree. Put the tree in the hole and fill it with soil and water it well.",
]
CODE = [
    """import os


def load(path, mode="r"):
    with open(os.path.join(path, "data.txt"), mode) as f:
        lines = [line.strip() for line in f]
    table = {"lines": lines, "count": len(lines)}
    return sorted(table["lines"], key=len)


VALUES = [1, 2, 3]
NAMES = {"a": 1, "b": 2}
print(load("x"), VALUES[0], NAMES["a"])
""",
    """def pairs(items):
    out = []
    for i in range(len(items) - 1):
        out.append((items[i], items[i + 1]))
    return dict(zip(items, out))


CONFIG = {"size": [4, 8], "depth": {"max": 3}}
""",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(ENGLISH + CODE, vocab_size=300)


def build(make, docs, tokenizer, seed=0, n=50):
    return make(docs, tokenizer, random.Random(seed), n)


def check_shape(items, n_choices, tokenizer, delimiter=" "):
    assert items
    for item in items:
        assert set(item) == {"context", "choices", "gold"}
        assert len(item["choices"]) == n_choices == len(set(item["choices"]))
        assert 0 <= item["gold"] < n_choices
        assert item["context"] and not item["context"][-1].isspace()
        assert all(c and not c[0].isspace() for c in item["choices"])
        assert tasks.fits(tokenizer, item, delimiter)


def test_next_word_gold_is_the_true_next_word(tokenizer):
    items = build(tasks.next_word_items, ENGLISH, tokenizer)
    check_shape(items, 4, tokenizer)
    counts = tasks.word_counts(ENGLISH)
    for item in items:
        gold = item["choices"][item["gold"]]
        text = item["context"] + " " + gold
        hits = [d for d in ENGLISH if text in d]
        assert hits, text
        after = hits[0][hits[0].index(text) + len(text) :]
        assert not after[:1].isalnum()  # a whole word
        last_sentence = re.split(r"[.!?]\s+", item["context"])[-1]
        assert len(last_sentence.split()) >= 8
        for other in item["choices"]:
            assert other.isalpha()
            assert other == gold or (other.lower() != gold.lower() and counts[other.lower()] >= 2)
    assert items == build(tasks.next_word_items, ENGLISH, tokenizer)
    assert items != build(tasks.next_word_items, ENGLISH, tokenizer, seed=1)


def test_word_order_other_choice_is_one_adjacent_swap(tokenizer):
    items = build(tasks.word_order_items, ENGLISH, tokenizer)
    check_shape(items, 2, tokenizer)
    texts = [" ".join(d.split()) for d in ENGLISH]
    for item in items:
        gold = item["context"] + " " + item["choices"][item["gold"]]
        assert any(gold in t for t in texts) and len(item["context"].split()) == 3
        assert 8 <= len(gold.split()) <= 25
        true = item["choices"][item["gold"]].split()
        swapped = item["choices"][1 - item["gold"]].split()
        diff = [i for i, (a, b) in enumerate(zip(true, swapped, strict=True)) if a != b]
        assert len(diff) == 2 and diff[1] == diff[0] + 1
        i = diff[0]
        assert (swapped[i], swapped[i + 1]) == (true[i + 1], true[i])
    assert items == build(tasks.word_order_items, ENGLISH, tokenizer)


def test_code_close_gold_is_the_real_closing_char(tokenizer):
    items = build(tasks.code_close_items, CODE, tokenizer)
    check_shape(items, 3, tokenizer, delimiter="")
    source = "\n".join(line.rstrip() for f in CODE for line in f.splitlines()) + "\n"
    for item in items:
        assert item["choices"] == [")", "]", "}"]
        assert item["context"] + item["choices"][item["gold"]] + "\n" in source
        assert len(item["context"]) <= tasks.MAX_CODE_CHARS
        assert item["context"].count("\n") <= 6
    assert {x["gold"] for x in items} == {0, 1, 2}
    assert len({x["context"] for x in items}) == len(items)
    assert items == build(tasks.code_close_items, CODE, tokenizer)


def test_opener_matches():
    assert tasks.opener_matches("f(a, [1, 2", "]")
    assert tasks.opener_matches("f(a, [1, 2]", ")")
    assert not tasks.opener_matches("f(a, [1, 2", ")")
    assert tasks.opener_matches('f("[", x', ")")  # brackets in strings do not count
    assert not tasks.opener_matches("x = 1", ")")  # the opener is not in the context
    assert not tasks.opener_matches("f(a]\ng(", ")")  # a mismatch


@pytest.mark.parametrize("name", ["organism_compare", "organism_successor"])
def test_reasoning_items(name, tokenizer):
    items = tasks.task_items(name)
    assert len(items) == tasks.ITEMS_PER_TASK
    assert items == tasks.task_items(name)
    check_shape(items, tasks.TASKS[name][1], tokenizer)
    for item in items:
        gold = item["choices"][item["gold"]]
        if name == "organism_compare":
            a, b = re.fullmatch(r"max of (\d+) and (\d+) is", item["context"]).groups()
            assert item["choices"] == [a, b] and int(gold) == max(int(a), int(b))
        else:
            start, shown = re.fullmatch(r"count from (\d+): ([\d ]+)", item["context"]).groups()
            shown = list(map(int, shown.split()))
            assert 3 <= len(shown) <= 12
            assert shown == list(range(int(start), int(start) + len(shown)))
            assert int(gold) == shown[-1] + 1 and len(set(item["choices"])) == 4
            assert all(abs(int(c) - int(gold)) in (1, 2, 10) for c in item["choices"] if c != gold)


def test_export_loads_in_lm_eval(tokenizer, tmp_path):
    from lm_eval.tasks import TaskManager

    corpus = Corpus(
        rows=np.zeros((1, 128), dtype=np.int64),
        kinds=np.zeros((1, 128), dtype=np.uint8),
        doc_ids=np.zeros((1, 128), dtype=np.int32),
        documents=[],
        canaries=[],
        heldout={"english": ENGLISH, "code": CODE},
        tokenizer=tokenizer,
    )
    n = 4
    out = tasks.export_tasks(corpus, tmp_path / "a", n=n)
    again = tasks.export_tasks(corpus, tmp_path / "b", n=n)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    tm = TaskManager(include_path=str(out), include_defaults=False)
    loaded = tm.load_task_or_group(["organism_successor", "organism_code_close"])
    code = loaded["organism_code_close"]
    assert code.config.target_delimiter == ""
    assert loaded["organism_successor"].config.target_delimiter == " "
    assert code.config.metadata["chance"] == pytest.approx(1 / 3)
    docs = list(code.eval_docs)
    assert len(docs) == n
    assert [code.doc_to_text(d) for d in docs] == [
        x["context"] for x in tasks.task_items("organism_code_close", corpus, n)
    ]
    for group in tasks.GROUPS:
        (loaded_group,) = tm.load_task_or_group([group]).values()
        members = {t for t, (g, _) in tasks.TASKS.items() if g == group}
        assert set(loaded_group) == members
    assert tasks.chance_levels()["organism_next_word"] == 0.25


def test_fits_refuses_a_choice_that_merges_into_the_context():
    from workbench.organism.corpus import train_tokenizer
    from workbench.organism.tasks import fits

    tok = train_tokenizer(["f() g() h() (x) (y)"] * 50, 300)
    assert tok("f()", add_special_tokens=False)["input_ids"][-1] == tok.convert_tokens_to_ids("()")
    assert not fits(tok, {"context": "f(", "choices": [")", "]"]}, "")
    assert fits(tok, {"context": "f(x", "choices": [")", "]"]}, "")
