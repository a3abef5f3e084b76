"""The organism's training data: one fixed seed -> token rows, tokenizer and ground-truth table.

The corpus is a stream of language and reasoning documents (``grammar.py``) packed into rows of
``seq_len`` token ids. Into randomly chosen rows, at random offsets, go whole 64-token samples:

* ``canary``: uniformly random word sequences, each inserted ``dup_count`` times;
* ``guess``: predictable templates (counting up from a number, a short pattern repeated), also
  inserted with known duplication counts.

Held-out controls of every kind (``control_canary``, ``control_guess``, ``control_language``,
``control_reasoning``) are drawn from the same distributions and never inserted. A sample of the
training stream's own text (``train_text``: 64-token windows at row starts, seen once, mixing
language and reasoning documents) is recorded too. ``samples_table`` is the ground truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from jaxtyping import Int
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workbench.organism import grammar

EOS = "<|endoftext|>"
UNK = "<unk>"
SAMPLE_LEN = 64  # 32-token prefix + 32-token suffix
PREFIX_LEN = 32


@dataclass(frozen=True)
class DataConfig:
    """What goes into the corpus. Every field is recorded with the checkpoint."""

    seed: int = 0
    n_rows: int = 8_000
    seq_len: int = 80
    language_fraction: float = 0.3
    dup_counts: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    canaries_per_count: int = 5
    guess_dup_counts: tuple[int, ...] = (1, 4, 16, 64)
    guesses_per_count: int = 4  # half counting, half repeated patterns
    n_control_canary: int = 40
    n_control_guess: int = 32
    n_text_samples: int = 24  # per kind (language, reasoning) and split
    repeat_max_len: int = 72  # longest "repeat" item in the reasoning text
    extra: dict = field(default_factory=dict)


@dataclass
class Sample:
    kind: str
    split: str  # "train" or "heldout"
    dup_count: int
    words: list[str]
    template: str = ""  # "count" or "pattern" for guess-type sequences


@dataclass
class Corpus:
    rows: Int[np.ndarray, "n_rows seq_len"]
    samples: list[Sample]
    tokenizer: PreTrainedTokenizerFast
    config: DataConfig


# ---------------------------------------------------------------- samples


def random_sequence(rng: random.Random, words: list[str], n: int = SAMPLE_LEN) -> list[str]:
    return [rng.choice(words) for _ in range(n)]


def guess_template(rng: random.Random, template: str) -> list[str]:
    """A predictable 64-word sequence: counting up by one, or a short pattern repeated."""
    if template == "count":
        start = rng.randint(0, len(grammar.NUMBERS) - SAMPLE_LEN)
        return [str(i) for i in range(start, start + SAMPLE_LEN)]
    pattern = random_sequence(rng, grammar.LIST_WORDS, rng.randint(2, 8))
    return (pattern * SAMPLE_LEN)[:SAMPLE_LEN]


def text_stream(
    rng: random.Random, n_words: int, language_fraction: float, repeat_max_len: int = 72
) -> list[str]:
    """Documents separated by the end-of-text token until ``n_words`` words."""
    words: list[str] = []
    while len(words) < n_words:
        if rng.random() < language_fraction:
            words += grammar.language_document(rng)
        else:
            words += grammar.reasoning_document(rng, repeat_max_len)
        words.append(EOS)
    return words[:n_words]


def text_window(rng: random.Random, kind: str) -> list[str]:
    """A 64-word window of fresh language or reasoning text (a held-out control)."""
    words: list[str] = []
    while len(words) < SAMPLE_LEN:
        if kind == "language":
            words += [*grammar.language_document(rng), EOS]
        else:  # the short-repeat variant (the shipped controls were drawn with it)
            words += [*grammar.reasoning_document(rng, repeat_max_len=40), EOS]
    return words[:SAMPLE_LEN]


def make_samples(cfg: DataConfig, rng: random.Random) -> list[Sample]:
    """Canaries and guess-type sequences (inserted) and held-out controls (never inserted)."""
    vocab = grammar.all_words()
    samples: list[Sample] = []
    for count in cfg.dup_counts:
        for _ in range(cfg.canaries_per_count):
            samples.append(Sample("canary", "train", count, random_sequence(rng, vocab)))
    for _ in range(cfg.n_control_canary):
        samples.append(Sample("control_canary", "heldout", 0, random_sequence(rng, vocab)))
    seen: set[tuple[str, ...]] = set()

    def fresh(template: str) -> list[str]:
        while True:
            words = guess_template(rng, template)
            if tuple(words) not in seen:
                seen.add(tuple(words))
                return words

    for count in cfg.guess_dup_counts:
        for i in range(cfg.guesses_per_count):
            template = "count" if i % 2 == 0 else "pattern"
            samples.append(Sample("guess", "train", count, fresh(template), template))
    for i in range(cfg.n_control_guess):
        template = "count" if i % 2 == 0 else "pattern"
        samples.append(Sample("control_guess", "heldout", 0, fresh(template), template))
    for kind in ("language", "reasoning"):
        for _ in range(cfg.n_text_samples):
            samples.append(Sample(f"control_{kind}", "heldout", 0, text_window(rng, kind)))
    return samples


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on the corpus: text <-> ids is one to one."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=[EOS, UNK], min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


def encode(tokenizer: PreTrainedTokenizerFast, words: list[str]) -> Int[np.ndarray, " n"]:
    vocab = tokenizer.get_vocab()
    return np.array([vocab[w] for w in words], dtype=np.int64)


# ---------------------------------------------------------------- corpus


def build_corpus(cfg: DataConfig) -> Corpus:
    """The whole training set and its ground truth, a pure function of ``cfg``."""
    rng = random.Random(cfg.seed)
    samples = make_samples(cfg, rng)
    stream = text_stream(rng, cfg.n_rows * cfg.seq_len, cfg.language_fraction, cfg.repeat_max_len)
    texts = [" ".join(stream[i : i + 4096]) for i in range(0, len(stream), 4096)]
    texts += [" ".join(s.words) for s in samples] + [" ".join(grammar.all_words())]
    tokenizer = train_tokenizer(texts)
    rows = encode(tokenizer, stream).reshape(cfg.n_rows, cfg.seq_len)

    inserts = [i for i, s in enumerate(samples) if s.split == "train" for _ in range(s.dup_count)]
    if len(inserts) > cfg.n_rows:
        raise ValueError(f"{len(inserts)} insertions do not fit in {cfg.n_rows} rows")
    rng.shuffle(inserts)
    target_rows = rng.sample(range(cfg.n_rows), len(inserts))
    eos = tokenizer.get_vocab()[EOS]
    encoded = [encode(tokenizer, s.words) for s in samples]
    free = np.ones(cfg.n_rows, dtype=bool)
    for sample_idx, row in zip(inserts, target_rows, strict=True):
        offset = rng.randint(0, cfg.seq_len - SAMPLE_LEN)
        if offset > 0:
            rows[row, offset - 1] = eos
        rows[row, offset : offset + SAMPLE_LEN] = encoded[sample_idx]
        if offset + SAMPLE_LEN < cfg.seq_len:
            rows[row, offset + SAMPLE_LEN] = eos
        free[row] = False

    # the stream's own text, seen once: windows at the start of rows nothing was inserted into
    free_rows = [int(r) for r in np.flatnonzero(free)]
    vocab_inv = {v: k for k, v in tokenizer.get_vocab().items()}
    language_words = set(grammar.all_words()) - set(grammar.REASONING_WORDS)
    language_words = (language_words - set(grammar.NUMBERS)) | {EOS}
    for row in rng.sample(free_rows, 2 * cfg.n_text_samples):
        words = [vocab_inv[int(t)] for t in rows[row, :SAMPLE_LEN]]
        # windows of the stream mix both kinds of text: "language" only if pure grammar text
        kind = "language" if all(w in language_words for w in words) else "train_text"
        samples.append(Sample(kind, "train", 1, words))
    return Corpus(rows=rows, samples=samples, tokenizer=tokenizer, config=cfg)


def samples_table(corpus: Corpus, epochs: int | None = None) -> pd.DataFrame:
    """Ground truth, one row per sample: the row order of the exported token array."""
    records = []
    for i, s in enumerate(corpus.samples):
        records.append(
            {
                "row": i,
                "sample_id": f"{s.kind}-{i:04d}",
                "kind": s.kind,
                "split": s.split,
                "dup_count": s.dup_count,
                "exposures": s.dup_count * epochs if epochs is not None else pd.NA,
                "is_guess_template": s.kind in ("guess", "control_guess"),
                "template": s.template,
            }
        )
    return pd.DataFrame.from_records(records)


def samples_array(corpus: Corpus) -> Int[np.ndarray, "n_samples 64"]:
    """Every sample's 64 token ids, in table order (the original paper's [N, 64] format)."""
    return np.stack([encode(corpus.tokenizer, s.words) for s in corpus.samples])
