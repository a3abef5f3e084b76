"""The one sweep runner: units of work, skip / save / merge, progress, and the executors.

A **unit** (:class:`Unit`) is (model, checkpoint, interventions, slice of the data, task): the
smallest piece of a command that is evaluated and saved on its own. Its ``key`` (JSON of its
fields) is stable across processes and machines and distinct for distinct units; it names the
unit's part in the run directory (``workbench.runs``).

A **job** is the command's evaluation of one unit: a picklable callable
``job(model, unit) -> {table: DataFrame}`` (e.g. ``workbench.memorization.MemorizationJob``).

:func:`run_units` takes the units of a command, skips those whose part the run already has, runs
the rest on an executor, saves each unit's tables as soon as it is done (its first table last: a
unit is finished when that part exists), and merges every table at the end (``Run.finish``): the
parts of each (model, checkpoint) in unit order, sorted by the command's ``sort_by``, then the
groups in unit order. The merged tables depend only on the units, never on the executor or on how
often the sweep was interrupted.

Executors:
- ``serial``: this process, one unit after another, one model loaded at a time.
- ``ray``: one Ray task per unit (``ray.init()`` starts a local instance; ``--ray-address`` joins
  a cluster, whose nodes share the run directory's file system). A task loads its model (one kept
  per worker process), evaluates the unit and writes its own part; the driver waits and merges.
  A task asks for a GPU only when the cluster has GPUs and the device allows CUDA
  (:func:`gpus_per_task`), so it never waits for a GPU that no machine has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.cli import EXECUTORS
from workbench.errors import UserError
from workbench.interventions import ShortCircuit
from workbench.runs import Run, merge_parts

log = logging.getLogger(__name__)

Tables = dict[str, pd.DataFrame]
Job = Callable[[Any, "Unit"], Tables]


@dataclass(frozen=True)
class Unit:
    """One piece of a sweep: a model (at a training checkpoint), interventions, rows
    ``[start, stop)`` of the data (or all: ``stop=None``) and, for benchmarks, a task."""

    model: str
    checkpoint: int | None = None
    interventions: tuple[ShortCircuit, ...] = ()
    start: int = 0
    stop: int | None = None
    task: str | None = None

    @property
    def key(self) -> str:
        """JSON of the fields, interventions by label: stable, and :meth:`from_key` inverts it
        (every record without a block, which changes nothing, is the clean model ``none``)."""
        labels = [sc.label for sc in self.interventions]
        fields = [self.model, self.checkpoint, labels, self.start, self.stop, self.task]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> Unit:
        model, checkpoint, labels, start, stop, task = json.loads(key)
        scs = tuple(ShortCircuit.from_label(label) for label in labels)
        return cls(model, checkpoint, scs, start, stop, task)

    @property
    def group(self) -> tuple[str, int | None]:
        """The (model, checkpoint) whose parts are merged and sorted together."""
        return self.model, self.checkpoint


def slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each batch of ``n`` rows."""
    return [(first, min(first + batch_size, n)) for first in range(0, n, batch_size)]


def sweep_groups(
    model: str | None, models: Sequence[str] | None, checkpoints: Sequence[int] | None
) -> list[tuple[str, int | None]]:
    """(model, checkpoint) of a command's ``--model`` / ``--models`` and ``--checkpoints``."""
    from workbench.organism import registry

    if model is not None and models:
        raise UserError("give --model or --models, not both")
    names = list(dict.fromkeys(models or [str(model or registry.DEFAULT_MODEL)]))
    steps: list[int | None] = list(dict.fromkeys(checkpoints or [None]))
    return [(m, c) for m in names for c in steps]


def group_identity(groups: Sequence[tuple[str, int | None]], data: str | None) -> dict:
    """The run's ``identity``: that of the one model, or one per ``model@step`` of a sweep."""
    from workbench.runs import identity

    if len(groups) == 1 and groups[0][1] is None:
        return identity(groups[0][0], data)
    return {m if c is None else f"{m}@step{c}": identity(m, data, checkpoint=c) for m, c in groups}


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Loader:
    """How a unit's model is loaded (shipped to Ray tasks, so plain data)."""

    device: str = "auto"
    dtype: str = "float32"

    def __call__(self, model: str, checkpoint: int | None):
        from workbench.models import load_model

        return load_model(model, device=self.device, dtype=self.dtype, checkpoint=checkpoint)


_CACHE: dict[tuple, Any] = {}  # one model per process: (loader, model, checkpoint) -> model


def model_for(load: Loader, unit: Unit, preloaded: dict | None = None):
    """The unit's model: a preloaded one, or the process's cached one (loading replaces it)."""
    if preloaded and unit.group in preloaded:
        return preloaded[unit.group]
    key = (load, *unit.group)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load(*unit.group)
    return _CACHE[key]


# ----------------------------------------------------------------------------- running
def save_unit(run: Run, unit: Unit, tables: Tables, primary: str) -> None:
    """Save a unit's tables, ``primary`` last (its part marks the unit finished)."""
    for name in sorted(tables, key=lambda table: table == primary):
        run.save(name, unit.key, tables[name])


def run_units(
    units: Sequence[Unit],
    job: Job,
    *,
    tables: Sequence[str],
    run: Run | None = None,
    sort_by: dict[str, list[str]] | None = None,
    load: Loader | None = None,
    preloaded: dict[tuple[str, int | None], Any] | None = None,
    executor: str = "serial",
    ray_address: str | None = None,
    progress: bool = False,
    desc: str = "units",
) -> Tables:
    """Run (or resume) ``units`` with ``job``; the merged ``tables`` (see the module doc).

    ``tables``: every table a unit may write, the first one written by every unit; ``sort_by``:
    the sort within each (model, checkpoint), per table; ``load``: how units load their model
    (default ``Loader()``); ``preloaded``: models already loaded, by (model, checkpoint) (serial
    only).
    """
    from tqdm.auto import tqdm

    load = load or Loader()
    units = list(dict.fromkeys(units))
    primary = tables[0]
    todo = [u for u in units if run is None or not run.has(primary, u.key)]
    if len(todo) < len(units):
        log.info("resuming: %d of %d units left", len(todo), len(units))
    bar = tqdm(
        total=len(units),
        initial=len(units) - len(todo),
        desc=desc,
        unit="unit",
        disable=not progress,
    )
    done: dict[str, Tables] = {}

    def finished(unit: Unit, out: Tables | None) -> None:
        if out is not None and run is not None:
            save_unit(run, unit, out, primary)  # merged from the run directory at the end
        elif out is not None:
            done[unit.key] = out
        bar.update()

    try:
        if executor == "serial":
            for unit in todo:
                finished(unit, job(model_for(load, unit, preloaded), unit))
        elif executor == "ray":
            if preloaded:
                log.info("ray: the preloaded models stay in the driver; tasks load their own")
            _run_ray(todo, job, load, run, primary, ray_address, finished)
        else:
            raise UserError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    finally:
        bar.close()
    return merge(units, tables, sort_by or {}, run, done)


def merge(
    units: Sequence[Unit], tables: Sequence[str], sort_by: dict, run: Run | None, done: dict
) -> Tables:
    """Every table: the parts of each (model, checkpoint) in unit order, sorted, then joined."""
    groups: dict[tuple, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group, []).append(unit)
    keys = [[u.key for u in members] for members in groups.values()]
    if run is not None:
        return {t: run.finish(t, sort_by.get(t), keys=keys) for t in tables}
    return {
        t: merge_parts([[done[k][t] for k in ks if t in done[k]] for ks in keys], sort_by.get(t))
        for t in tables
    }


# ----------------------------------------------------------------------------- Ray
def gpus_per_task(cluster_gpus: float | int, device: str) -> int:
    """1 when the cluster has a GPU and the device may be CUDA (auto, cuda, cuda:N), else 0."""
    return int(cluster_gpus > 0 and (device == "auto" or device.startswith("cuda")))


def ray_module(address: str | None = None):
    """Ray, initialized: joined at ``address``, or a local instance (kept when already up)."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs Ray, which is not installed: pip install -e '.[ray]'"
        ) from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def _task(job: Job, unit: Unit, load: Loader, run_path: str | None, primary: str):
    """One Ray task: load the model (cached per worker), evaluate, save the part (or return
    the tables when there is no run directory)."""
    out = job(model_for(load, unit), unit)
    if run_path is None:
        return out
    save_unit(Run(Path(run_path), {}), unit, out, primary)
    return None


def _run_ray(todo, job, load, run, primary, address, finished) -> None:
    ray = ray_module(address)
    gpus = gpus_per_task(ray.cluster_resources().get("GPU", 0), load.device)
    remote = ray.remote(_task).options(num_cpus=1, num_gpus=gpus)
    job_ref = ray.put(job)
    path = None if run is None else str(Path(run.path).resolve())
    pending = {remote.remote(job_ref, u, load, path, primary): u for u in todo}
    log.info("ray: %d tasks, %d GPU each", len(pending), gpus)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                finished(pending.pop(ref), ray.get(ref))
    finally:
        for ref in pending:  # an error or Ctrl-C: the finished units are saved
            ray.cancel(ref)
