"""lm-eval's side of the benchmarks: which tasks (the organism's local ones, ``--include-path``,
lm-eval's catalogue), which group each belongs to (language / reasoning / other), tidy rows from
one ``simple_evaluate`` result, and running it without the environment report and, unless asked
for, without lm-eval's progress bars. The sweep itself is ``workbench.benchmarks``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import UserError
from workbench.organism import registry

# Defaults for the standard tasks; the organism's tasks are grouped by their lm-eval group.
STANDARD_GROUPS: dict[str, tuple[str, ...]] = {
    "language": (
        "lambada_openai",
        "lambada_standard",
        "hellaswag",
        "winogrande",
        "piqa",
        "wikitext",
        "storycloze",
        "blimp",
        "wsc273",
        "lambada",
    ),
    "reasoning": (
        "arc_easy",
        "arc_challenge",
        "gsm8k",
        "mathqa",
        "logiqa",
        "logiqa2",
        "sciq",
        "openbookqa",
        "boolq",
        "mmlu",
        "asdiv",
        "arithmetic",
        "commonsense_qa",
        "copa",
    ),
}


def check_tasks(tm, tasks: Sequence[str], include_path: Sequence[str] = ()) -> None:
    """Refuse task names lm-eval does not know, naming the tasks there are: all of them when
    they are few, else the local ones (the organism's, ``include_path``) and the closest of
    lm-eval's catalogue."""
    known = set(tm.all_tasks)
    unknown = [t for t in tasks if t not in known and not Path(t).exists()]
    if not unknown:
        return
    what = f"unknown task {unknown[0]!r}" if len(unknown) == 1 else f"unknown tasks {unknown}"
    if len(known) <= 40:
        raise UserError(f"{what}; the tasks: {', '.join(sorted(known)) or 'none'}")
    local = local_tasks(include_path)
    close = sorted({c for t in unknown for c in difflib.get_close_matches(t, known, n=5)})
    raise UserError(
        f"{what}; the local tasks: {', '.join(local) or 'none'}; lm-eval knows "
        f"{len(known - set(local))} more (closest: {', '.join(close) or 'none'}; "
        "`lm-eval ls tasks` lists them)"
    )


def local_tasks(include_path: Sequence[str] = ()) -> list[str]:
    """The task and group names in the local task folders (:func:`local_task_dirs`), sorted."""
    from lm_eval.tasks import TaskManager

    paths = local_task_dirs(include_path)
    if not paths:
        return []
    return sorted(TaskManager(include_path=paths, include_defaults=False).all_tasks)


def local_task_dirs(include_path: Sequence[str] = ()) -> list[str]:
    """The task folders read besides lm-eval's own: the organism's tasks, then ``include_path``
    (those that exist)."""
    tasks_dir = getattr(registry, "TASKS_DIR", None)
    return [str(p) for p in [tasks_dir, *include_path] if p is not None and Path(p).is_dir()]


def task_manager(tasks: Sequence[str] | None, include_path: Sequence[str] = ()):
    """lm-eval's TaskManager over the organism's tasks and ``include_path``; lm-eval's own task
    catalogue (slow to index) only when a requested name is not found locally."""
    from lm_eval.tasks import TaskManager

    paths = local_task_dirs(include_path)
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if tasks is None or all(t in local.all_tasks or Path(t).exists() for t in tasks):
            return local
    return TaskManager(include_path=paths or None)


def default_tasks(tm) -> list[str]:
    """The organism's local task groups (all its tasks when it defines no group)."""
    tasks_dir = getattr(registry, "TASKS_DIR", None)
    if tasks_dir is None or not Path(tasks_dir).is_dir():
        raise ValueError("no organism tasks are installed; pass --tasks")
    return list(tm.all_groups or tm.all_subtasks)


def group_of(task: str, parents: Sequence[str], overrides: dict[str, list[str]] | None) -> str:
    """language / reasoning / other for a leaf task, given its lm-eval group ancestors."""
    names = [task, *parents]
    for group, members in (overrides or {}).items():
        if any(n in members for n in names):
            return group
    for group in ("language", "reasoning"):
        if any(group in n for n in parents):
            return group
    for group, members in STANDARD_GROUPS.items():
        if any(n == m or n.startswith(m + "_") for n in names for m in members):
            return group
    return "other"


def result_rows(res: dict, base: dict, overrides: dict[str, list[str]] | None) -> list[dict]:
    """Tidy rows from one ``simple_evaluate`` result (leaf tasks only)."""
    parents: dict[str, list[str]] = {}
    for grp, children in res.get("group_subtasks", {}).items():
        for child in children:
            parents.setdefault(child, []).append(grp)
    for child in list(parents):  # ancestors of ancestors
        stack = list(parents[child])
        while stack:
            for up in parents.get(stack.pop(), []):
                if up not in parents[child]:
                    parents[child].append(up)
                    stack.append(up)
    rows = []
    for task, metrics in res["results"].items():
        if task in res.get("group_subtasks", {}):
            continue
        hib = res.get("higher_is_better", {}).get(task, {})
        n = res.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                {
                    **base,
                    "task": task,
                    "group": group_of(task, parents.get(task, []), overrides),
                    "metric": metric,
                    "filter": filt,
                    "value": _float(value),
                    "stderr": _float(stderr),
                    "higher_is_better": hib.get(metric),
                    "n": n,
                }
            )
    return rows


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan  # lm-eval's "N/A"


@contextmanager
def without_environment_report() -> Iterator[None]:
    """``simple_evaluate`` gathers the machine's environment (``pip list``, OS, git: about a second
    of subprocesses) into every result; the run directory records versions once, so a sweep of
    many lm-eval runs skips it. Restored on exit."""
    import lm_eval.evaluator as ev

    saved = ev.add_env_info, ev.get_git_commit_hash
    ev.add_env_info, ev.get_git_commit_hash = (lambda results: None), (lambda: None)
    try:
        yield
    finally:
        ev.add_env_info, ev.get_git_commit_hash = saved


@contextmanager
def lm_eval_bars(show: bool) -> Iterator[None]:
    """lm-eval's progress bars (building contexts, tokenizing, scoring, bootstrap) on or off.

    lm-eval creates them with no way for the caller to turn them off (some pass
    ``disable=False`` themselves), so while the block runs every new tqdm bar is disabled when
    ``show`` is false; bars made before it (the runner's) are left alone. Restored on exit."""
    if show:
        yield
        return
    from tqdm import std

    saved = std.tqdm.__init__

    def quiet(self, *args, **kwargs) -> None:
        saved(self, *args, **{**kwargs, "disable": True})

    std.tqdm.__init__ = quiet
    try:
        yield
    finally:
        std.tqdm.__init__ = saved
