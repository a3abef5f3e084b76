"""The organism's training stream: pinned natural text and code, reasoning lines, planted canaries.

``build_corpus(CorpusConfig())`` is a pure function of its config and the locked wheels
(``sources.py``): the same bytes on any machine. It

1. reads every document of the locked wheels, holds a seeded fraction of the English and code
   documents out (the language tasks are made from them; training never sees them), and takes
   the rest of the English up to ``english_chars``;
2. adds reasoning documents (``reasoning.py``) up to ``reasoning_fraction`` of the text;
3. trains a byte-level BPE tokenizer on the training text (``vocab_size`` entries);
4. tokenizes every document, shuffles the documents with the seed, and joins them with
   ``<|endoftext|>`` into one stream, cut into 64-token slots;
5. plants canaries: random token sequences and English passages from a pool held out of
   everything else, 64 tokens each, every copy a whole slot at a seeded random slot position,
   ``canary_bins`` copies each (planted tokens at most ``max_planted_fraction`` of the stream);
6. packs the stream into rows of ``seq_len`` tokens, the training order.

The ground truth comes with it: the document and kind of every token, and the canaries' copies.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Int
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workbench.organism import reasoning, sources

EOS = "<|endoftext|>"
PAD = "<|padding|>"
SLOT = 64  # one sample window: 32-token prefix + 32-token suffix
PREFIX_LEN = 32
KINDS = ("code", "licence", "docs", "english", "reasoning", "canary_random", "canary_text")
KIND_ID = {k: i for i, k in enumerate(KINDS)}
EOS_KIND = 255  # the separator token belongs to no document


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the stream; recorded with every checkpoint."""

    seed: int = 0
    vocab_size: int = 4096
    seq_len: int = 128
    code_bytes_per_package: int = 200_000
    english_chars: int = 8_500_000
    heldout_fraction: float = 0.03  # of English documents and of code files, for the tasks
    reasoning_fraction: float = 0.07  # of the training text, in characters
    # (copies, canaries) per duplication bin; half random, half text-like
    canary_bins: tuple[tuple[int, int], ...] = (
        (1, 50),
        (2, 50),
        (4, 50),
        (8, 40),
        (16, 24),
        (32, 12),
        (64, 6),
        (128, 2),
        (256, 2),
        (512, 1),
    )
    max_planted_fraction: float = 0.03

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + sources.LOCK.read_text()
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Corpus:
    rows: Int[np.ndarray, "n_rows seq_len"]
    kinds: np.ndarray  # uint8 [n_rows, seq_len]: KIND_ID of each token (EOS_KIND for separators)
    doc_ids: np.ndarray  # int32 [n_rows, seq_len]: index into ``documents`` (-1: EOS or canary)
    documents: list[dict]  # source, path, kind, tokens of every training document
    canaries: list[dict]  # canary_id, kind, copies, tokens, slots (slot index of each copy)
    heldout: dict[str, list[str]]  # "english" / "code": documents the stream never holds
    tokenizer: PreTrainedTokenizerFast
    config: CorpusConfig = field(default_factory=CorpusConfig)

    @property
    def n_tokens(self) -> int:
        return int(self.rows.size)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 / GPT-NeoX style) trained on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


def _split(rng: random.Random, items: list, fraction: float) -> tuple[list, list]:
    order = list(range(len(items)))
    rng.shuffle(order)
    k = round(len(items) * fraction)
    return [items[i] for i in order[k:]], [items[i] for i in order[:k]]


def select_documents(
    cfg: CorpusConfig, docs: list[sources.Document], rng: random.Random
) -> tuple[list[sources.Document], dict[str, list[str]], list[str]]:
    """Training documents, held-out task documents, and the canary passage pool."""
    english = [d for d in docs if d.kind == "english"]
    code = [d for d in docs if d.kind == "code"]
    other = [d for d in docs if d.kind not in ("english", "code")]
    english_train, english_held = _split(rng, english, cfg.heldout_fraction)
    code_train, code_held = _split(rng, code, cfg.heldout_fraction)
    n_canary = sum(n for _, n in cfg.canary_bins)
    canary_pool = [d.text for d in english_held[:n_canary]]
    english_held = english_held[n_canary:]
    taken, chars = [], 0
    for d in english_train:
        if chars >= cfg.english_chars:
            break
        taken.append(d)
        chars += len(d.text)
    train = other + code_train + taken
    heldout = {"english": [d.text for d in english_held], "code": [d.text for d in code_held]}
    return train, heldout, canary_pool


def reasoning_documents(cfg: CorpusConfig, n_chars: int, rng: random.Random) -> list[str]:
    target = cfg.reasoning_fraction / (1 - cfg.reasoning_fraction) * n_chars
    docs, chars = [], 0
    while chars < target:
        docs.append(reasoning.document(rng))
        chars += len(docs[-1])
    return docs


def make_canaries(
    cfg: CorpusConfig, tokenizer: PreTrainedTokenizerFast, pool: list[str], rng: random.Random
) -> list[dict]:
    """64-token canaries per bin, alternating random ids and the start of a held-out passage."""
    n_special = len(tokenizer.all_special_ids)
    canaries = []
    passages = iter(pool)
    for copies, n in cfg.canary_bins:
        for i in range(n):
            if i % 2 == 0:
                kind = "canary_random"
                tokens = [rng.randrange(n_special, len(tokenizer)) for _ in range(SLOT)]
            else:
                kind = "canary_text"
                tokens = []
                while len(tokens) < SLOT:  # a passage shorter than a slot: take the next one
                    tokens = tokenizer(next(passages), add_special_tokens=False)["input_ids"]
                tokens = tokens[:SLOT]
            canaries.append(
                {"canary_id": len(canaries), "kind": kind, "copies": copies, "tokens": tokens}
            )
    return canaries


def build_corpus(cfg: CorpusConfig = CorpusConfig(), directory: Path | None = None) -> Corpus:
    """The whole training stream and its ground truth, a pure function of ``cfg``."""
    rng = random.Random(cfg.seed)
    docs = sources.all_documents(directory, cfg.code_bytes_per_package)
    train_docs, heldout, canary_pool = select_documents(cfg, docs, rng)
    texts = [d.text for d in train_docs]
    reasoning_texts = reasoning_documents(cfg, sum(map(len, texts)), rng)
    records = [(d.source, d.path, d.kind, d.text) for d in train_docs]
    records += [
        ("reasoning", f"reasoning#{i}", "reasoning", t) for i, t in enumerate(reasoning_texts)
    ]
    tokenizer = train_tokenizer([r[3] for r in records], cfg.vocab_size)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    encoded = tokenizer([r[3] for r in records], add_special_tokens=False)["input_ids"]
    documents = [
        {"source": s, "path": p, "kind": k, "tokens": len(ids)}
        for (s, p, k, _), ids in zip(records, encoded, strict=True)
    ]
    order = list(range(len(records)))
    rng.shuffle(order)
    lengths = np.array([len(encoded[i]) + 1 for i in order])
    stream = np.empty(int(lengths.sum()), dtype=np.int64)
    doc_of = np.repeat(np.array(order, dtype=np.int32), lengths)
    kind_of = np.array([KIND_ID[records[i][2]] for i in order], dtype=np.uint8)
    kind_of = np.repeat(kind_of, lengths)
    pos = 0
    for i, n in zip(order, lengths, strict=True):
        stream[pos : pos + n - 1] = encoded[i]
        stream[pos + n - 1] = eos
        doc_of[pos + n - 1] = -1
        kind_of[pos + n - 1] = EOS_KIND
        pos += n

    canaries = make_canaries(cfg, tokenizer, canary_pool, rng)
    n_copies = sum(c["copies"] for c in canaries)
    n_natural = len(stream) // SLOT
    total = n_natural + n_copies
    total -= total % (cfg.seq_len // SLOT)  # whole rows
    n_natural = total - n_copies
    if n_copies * SLOT > cfg.max_planted_fraction * total * SLOT:
        raise ValueError(
            f"{n_copies} canary copies are {n_copies / total:.1%} of the stream, over "
            f"max_planted_fraction={cfg.max_planted_fraction}"
        )
    slots = rng.sample(range(total), n_copies)
    is_canary = np.zeros(total, dtype=bool)
    is_canary[slots] = True
    shape = (total, SLOT)
    out = np.empty(shape, dtype=np.int64)
    out_kind = np.empty(shape, dtype=np.uint8)
    out_doc = np.full(shape, -1, dtype=np.int32)
    natural = slice(0, n_natural * SLOT)
    out[~is_canary] = stream[natural].reshape(n_natural, SLOT)
    out_kind[~is_canary] = kind_of[natural].reshape(n_natural, SLOT)
    out_doc[~is_canary] = doc_of[natural].reshape(n_natural, SLOT)
    it = iter(slots)
    for c in canaries:
        c["slots"] = sorted(next(it) for _ in range(c["copies"]))
        out[c["slots"]] = c["tokens"]
        out_kind[c["slots"]] = KIND_ID[c["kind"]]
    per_row = cfg.seq_len // SLOT
    return Corpus(
        rows=out.reshape(-1, per_row * SLOT),
        kinds=out_kind.reshape(-1, per_row * SLOT),
        doc_ids=out_doc.reshape(-1, per_row * SLOT),
        documents=documents,
        canaries=canaries,
        heldout=heldout,
        tokenizer=tokenizer,
        config=cfg,
    )
