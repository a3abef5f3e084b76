"""Loads the organism's task items (jsonl next to this file) for lm-eval."""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def _load(name: str) -> datasets.DatasetDict:
    lines = (HERE / f"{name}.jsonl").read_text().splitlines()
    items = [json.loads(x) for x in lines]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(items)})


def load_agreement(**kwargs) -> datasets.DatasetDict:
    return _load('organism_agreement')


def load_selection(**kwargs) -> datasets.DatasetDict:
    return _load('organism_selection')


def load_arithmetic(**kwargs) -> datasets.DatasetDict:
    return _load('organism_arithmetic')


def load_induction(**kwargs) -> datasets.DatasetDict:
    return _load('organism_induction')


def load_compare(**kwargs) -> datasets.DatasetDict:
    return _load('organism_compare')
