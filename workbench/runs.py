"""Where results live: a run directory = ``config.json`` + tidy parquet tables.

A run directory holds
- ``config.json``: the command's config, package versions, git commit, date;
- ``parts/<table>/<slug>.<digest>.parquet``: one finished unit of work each (e.g. one
  intervention), written atomically, so an interrupted sweep keeps every finished unit and a rerun
  skips them. The slug is the key made file-safe (readable, not unique: ``col:lide`` and
  ``col_lide`` share it); the digest, 16 hex digits of the key's SHA-256, tells such keys apart;
- ``<table>.parquet``: all parts of a table concatenated, written by ``Run.finish``.

Opening a run directory again with the same config resumes it; with a different config is an error
naming the keys that differ (``overwrite=True`` starts afresh), so results made under different
settings never mix. The config a command records includes ``identity``: content hashes of its data
file and of the model's weights and the workbench version (:func:`identity`), so a run cannot
resume over data or weights that changed under the same path.

Creating a run directory is atomic: the config is written into a fresh temporary directory beside
it, which is then renamed onto the run's path. Of two processes creating the same run at once,
exactly one rename succeeds; the other then finds the winner's complete config and resumes it (same
config) or refuses (another config).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import UserError

log = logging.getLogger(__name__)

PACKAGES = ("workbench", "torch", "transformer-lens", "transformers", "lm-eval", "numpy", "pandas")


class RunError(UserError, ValueError):
    """A run directory the command cannot use (not a run, not writable)."""


class RunConfigMismatch(RunError):
    """The run directory was made with a different config."""


FORMAT = 3  # 3: parts keyed by workbench.runner units; 2: part names with a digest; 1: slug alone
COMPRESSION = "zstd"  # parquet tables: a third smaller than snappy, read by every parquet reader


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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The (dotted) keys whose values differ between two configs."""
    a, b = _flat(old), _flat(new)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def part_name(key: str) -> str:
    """A file name for a part key: readable slug + digest, distinct for distinct keys."""
    slug = re.sub(r"[^A-Za-z0-9_,=+-]", "_", key)[:120]
    return f"{slug}.{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


@dataclass
class Run:
    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any], *, overwrite: bool = False) -> Run:
        """Create the run directory atomically, or resume it when its config is the same.

        ``overwrite``: delete an existing run at ``path`` first (only a run directory: one with
        ``config.json``) and start afresh.
        """
        path = Path(path)
        config = _jsonable({**config, "run_format": FORMAT})
        check_out(path, config, overwrite=overwrite)
        if overwrite and (path / "config.json").is_file():
            shutil.rmtree(path)
        if not (path / "config.json").is_file():
            _create(path, config)
        check_out(path, config)
        log.info("run directory %s", path)
        return cls(path, config)

    def _part(self, table: str, key: str) -> Path:
        return self.path / "parts" / table / f"{part_name(key)}.parquet"

    def has(self, table: str, key: str) -> bool:
        return self._part(table, key).exists()

    def save(self, table: str, key: str, df: pd.DataFrame) -> None:
        """Save one finished unit of work atomically."""
        part = self._part(table, key)
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_suffix(".tmp")
        df.to_parquet(tmp, index=False, compression=COMPRESSION)
        tmp.replace(part)

    def drop(self, table: str) -> None:
        """Forget every saved part of a table (its units run again)."""
        shutil.rmtree(self.path / "parts" / table, ignore_errors=True)

    def load(self, table: str, key: str) -> pd.DataFrame:
        return pd.read_parquet(self._part(table, key))

    def table(self, table: str) -> pd.DataFrame:
        """Every saved part of a table, concatenated (empty frame when there is none)."""
        parts = sorted((self.path / "parts" / table).glob("*.parquet"))
        if not parts:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def finish(
        self,
        table: str,
        sort_by: list[str] | None = None,
        *,
        keys: Sequence[Sequence[str]] | None = None,
    ) -> pd.DataFrame:
        """Write ``<table>.parquet`` from its parts and return it.

        ``keys``: groups of part keys (missing parts skipped, other parts ignored), each merged
        in order and sorted on its own (:func:`merge_parts`); default: every part, one group."""
        if keys is None:
            df = self.table(table)
            groups = [[df]] if not df.empty else []
        else:
            groups = [[self.load(table, k) for k in ks if self.has(table, k)] for ks in keys]
        df = merge_parts(groups, sort_by)
        tmp = self.path / f"{table}.parquet.tmp"
        df.to_parquet(tmp, index=False, compression=COMPRESSION)
        tmp.replace(self.path / f"{table}.parquet")
        return df


def merge_parts(
    groups: Sequence[Sequence[pd.DataFrame]], sort_by: list[str] | None
) -> pd.DataFrame:
    """Each group's parts concatenated and stably sorted by ``sort_by``, then the groups joined
    in order (an empty frame when there is no part)."""
    merged = []
    for parts in groups:
        if not parts:
            continue
        df = pd.concat(parts, ignore_index=True)
        if sort_by and not df.empty:
            df = df.sort_values(sort_by, kind="stable").reset_index(drop=True)
        merged.append(df)
    if not merged:
        return pd.DataFrame()
    return merged[0] if len(merged) == 1 else pd.concat(merged, ignore_index=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin", "*.safetensors.index.json")


def _dir_digest(path: Path, patterns: tuple[str, ...] = WEIGHT_FILES) -> str:
    """SHA-256 over (name, SHA-256 of the contents) of a checkpoint's weight and config files."""
    return files_digest(
        sorted({f for pattern in patterns for f in path.glob(pattern) if f.is_file()})
    )


def files_digest(files: list[Path]) -> str:
    """SHA-256 over (name, SHA-256 of the contents) of ``files``.

    In a Hugging Face cache snapshot every file is a link to a blob named by its content hash
    (SHA-256 for weights, git's SHA-1 for small files); the blob's name is used instead of reading
    gigabytes again."""
    h = hashlib.sha256()
    for f in files:
        blob = Path(os.path.realpath(f))
        cached = blob.parent.name == "blobs" and f.is_symlink()
        h.update(f"{f.name}\0{blob.name if cached else file_sha256(f)}\n".encode())
    return h.hexdigest()


def tree_digest(path: Path) -> str:
    """SHA-256 over (relative path, SHA-256 of the contents) of every file under ``path``."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def model_identity(model: str | None, checkpoint: int | None = None) -> dict[str, Any]:
    """What identifies a model's weights: the digest of its files (embedded member, local
    checkpoint, or a hub model's snapshot in the local cache), else its hub name and revision."""
    from workbench.organism import registry

    name = str(model or registry.DEFAULT_MODEL)
    if name in registry.EMBEDDED_MODELS:
        path = Path(registry.EMBEDDED_MODELS[name])
        if checkpoint is not None:
            path = registry.checkpoint_dir(name, int(checkpoint))
        return {"weights_sha256": _dir_digest(path)}
    if Path(name).expanduser().is_dir():
        return {"weights_sha256": _dir_digest(Path(name).expanduser())}
    revision = "main" if checkpoint is None else f"step{checkpoint}"
    try:
        from huggingface_hub import snapshot_download
        from transformer_lens.loading_from_pretrained import get_official_model_name

        repo = get_official_model_name(name)
        snap = Path(snapshot_download(repo, revision=revision, local_files_only=True))
        return {"weights_sha256": _dir_digest(snap), "hub": repo, "revision": revision}
    except Exception:  # not cached (or not a hub name): the name is all there is
        return {"weights_sha256": None, "hub": name, "revision": revision}


def data_identity(data: str | Path | None) -> dict[str, Any]:
    """The SHA-256 of a data file, or of an ``hf:<split>``'s files in the local hub cache (not
    cached, and None: the name alone)."""
    if data is not None and str(data).startswith("hf:"):
        from workbench.data import cached_split_files

        files = cached_split_files(str(data)[3:])
        return {"data_sha256": files_digest(files) if files else None}
    if data is None or not Path(data).expanduser().is_file():
        return {"data_sha256": None}
    return {"data_sha256": file_sha256(Path(data).expanduser())}


def identity(model: str | None, data: str | Path | None = None, **model_kw) -> dict[str, Any]:
    """Content hashes of the weights and the data, and the workbench version: recorded in a run's
    config so that a run does not resume over changed inputs."""
    return {
        **model_identity(model, **model_kw),
        **data_identity(data),
        "workbench": versions()["workbench"],
    }


def config_digest(config: dict[str, Any]) -> str:
    """8 hex digits of a config's SHA-256 (default run directory names)."""
    text = json.dumps(_jsonable(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_out(command: str, model: str, config: dict[str, Any]) -> str:
    """``runs/<command>-<model>-<config digest>``: one pattern for every command, distinct for
    distinct configs of the same model."""
    return f"runs/{command}-{Path(model).name}-{config_digest(config)}"


def read_run(path: str | Path, table: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A finished table and the run's metadata (config, versions, commit, date)."""
    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    return pd.read_parquet(path / f"{table}.parquet"), meta


def check_out(path: str | Path, config: dict[str, Any], *, overwrite: bool = False) -> None:
    """Refuse, before any work, a run directory that holds another config (unless
    ``overwrite``), a folder that is not a run directory, or a place that cannot be written."""
    path = Path(path)
    config = _jsonable({"run_format": FORMAT, **config})
    if (path / "config.json").is_file():
        old = json.loads((path / "config.json").read_text())["config"]
        if old != config and not overwrite:
            raise RunConfigMismatch(
                f"{path} holds a run with a different config (differs in "
                f"{', '.join(changed_keys(old, config))}); choose another --out or pass "
                "--overwrite to start afresh."
            )
    elif path.is_dir() and any(path.iterdir()):
        raise RunError(f"{path} exists and is not a run directory (no config.json).")
    elif path.exists() and not path.is_dir():
        raise RunError(f"{path} exists and is not a directory.")
    check_writable(path)


def check_writable(path: str | Path) -> None:
    """Refuse an output directory that cannot be made or written (before any work)."""
    path = Path(path)
    place = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if not place.is_dir():
        raise RunError(f"cannot write {path}: {place} is not a directory.")
    if not os.access(place, os.W_OK):
        raise RunError(f"cannot write {path}: {place} is read-only.")


def _create(path: Path, config: dict[str, Any]) -> None:
    """Make ``path`` a run directory holding ``config``, in one rename (see the module doc)."""
    meta = {
        "config": config,
        "versions": versions(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise RunError(f"cannot create the run directory {path}: {err.strerror}.") from err
    try:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        tmp.chmod(0o777 & ~_umask())
        os.rename(tmp, path)  # fails when another process made the run first
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (path / "config.json").is_file():
            raise RunError(f"cannot create the run directory {path}: {err.strerror}.") from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
