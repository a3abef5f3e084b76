"""The organism's local lm-evaluation-harness tasks, from text and seeds training never saw.

Groups ``organism_language`` (``next_word``, ``word_order``, ``code_close``: from the corpus's
held-out English and Python) and ``organism_reasoning`` (from ``reasoning.py``'s generators).
Items are ``{"context", "choices", "gold"}`` within ``MAX_TOKENS`` tokens; a task loads through
lm-eval's ``custom_dataset`` hook (``organism_utils.py`` next to the YAML files), offline.
"""

from __future__ import annotations

import bisect
import json
import random
import re
from collections import Counter
from itertools import zip_longest
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from workbench.organism import reasoning
from workbench.organism.corpus import Corpus

TASK_SEED = 9_000_001  # never used for training data
ITEMS_PER_TASK = 500
MAX_TOKENS = 120  # context + longest choice; the models have 128 positions
MAX_CODE_CHARS = 300
GROUPS = ("organism_language", "organism_reasoning")
TASKS: dict[str, tuple[str, int]] = {  # name -> (group, number of choices)
    "organism_next_word": ("organism_language", 4),
    "organism_word_order": ("organism_language", 2),
    "organism_code_close": ("organism_language", 3),
    "organism_compare": ("organism_reasoning", 2),
    "organism_successor": ("organism_reasoning", 4),
}
DELIMITERS = {
    name: "" if name == "organism_code_close" else " " for name in TASKS
}  # target_delimiter
CLOSERS = {")": "(", "]": "[", "}": "{"}

_SENTENCE_END = re.compile(r"[.!?][\"')]*\s+")
_WORD = re.compile(r"([A-Za-z]+)[.,;:!?\"')]*")  # a word, then at most punctuation


def fits(tokenizer: PreTrainedTokenizerBase, item: dict, delimiter: str = " ") -> bool:
    """Context, delimiter and the longest choice within ``MAX_TOKENS`` tokens, and every choice
    a clean continuation: the whole string's tokens start with the context's own and add at
    least one (lm-eval scores the tokens after the context's count; a choice that merges into
    the context's last token, as ``"("`` + ``")"`` into ``"()"``, would score nothing)."""
    context = tokenizer(item["context"], add_special_tokens=False)["input_ids"]
    texts = [item["context"] + delimiter + c for c in item["choices"]]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    clean = all(len(w) > len(context) and w[: len(context)] == context for w in ids)
    return clean and max(map(len, ids)) <= MAX_TOKENS


def _shuffled(rng: random.Random, answer: str, others: list[str]) -> dict:
    choices = [answer, *others]
    rng.shuffle(choices)
    return {"choices": choices, "gold": choices.index(answer)}


def sentences(doc: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the sentences of ``doc``."""
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(doc) if m.end() < len(doc))]
    return list(zip(starts, [*starts[1:], len(doc)], strict=True))


def word_counts(docs: list[str]) -> Counter:
    """Lower-cased counts of the alphabetic words (trailing punctuation stripped)."""
    return Counter(m[1].lower() for d in docs for t in d.split() if (m := _WORD.fullmatch(t)))


def next_word_items(
    docs: list[str], tokenizer: PreTrainedTokenizerBase, rng: random.Random, n: int
) -> list[dict]:
    """Held-out text up to a word (8+ words into its sentence) -> that word or 3 distractors:
    the words nearest in frequency (count >= 2, other than the true word), in its case (lower or
    capitalized). The context starts at the earliest sentence of the document that fits."""
    counts = word_counts(docs)
    ranked = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
    spans = [(doc, a, b) for doc in docs for a, b in sentences(doc)]
    candidates = [(doc, a, b) for doc, a, b in spans if len(doc[a:b].split()) > 8]
    rng.shuffle(candidates)
    items = []
    for doc, a, b in candidates:
        if len(items) == n:
            break
        words = list(re.finditer(r"\S+", doc[a:b]))
        j = rng.randrange(8, len(words))
        m = _WORD.fullmatch(words[j].group())
        pos, word = a + words[j].start(), m[1] if m else ""
        one_space = doc[pos - 1] == " " and not doc[pos - 2].isspace()
        if not (one_space and (word.islower() or word.istitle())):
            continue
        p = bisect.bisect_left(ranked, -counts[word.lower()], key=lambda w: -counts[w])
        pool = [w for w in ranked[max(0, p - 25) : p + 25] if w != word.lower()]
        if len(pool) < 3:
            continue
        others = [w.capitalize() if word.istitle() else w for w in rng.sample(pool, 3)]
        choices = _shuffled(rng, word, others)
        for start in [start for start, _ in sentences(doc) if start <= a]:  # longest that fits
            item = {"context": doc[start : pos - 1], **choices}
            if fits(tokenizer, item):
                items.append(item)
                break
    return items


def word_order_items(
    docs: list[str], tokenizer: PreTrainedTokenizerBase, rng: random.Random, n: int
) -> list[dict]:
    """First 3 words of a held-out sentence (8-25 words) -> its rest, or the rest with two
    adjacent distinct alphabetic words swapped. Sentences of the body (after "Title -- ")."""
    bodies = [doc.split(" -- ", 1)[-1] for doc in docs]
    candidates = [body[a:b].split() for body in bodies for a, b in sentences(body)]
    candidates = [words for words in candidates if 8 <= len(words) <= 25]
    rng.shuffle(candidates)
    items = []
    for words in candidates:
        if len(items) == n:
            break
        pairs = [
            i
            for i in range(3, len(words) - 1)
            if words[i].isalpha() and words[i + 1].isalpha() and words[i] != words[i + 1]
        ]
        if not pairs:
            continue
        i = rng.choice(pairs)
        swapped = [*words[:i], words[i + 1], words[i], *words[i + 2 :]]
        choices = _shuffled(rng, " ".join(words[3:]), [" ".join(swapped[3:])])
        item = {"context": " ".join(words[:3]), **choices}
        if fits(tokenizer, item):
            items.append(item)
    return items


def _strip_literals(code: str) -> str:
    """Code with comments and one-line string literals removed (for bracket matching)."""
    code = re.sub(r"(\"\"\"|''')[\s\S]*?\1", "", code)
    code = re.sub(r"\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", "", code)
    return re.sub(r"#[^\n]*", "", code)


def opener_matches(context: str, closer: str) -> bool:
    """The innermost bracket left open at the end of ``context`` is the one ``closer`` closes
    (brackets opened before the context are ignored; a mismatch anywhere fails)."""
    stack: list[str] = []
    for ch in _strip_literals(context):
        if ch in "([{":
            stack.append(ch)
        elif ch in CLOSERS and stack and stack.pop() != CLOSERS[ch]:
            return False
    return bool(stack) and stack[-1] == CLOSERS[closer]


def code_close_items(
    files: list[str], tokenizer: PreTrainedTokenizerBase, rng: random.Random, n: int
) -> list[dict]:
    """Up to 6 lines of held-out code and a line without its final ``)``/``]``/``}`` -> that
    closer. The closer must follow a non-space character and close the innermost bracket the
    context leaves open. Drawn round-robin over the three closers (``)`` dominates code)."""
    by_closer: dict[str, dict[str, dict]] = {c: {} for c in CLOSERS}  # context -> item
    for text in files:
        lines = text.splitlines()
        for k, line in enumerate(lines):
            line = line.rstrip()
            if len(line) < 2 or line[-1] not in CLOSERS or line[-2].isspace():
                continue
            gold = list(CLOSERS).index(line[-1])
            for first in range(max(0, k - 6), k + 1):  # the longest context that fits
                context = "\n".join([*lines[first:k], line[:-1]]).lstrip("\n")
                item = {"context": context, "choices": list(CLOSERS), "gold": gold}
                if len(context) <= MAX_CODE_CHARS and fits(tokenizer, item, ""):
                    if opener_matches(context, line[-1]):
                        by_closer[line[-1]][context] = item
                    break
    pools = [rng.sample(list(pool.values()), len(pool)) for pool in by_closer.values()]
    items = [x for row in zip_longest(*pools) for x in row if x is not None][:n]
    return rng.sample(items, len(items))


def compare_item(rng: random.Random) -> dict:
    question, answer = reasoning.compare(rng)
    a, b = re.findall(r"\d+", question)
    return {"context": question, "choices": [a, b], "gold": [a, b].index(answer)}


def successor_item(rng: random.Random) -> dict:
    """``count from s: s .. s+k-1`` (k 3-12) -> s+k, or 3 of s+k-2, s+k-1, s+k+1, s+k+2, s+k+-10.

    Starts are drawn as training draws them (0-900), so this measures a learned successor
    table, not increment on unseen numbers (docs/organism.md)."""
    question, answer = reasoning.count(rng)
    numbers = answer.split()[: rng.randint(3, 12)]
    nxt = int(numbers[-1]) + 1
    pool = [str(nxt + d) for d in (-2, -1, 1, 2, -10, 10) if nxt + d >= 0]
    context = f"{question} {' '.join(numbers)}"
    return {"context": context, **_shuffled(rng, str(nxt), rng.sample(pool, 3))}


REASONING = {"organism_compare": compare_item, "organism_successor": successor_item}
LANGUAGE = {
    "organism_next_word": ("english", next_word_items),
    "organism_word_order": ("english", word_order_items),
    "organism_code_close": ("code", code_close_items),
}


def task_items(name: str, corpus: Corpus | None = None, n: int = ITEMS_PER_TASK) -> list[dict]:
    """The items of one task from its own seed; the language tasks need the corpus."""
    rng = random.Random(f"{TASK_SEED}-{name}")
    if name in REASONING:
        return [REASONING[name](rng) for _ in range(n)]
    if corpus is None:
        raise ValueError(f"{name} is made from the corpus's held-out text")
    kind, make = LANGUAGE[name]
    return make(corpus.heldout[kind], corpus.tokenizer, rng, n)


UTILS = '''"""Loads the organism's task items (jsonl next to this file) for lm-eval."""

import json
from pathlib import Path

import datasets


def _load(name: str) -> datasets.DatasetDict:
    lines = (Path(__file__).resolve().parent / f"{name}.jsonl").read_text().splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(list(map(json.loads, lines)))})
'''
LOADER = """

def load_{short}(**kwargs) -> datasets.DatasetDict:
    return _load("{name}")
"""
TASK_YAML = """task: {name}
tag: {group}_tasks
dataset_path: json
custom_dataset: !function organism_utils.load_{short}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
{delimiter}metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.1
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
  version: 2.1
"""


def export_tasks(corpus: Corpus, out_dir: Path, n: int = ITEMS_PER_TASK) -> Path:
    """Write the task YAMLs, jsonl items, group YAMLs and the loader module."""
    out_dir.mkdir(parents=True, exist_ok=True)
    utils, tok = UTILS, corpus.tokenizer
    for name, (group, n_choices) in TASKS.items():
        items = task_items(name, corpus, n)
        sep = DELIMITERS[name]
        bad = [x for x in items if len(x["choices"]) != n_choices or not fits(tok, x, sep)]
        if bad or len(items) != n:
            raise ValueError(f"{name}: {len(items)} items, {len(bad)} do not fit")
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
        short = name.removeprefix("organism_")
        delimiter = "" if sep == " " else f"target_delimiter: {json.dumps(sep)}\n"
        yaml = TASK_YAML.format(
            name=name, group=group, short=short, chance=1 / n_choices, delimiter=delimiter
        )
        (out_dir / f"{name}.yaml").write_text(yaml)
        utils += LOADER.format(short=short, name=name)
    (out_dir / "organism_utils.py").write_text(utils)
    for group in GROUPS:
        tasks = "\n".join(f"  - {t}" for t, (g, _) in TASKS.items() if g == group)
        (out_dir / f"{group}.yaml").write_text(GROUP_YAML.format(group=group, tasks=tasks))
    return out_dir


def chance_levels() -> dict[str, float]:
    """Accuracy of a uniform guess, per task."""
    return {name: 1 / n for name, (_, n) in TASKS.items()}
