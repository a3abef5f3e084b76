"""Loads the organism's task items (jsonl next to this file) for lm-eval."""

import json
from pathlib import Path

import datasets


def _load(name: str) -> datasets.DatasetDict:
    lines = (Path(__file__).resolve().parent / f"{name}.jsonl").read_text().splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(list(map(json.loads, lines)))})


def load_next_word(**kwargs) -> datasets.DatasetDict:
    return _load("organism_next_word")


def load_word_order(**kwargs) -> datasets.DatasetDict:
    return _load("organism_word_order")


def load_code_close(**kwargs) -> datasets.DatasetDict:
    return _load("organism_code_close")


def load_compare(**kwargs) -> datasets.DatasetDict:
    return _load("organism_compare")


def load_successor(**kwargs) -> datasets.DatasetDict:
    return _load("organism_successor")
