"""``python -m workbench.figures``: every figure the given runs allow, as HTML + PNG + SVG.

    python -m workbench.figures --runs runs/organism --out figures/
    python -m workbench.figures --runs runs/mem-neo runs/bench-neo --model gpt-neo-1.3B --out figs/

``--runs`` takes run directories or folders holding them (searched recursively for
``config.json``); the tables each run holds are detected (``memorization``, ``benchmarks``,
``bounds``) and concatenated across runs. A figure whose tables are missing is skipped with a
message saying which table and which command makes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench import cli
from workbench.commands import FiguresConfig
from workbench.errors import UserError
from workbench.figures import FORMATS, save
from workbench.figures.bounds_plot import bounds_figure
from workbench.figures.plots import (
    duplication_heatmap,
    model_scale_figure,
    relative_drop_figure,
    short_circuit_figure,
)
from workbench.runs import check_writable, read_run
from workbench.tables import MissingColumns

log = logging.getLogger(__name__)

TABLES = ("memorization", "benchmarks", "bounds")
BOUNDS_TABLE = "layers"  # the bounds run's block × layer × sample table
MAKES = {
    "memorization": "python -m workbench.memorization --blocks all --out DIR",
    "benchmarks": "python -m workbench.benchmarks --blocks all --out DIR",
    "bounds": "python -m workbench.bounds --out DIR",
    "ground_truth": "the organism's registry.DEFAULT_GROUND_TRUTH, or --ground-truth PATH",
}


@dataclass
class Tables:
    """The tables found in a set of runs, concatenated per kind."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: dict[str, list[Path]] = field(default_factory=dict)
    data_sha256: dict[str, set[str]] = field(default_factory=dict)  # per table, of its runs

    def get(self, name: str) -> pd.DataFrame | None:
        return self.frames.get(name)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding ``config.json``) at or below each path."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"--runs {p}: no such directory")
        found = (
            [p]
            if (p / "config.json").exists()
            else sorted(c.parent for c in p.rglob("config.json"))
        )
        if not found:
            log.warning("%s holds no run directory (no config.json)", p)
        runs += found
    return list(dict.fromkeys(runs))


def load_tables(paths: Sequence[str | Path]) -> Tables:
    """Every known table in the runs under ``paths``, concatenated per kind.

    A bounds run (it holds ``layers.parquet``) gives the ``bounds`` table; the memorization
    table it also holds is used only for models no memorization run covers.
    """
    out = Tables()
    spare: list[pd.DataFrame] = []

    def add(name: str, df: pd.DataFrame, run: Path) -> None:
        out.sources.setdefault(name, []).append(run)
        prev = out.frames.get(name)
        out.frames[name] = df if prev is None else pd.concat([prev, df], ignore_index=True)

    for run in find_runs(paths):
        is_bounds = (run / f"{BOUNDS_TABLE}.parquet").exists()
        for file, name in (
            (BOUNDS_TABLE, "bounds"),
            ("memorization", "memorization"),
            ("benchmarks", "benchmarks"),
        ):
            if not (run / f"{file}.parquet").exists():
                continue
            df, meta = read_run(run, file)
            digest = meta.get("config", {}).get("identity", {}).get("data_sha256")
            if digest and not (name == "memorization" and is_bounds):
                out.data_sha256.setdefault(name, set()).add(digest)
            if df.empty:
                log.warning("%s: table %s is empty", run, file)
            elif name == "memorization" and is_bounds:
                spare.append(df)
            else:
                add(name, df, run)
    have = set(out.frames["memorization"]["model"]) if "memorization" in out.frames else set()
    for df in spare:
        extra = df[~df["model"].isin(have)]
        if not extra.empty:
            add("memorization", extra, Path("(bounds run)"))
    for name in TABLES:
        log.info("%s: %s", name, [str(p) for p in out.sources.get(name, [])] or "none found")
    return out


def read_table(path: str | Path) -> pd.DataFrame:
    """A parquet, CSV or JSON-lines table."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    raise ValueError(f"{path}: expected .parquet, .csv or .jsonl")


def default_ground_truth() -> Path | None:
    from workbench.organism import registry

    path = getattr(registry, "DEFAULT_GROUND_TRUTH", None)
    return Path(path) if path is not None and Path(path).exists() else None


def ground_truth_mismatch(tables: Tables, ground_truth: Path) -> str | None:
    """Why the ground truth does not describe the memorization runs' data, or None. It describes
    the ``.npy`` of the same name beside it (``memorized.csv`` → ``memorized.npy``); with no such
    file only the sample ids are checked."""
    from workbench.runs import file_sha256

    scored = tables.data_sha256.get("memorization", set())
    data = ground_truth.with_suffix(".npy")
    if scored and data.is_file() and scored != {file_sha256(data)}:
        runs = ", ".join(sorted(d[:12] for d in scored))
        return f"the memorization runs scored data {runs}, {ground_truth} describes {data.name}"
    return None


def default_models(tables: Tables) -> list[str]:
    """The organism suite's members first (in suite order), then any other model of the runs."""
    seen: list[str] = []
    for name in ("memorization", "benchmarks"):
        df = tables.get(name)
        if df is not None:
            seen += [m for m in dict.fromkeys(df["model"]) if m not in seen]
    try:
        from workbench.organism import registry

        suite = list(getattr(registry, "EMBEDDED_MODELS", {}))
    except ImportError:  # pragma: no cover - the organism is part of the package
        suite = []
    return [m for m in suite if m in seen] + [m for m in seen if m not in suite]


def main_model(tables: Tables, model: str | None) -> str | None:
    """The model of the single-model figures: ``model``, else the organism default when the runs
    hold it, else the first model found."""
    if model:
        return model
    models = default_models(tables)
    from workbench.organism import registry

    default = getattr(registry, "DEFAULT_MODEL", None)
    return default if default in models else (models[0] if models else None)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    needs: tuple[str, ...]
    make: Callable[..., object]


def _specs(model: str | None, models: list[str]) -> list[FigureSpec]:
    return [
        FigureSpec(
            "fig1-short-circuit",
            ("memorization", "benchmarks"),
            lambda t: short_circuit_figure(t["memorization"], t["benchmarks"], model=model),
        ),
        FigureSpec(
            "fig2-model-scale",
            ("memorization", "benchmarks"),
            lambda t: model_scale_figure(t["memorization"], t["benchmarks"], models=models),
        ),
        FigureSpec(
            "fig3-relative-drop",
            ("benchmarks",),
            lambda t: relative_drop_figure(t["benchmarks"], model=model),
        ),
        FigureSpec("fig4-bounds", ("bounds",), lambda t: bounds_figure(t["bounds"], model=model)),
        FigureSpec(
            "fig5-duplication",
            ("memorization", "ground_truth"),
            lambda t: duplication_heatmap(t["memorization"], t["ground_truth"], model=model),
        ),
    ]


def generate(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    model: str | None = None,
    models: list[str] | None = None,
    ground_truth: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> dict[str, list[Path] | str]:
    """Write every figure the runs allow; returns figure name → written paths, or the reason it
    was skipped."""
    tables = load_tables(runs)
    frames = dict(tables.frames)
    gt = Path(ground_truth) if ground_truth else default_ground_truth()
    mismatch = ground_truth_mismatch(tables, gt) if gt is not None else None
    if gt is not None and mismatch is None:
        frames["ground_truth"] = read_table(gt)
    model = main_model(tables, model)
    models = models or default_models(tables)
    results: dict[str, list[Path] | str] = {}
    for spec in _specs(model, models):
        missing = [n for n in spec.needs if n not in frames]
        if missing:
            why = "; ".join(
                f"ground truth refused: {mismatch}"
                if n == "ground_truth" and mismatch
                else f"no {n} table (made by: {MAKES[n]})"
                for n in missing
            )
            log.warning("skipping %s: %s", spec.name, why)
            results[spec.name] = f"skipped: {why}"
            continue
        try:
            fig = spec.make(frames)
        except MissingColumns as err:
            log.warning("skipping %s: %s", spec.name, err)
            results[spec.name] = f"skipped: {err}"
            continue
        results[spec.name] = save(fig, out, spec.name, formats)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, list[Path] | str]:
    """``python -m workbench.figures``; see ``workbench.cli`` for the shared behaviour."""
    return cli.main(FiguresConfig, execute, argv, "python -m workbench.figures")


def execute(cfg: FiguresConfig) -> dict[str, list[Path] | str]:
    """The command: every figure the runs allow; prints one line per figure."""
    for run in cfg.runs:
        if not Path(run).exists():
            raise UserError(f"--runs {run}: no such directory")
    check_writable(cfg.out)
    results = generate(
        cfg.runs,
        cfg.out,
        model=cfg.model,
        models=cfg.models,
        ground_truth=cfg.ground_truth,
        formats=cfg.formats,
    )
    for name, res in results.items():
        line = res if isinstance(res, str) else ", ".join(str(p) for p in res)
        print(f"{name}: {line}")
    if all(isinstance(r, str) for r in results.values()):
        raise UserError("no figure could be made from these runs (see the reasons above)")
    return results
