"""Where results live: a run directory = ``config.json`` + tidy parquet tables.

A run directory holds
- ``config.json``: the command's config, package versions, git commit, date;
- ``parts/<table>/<key>.parquet``: one finished unit of work each (e.g. one intervention), written
  atomically, so an interrupted sweep keeps every finished unit and a rerun skips them;
- ``<table>.parquet``: all parts of a table concatenated, written by ``Run.finish``.

Opening a run directory again with the same config resumes it; with a different config is an error
(use a new ``--out``), so results made under different settings never mix.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

PACKAGES = ("workbench", "torch", "transformer-lens", "transformers", "lm-eval", "numpy", "pandas")


class RunConfigMismatch(ValueError):
    """The run directory was made with a different config."""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    """The workbench checkout's commit (with ``-dirty`` when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))


@dataclass
class Run:
    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any]) -> Run:
        """Create the run directory, or resume it when its config is the same."""
        path = Path(path)
        config = _jsonable(config)
        meta_file = path / "config.json"
        if meta_file.exists():
            old = json.loads(meta_file.read_text())["config"]
            if old != config:
                diff = sorted(k for k in old.keys() | config.keys() if old.get(k) != config.get(k))
                raise RunConfigMismatch(
                    f"{path} holds a run with a different config (differs in {diff}); "
                    "choose another --out or delete it."
                )
            log.info("resuming run in %s", path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            meta = {
                "config": config,
                "versions": versions(),
                "git_commit": git_commit(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            _atomic_write_text(meta_file, json.dumps(meta, indent=2))
        return cls(path, config)

    def _part(self, table: str, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", key)
        return self.path / "parts" / table / f"{safe}.parquet"

    def has(self, table: str, key: str) -> bool:
        return self._part(table, key).exists()

    def save(self, table: str, key: str, df: pd.DataFrame) -> None:
        """Save one finished unit of work atomically."""
        part = self._part(table, key)
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(part)

    def load(self, table: str, key: str) -> pd.DataFrame:
        return pd.read_parquet(self._part(table, key))

    def table(self, table: str) -> pd.DataFrame:
        """Every saved part of a table, concatenated (empty frame when there is none)."""
        parts = sorted((self.path / "parts" / table).glob("*.parquet"))
        if not parts:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def finish(self, table: str, sort_by: list[str] | None = None) -> pd.DataFrame:
        """Write ``<table>.parquet`` from its parts and return it."""
        df = self.table(table)
        if sort_by and not df.empty:
            df = df.sort_values(sort_by, kind="stable").reset_index(drop=True)
        tmp = self.path / f"{table}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(self.path / f"{table}.parquet")
        return df


def read_run(path: str | Path, table: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A finished table and the run's metadata (config, versions, commit, date)."""
    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    return pd.read_parquet(path / f"{table}.parquet"), meta


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
