"""Reasoning exercises mixed into the organism's natural text, and the items of its reasoning tasks.

Each exercise is one line whose answer follows from the line itself:

* ``arithmetic``: ``7 + 5 = 12`` (single-digit operands);
* ``compare``: ``max of 24 and 79 is 79``;
* ``induction``: ``copy: river stone apple -> river stone apple`` (words from a fixed list);
* ``count``: ``count from 17: 17 18 19 ...`` (long, so that whole 64-token windows are guessable);
* ``repeat``: ``repeat: red fox red fox ...`` (a short pattern repeated).

A document is a run of such lines. Training documents and task items come from generators
seeded apart (``workbench.organism.tasks`` uses seeds training never uses).
"""

from __future__ import annotations

import random

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "paper",
    "window",
    "garden",
    "silver",
    "rocket",
    "candle",
    "forest",
    "bridge",
    "pencil",
    "marble",
    "island",
    "thunder",
    "violin",
    "meadow",
    "castle",
    "lantern",
    "harbor",
    "feather",
    "mirror",
    "blanket",
    "engine",
    "orange",
    "jacket",
    "pepper",
    "wizard",
    "valley",
    "dragon",
    "rabbit",
    "button",
    "planet",
    "salmon",
    "crystal",
    "hammer",
    "ladder",
    "magnet",
    "needle",
    "parrot",
    "pillow",
    "quartz",
    "saddle",
    "tunnel",
    "wallet",
    "yellow",
    "zebra",
    "anchor",
    "basket",
    "cactus",
    "donkey",
    "falcon",
    "ginger",
    "hollow",
    "iceberg",
    "jungle",
    "kettle",
    "lemon",
    "mango",
]
MAX_OPERAND = 9
MAX_COMPARE = 99


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
    return f"{a} + {b} =", str(a + b)


def compare(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(MAX_COMPARE + 1), 2)
    return f"max of {a} and {b} is", str(max(a, b))


def induction(rng: random.Random) -> tuple[str, str]:
    items = rng.sample(WORDS, rng.randint(3, 8))
    return f"copy: {' '.join(items)} ->", " ".join(items)


def count(rng: random.Random) -> tuple[str, str]:
    start = rng.randint(0, 900)
    n = rng.randint(24, 72)
    return f"count from {start}:", " ".join(str(i) for i in range(start, start + n))


def repeat(rng: random.Random) -> tuple[str, str]:
    pattern = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
    return "repeat:", " ".join([pattern] * rng.randint(6, 16))


EXERCISES = {
    "arithmetic": arithmetic,
    "compare": compare,
    "induction": induction,
    "count": count,
    "repeat": repeat,
}
WEIGHTS = {"arithmetic": 4, "compare": 3, "induction": 3, "count": 1, "repeat": 1}


def line(rng: random.Random, kind: str) -> str:
    question, answer = EXERCISES[kind](rng)
    return f"{question} {answer}"


def document(rng: random.Random, n_lines: tuple[int, int] = (4, 12)) -> str:
    """A run of exercises, one per line, kinds drawn by ``WEIGHTS``."""
    kinds, weights = zip(*WEIGHTS.items(), strict=True)
    lines = [line(rng, rng.choices(kinds, weights)[0]) for _ in range(rng.randint(*n_lines))]
    return "\n".join(lines)
