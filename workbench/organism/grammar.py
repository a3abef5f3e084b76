"""The organism's language and reasoning generators: documents as lists of words.

Everything the organism reads is made of whitespace-separated words from the fixed lists below,
so the word-level tokenizer trained on it maps text to ids one to one. Each generator takes a
``random.Random`` and is deterministic given its state.

Language: a small English-like grammar with rules a model must learn to predict well:
subject-verb agreement across prepositional and relative-clause attractors, determiner-noun
agreement, and verb-object selection (``eats`` takes food, ``reads`` takes texts, ...).

Reasoning: items whose answer follows from the context: small sums, copying a list (induction),
the larger of two numbers, counting, and repeating a pattern.
"""

from __future__ import annotations

import random

# (singular, plural) per category; subjects are animals and people.
NOUNS: dict[str, list[tuple[str, str]]] = {
    "animal": [
        ("dog", "dogs"),
        ("cat", "cats"),
        ("bird", "birds"),
        ("horse", "horses"),
        ("fox", "foxes"),
        ("wolf", "wolves"),
        ("mouse", "mice"),
        ("goat", "goats"),
    ],
    "person": [
        ("man", "men"),
        ("woman", "women"),
        ("child", "children"),
        ("teacher", "teachers"),
        ("farmer", "farmers"),
        ("king", "kings"),
        ("queen", "queens"),
        ("baker", "bakers"),
    ],
    "food": [
        ("apple", "apples"),
        ("cake", "cakes"),
        ("egg", "eggs"),
        ("pear", "pears"),
        ("plum", "plums"),
        ("bun", "buns"),
    ],
    "text": [
        ("book", "books"),
        ("letter", "letters"),
        ("poem", "poems"),
        ("note", "notes"),
        ("map", "maps"),
        ("story", "stories"),
    ],
    "vehicle": [
        ("car", "cars"),
        ("boat", "boats"),
        ("cart", "carts"),
        ("train", "trains"),
        ("bike", "bikes"),
        ("ship", "ships"),
    ],
}
AGENTS = ("animal", "person")
# (3rd person singular, plural) forms.
INTRANSITIVE = [
    ("runs", "run"),
    ("sleeps", "sleep"),
    ("sings", "sing"),
    ("waits", "wait"),
    ("jumps", "jump"),
    ("smiles", "smile"),
]
# verb forms -> category of the object it selects (None: any noun)
TRANSITIVE: list[tuple[tuple[str, str], str | None]] = [
    (("eats", "eat"), "food"),
    (("bakes", "bake"), "food"),
    (("reads", "read"), "text"),
    (("writes", "write"), "text"),
    (("drives", "drive"), "vehicle"),
    (("rides", "ride"), "vehicle"),
    (("sees", "see"), None),
    (("likes", "like"), None),
]
ADJECTIVES = ["big", "small", "old", "young", "red", "green", "happy", "quiet"]
DETERMINERS = {"sg": ["the", "a", "this", "every"], "pl": ["the", "these", "some", "many"]}
PREPOSITIONS = ["near", "behind", "with", "under"]
FUNCTION_WORDS = ["that", "and", "."]
REASONING_WORDS = ["+", "=", "copy", ":", "max", "of", "is", "count", "repeat", ";"]
NUMBERS = [str(i) for i in range(256)]
MAX_SUM_OPERAND = 9
MAX_COMPARE = 99
# words the copy/repeat/canary generators draw from (nouns and adjectives: no grammar symbols)
LIST_WORDS = sorted({w for cat in NOUNS.values() for pair in cat for w in pair} | set(ADJECTIVES))


def all_words() -> list[str]:
    """Every word the generators can emit, in a fixed order."""
    words: list[str] = []
    for cat in NOUNS.values():
        for pair in cat:
            words.extend(pair)
    for pair in INTRANSITIVE:
        words.extend(pair)
    for pair, _ in TRANSITIVE:
        words.extend(pair)
    words += ADJECTIVES + DETERMINERS["sg"] + DETERMINERS["pl"] + PREPOSITIONS
    words += FUNCTION_WORDS + REASONING_WORDS + NUMBERS
    return list(dict.fromkeys(words))


# ---------------------------------------------------------------- language


def noun_phrase(rng: random.Random, number: str, category: str) -> list[str]:
    """Determiner (agreeing), optional adjective, noun of ``category`` in ``number``."""
    words = [rng.choice(DETERMINERS[number])]
    if rng.random() < 0.3:
        words.append(rng.choice(ADJECTIVES))
    sg, pl = rng.choice(NOUNS[category])
    words.append(sg if number == "sg" else pl)
    return words


def subject(rng: random.Random, number: str, attractor: bool | None = None) -> list[str]:
    """A subject noun phrase, maybe followed by an attractor (PP or relative clause).

    The attractor's own noun takes the opposite number half of the time, so predicting the main
    verb needs the head noun, not the nearest one.
    """
    words = noun_phrase(rng, number, rng.choice(AGENTS))
    if attractor is None:
        attractor = rng.random() < 0.5
    if attractor:
        other = rng.choice(["sg", "pl"])
        kind = rng.random()
        if kind < 0.5:  # prepositional phrase: "near the cats"
            words += [rng.choice(PREPOSITIONS), *noun_phrase(rng, other, rng.choice(AGENTS))]
        elif kind < 0.75:  # subject relative clause: "that sees the cats"
            words += ["that", *verb_phrase(rng, number, depth=1)]
        else:  # object relative clause: "that the cats see"
            (v_sg, v_pl), _ = rng.choice([t for t in TRANSITIVE if t[1] is None])
            words += ["that", *noun_phrase(rng, other, rng.choice(AGENTS))]
            words.append(v_sg if other == "sg" else v_pl)
    return words


def verb_phrase(rng: random.Random, number: str, depth: int = 0) -> list[str]:
    """A verb agreeing with ``number``, with an object of the category the verb selects."""
    if rng.random() < 0.3:
        sg, pl = rng.choice(INTRANSITIVE)
        return [sg if number == "sg" else pl]
    (sg, pl), category = rng.choice(TRANSITIVE)
    if category is None:
        category = rng.choice(list(NOUNS))
    words = [sg if number == "sg" else pl]
    words += noun_phrase(rng, rng.choice(["sg", "pl"]), category)
    if depth == 0 and rng.random() < 0.2:
        words += [rng.choice(PREPOSITIONS), *noun_phrase(rng, "sg", rng.choice(list(NOUNS)))]
    return words


def sentence(rng: random.Random) -> list[str]:
    number = rng.choice(["sg", "pl"])
    words = subject(rng, number) + verb_phrase(rng, number)
    if rng.random() < 0.15:
        other = rng.choice(["sg", "pl"])
        words += ["and", *subject(rng, other, attractor=False), *verb_phrase(rng, other)]
    return [*words, "."]


def language_document(rng: random.Random) -> list[str]:
    """A few grammatical sentences."""
    words: list[str] = []
    for _ in range(rng.randint(2, 6)):
        words += sentence(rng)
    return words


# ---------------------------------------------------------------- reasoning


def sum_item(rng: random.Random) -> list[str]:
    a, b = rng.randint(0, MAX_SUM_OPERAND), rng.randint(0, MAX_SUM_OPERAND)
    return [str(a), "+", str(b), "=", str(a + b), ";"]


def copy_item(rng: random.Random) -> list[str]:
    items = [rng.choice(LIST_WORDS) for _ in range(rng.randint(4, 10))]
    return ["copy", *items, ":", *items, ";"]


def compare_item(rng: random.Random) -> list[str]:
    a, b = rng.sample(range(MAX_COMPARE + 1), 2)
    return ["max", "of", str(a), str(b), "is", str(max(a, b)), ";"]


def count_item(rng: random.Random) -> list[str]:
    length = rng.randint(8, 40)
    start = rng.randint(0, len(NUMBERS) - length)
    return ["count", *(str(i) for i in range(start, start + length)), ";"]


def repeat_item(rng: random.Random, max_len: int = 72) -> list[str]:
    """A 2-8-word pattern repeated at least three times, cut at a random length <= max_len.

    ``max_len <= 40`` is the short variant: whole repetitions only, at most 40 words.
    """
    pattern = [rng.choice(LIST_WORDS) for _ in range(rng.randint(2, 8))]
    if max_len <= 40:
        reps = rng.randint(3, max(3, 40 // len(pattern)))
        return ["repeat", *(pattern * reps), ";"]
    length = rng.randint(3 * len(pattern), max_len)
    return ["repeat", *(pattern * length)[:length], ";"]


REASONING_ITEMS = {
    "sum": sum_item,
    "copy": copy_item,
    "compare": compare_item,
    "count": count_item,
    "repeat": repeat_item,
}


def reasoning_document(rng: random.Random, repeat_max_len: int = 72) -> list[str]:
    """A few items of one reasoning kind."""
    kind = rng.choice(sorted(REASONING_ITEMS))
    make = REASONING_ITEMS[kind]
    words: list[str] = []
    for _ in range(rng.randint(2, 6)):
        words += make(rng, repeat_max_len) if kind == "repeat" else make(rng)
    return words
