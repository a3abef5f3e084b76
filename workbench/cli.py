"""The command-line layer every ``python -m workbench.<command>`` goes through.

- **Options declared once.** A command's options are the fields of its config dataclass
  (``workbench.commands``); the shared ones (model, data, blocks, kind, batch size, device, dtype,
  threads, out, overwrite, progress, debug, executor, ray address, models, checkpoints) are the
  field factories below, each with its help.
  :func:`parser` turns a config class into an ``argparse`` parser showing every default.
- **Validation at parse time**: integers at least 1, fractions in (0, 1), positive finite floats,
  block specs (syntax here, the range once the model is known).
- **Errors**: a ``UserError`` (bad file, option, model, run directory) prints one line
  ``error: ...`` on stderr and exits 2; ``--debug`` shows the traceback instead. Ctrl-C keeps the
  finished units (each is saved as soon as it is done) and exits 130 with one line.
- **Quiet**: root logging at WARNING (no per-load lines from TransformerLens), no weights bars,
  lm-eval's "custom kwargs" warning once, progress bars only when stderr is a terminal (or
  ``--progress``).
- **Fast help**: this module and ``workbench.commands`` import only the standard library; a command
  module's ``__main__`` path parses the command line (:func:`run_module`) before its heavy imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, field, fields
from typing import Any, TypeVar

from workbench.errors import UserError

C = TypeVar("C")
DTYPES = ("float32", "fp32", "float64", "fp64", "bfloat16", "bf16", "float16", "fp16")
KINDS = ("identity", "zero")


# ----------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer ≥ 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in the open interval (0, 1)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in the open interval (0, 1), got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def count_or_fraction(text: str) -> int | float:
    """An integer ≥ 1 (a count) or a number in (0, 1) (a fraction)."""
    value = _float(text)
    if 0 < value < 1:
        return value
    if value >= 1 and value == int(value):
        return int(value)
    raise argparse.ArgumentTypeError(f"must be an integer ≥ 1 or a fraction in (0, 1), got {text}")


def block_spec(text: str) -> str:
    """``all``, ``none``, ``3``, ``0,2,5`` or ``2-5``: the syntax checked here, the range once the
    model is known."""
    from workbench.blocks import BlockSpecError, block_indices

    try:
        block_indices(text)
    except BlockSpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def batch_size_or_auto(text: str) -> int | str:
    """An integer ≥ 1, or ``auto``."""
    return "auto" if text.strip().lower() == "auto" else positive_int(text)


def memory_size(text: str) -> int:
    """Bytes: ``4GB``, ``512MiB``, ``2.5G`` or plain bytes (``workbench.memory.parse_size``)."""
    from workbench.memory import parse_size

    try:
        return parse_size(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


# ----------------------------------------------------------------------------- options
def option(default: Any = None, help: str = "", *, runtime: bool = False, **argparse_kw) -> Any:
    """A config field that is also a command-line option (``--field-name``).

    ``runtime``: an option that changes how a run goes, not what it computes (threads, progress,
    debug, out, overwrite); not recorded in the run's config. ``argparse_kw``: ``type``, ``nargs``,
    ``choices``, ``metavar``; ``flags`` replaces the option's name(s)."""
    meta = {"help": help, "runtime": runtime, "argparse": argparse_kw}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


MODEL_HELP = "organism member, local checkpoint directory or TransformerLens model name"


def model_option() -> Any:
    return option(None, MODEL_HELP + " (default: the organism's default member)")


def data_option(what: str = "the organism's memorized set") -> Any:
    return option(
        None, f".npy [N, T] token ids, .jsonl (ids or text) or hf:<split> (default: {what})"
    )


def blocks_option(default: str = "all") -> Any:
    return option(
        default,
        "blocks short-circuited one at a time: all, none, 3, 0,2,5 or 2-5",
        type=block_spec,
    )


def kind_option() -> Any:
    return option("identity", "what short-circuiting does to a block's attention", choices=KINDS)


def batch_size_option(default: int) -> Any:
    return option(default, "samples per forward batch", type=positive_int)


def auto_batch_size_option(default: int) -> Any:
    return option(
        default,
        "samples per forward batch, or auto: the largest whose estimated peak memory fits "
        "--max-memory",
        type=batch_size_or_auto,
    )


def max_memory_option() -> Any:
    return option(
        None,
        "memory for --batch-size auto beyond the loaded model: 4GB, 2.5G (powers of 1000), "
        "512MiB (of 1024) or bytes (default: the device's free memory less 10%%)",
        type=memory_size,
        runtime=True,
    )


def prefix_len_option() -> Any:
    return option(32, "prefix tokens of each sample (the rest is the suffix)", type=positive_int)


def max_samples_option() -> Any:
    return option(None, "the first N samples only (default: all)", type=positive_int)


def device_option() -> Any:
    return option("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:1, ...")


def dtype_option() -> Any:
    return option("float32", "model dtype", choices=DTYPES)


def out_option(default: str | None = None) -> Any:
    what = default or "runs/<command>-<model>-<config digest>"
    return option(default, f"run directory (default: {what})", runtime=True)


@dataclasses.dataclass
class Runtime:
    """The options of every command that change how it runs, never what it computes (not
    recorded in a run's config)."""

    threads: int | None = option(
        None, "torch threads (default: torch's)", type=positive_int, runtime=True
    )
    overwrite: bool = option(False, "delete the run at --out and start afresh", runtime=True)
    progress: bool | None = option(
        None, "progress bars (default: when stderr is a terminal)", runtime=True
    )
    debug: bool = option(False, "show the traceback of an error", runtime=True)


EXECUTORS = ("serial", "ray")  # workbench.runner's


@dataclasses.dataclass
class Sweep(Runtime):
    """The options of every command whose units ``workbench.runner`` runs: where they run
    (never what they compute, so not recorded either)."""

    executor: str = option(
        "serial",
        "where the units run: serial (this process) or ray (one Ray task per unit; needs .[ray])",
        choices=EXECUTORS,
        runtime=True,
    )
    ray_address: str | None = option(
        None, "Ray cluster to join (default: start a local instance)", runtime=True
    )


def models_option() -> Any:
    return option(None, "several models, one after another (instead of --model)", nargs="+")


def checkpoints_option() -> Any:
    return option(
        None,
        "training checkpoints (steps, Pythia-style) of each model (default: the final weights)",
        nargs="+",
        type=nonnegative_int,
        metavar="STEP",
    )


def recorded(cfg: Any) -> dict[str, Any]:
    """The config fields a run records (all but the runtime options)."""
    return {
        f.name: getattr(cfg, f.name) for f in fields(cfg) if not f.metadata.get("runtime", False)
    }


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or action.default is None:
            return text
        return super()._get_help_string(action) or ""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def parser(cls: type, prog: str) -> Parser:
    p = Parser(prog=prog, description=(cls.__doc__ or "").strip(), formatter_class=_Formatter)
    shared = {f.name for f in fields(Sweep)}
    ordered = sorted(fields(cls), key=lambda f: f.name in shared)  # the command's own first
    for f in ordered:
        kw = dict(f.metadata.get("argparse", {}))
        flags = kw.pop("flags", None) or [f"--{f.name.replace('_', '-')}"]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if default is True or f.name == "progress":
            kw["action"] = argparse.BooleanOptionalAction
        elif default is False:
            kw["action"] = "store_true"
        p.add_argument(*flags, dest=f.name, default=default, help=f.metadata.get("help"), **kw)
    return p


def parse(cls: type[C], argv: Sequence[str] | None, prog: str) -> C:
    p = parser(cls, prog)
    try:
        return cls(**vars(p.parse_args(argv)))
    except UserError as err:  # a config's own checks (__post_init__)
        p.error(str(err))
        raise  # unreachable


# ----------------------------------------------------------------------------- running
class _Once(logging.Filter):
    """Pass a log message containing ``marker`` the first time only."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker, self.seen = marker, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.marker not in record.getMessage():
            return True
        seen, self.seen = self.seen, True
        return not seen


def setup(cfg: Any) -> None:
    """Logging, quiet libraries, progress default and threads for one command."""
    if getattr(cfg, "progress", None) is None and hasattr(cfg, "progress"):
        cfg.progress = sys.stderr.isatty()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("workbench").setLevel(logging.INFO)
    for name, marker in (
        ("lm_eval.api.task", "Custom kwargs can be passed to `--metadata`"),
        ("", "Pythia models on HF were updated"),  # TransformerLens, at each checkpoint load
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Once) for f in logger.filters):
            logger.addFilter(_Once(marker))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not getattr(cfg, "progress", True):
        os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's bars, read when tqdm is imported
    if "transformers" in sys.modules or _importable("transformers"):
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()  # "Loading weights" on every model load
        tf_logging.set_verbosity_error()
    if getattr(cfg, "threads", None):
        import torch

        torch.set_num_threads(cfg.threads)


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def guard(cfg: Any, work: Callable[[], Any]) -> Any:
    """Run ``work`` with the command's settings; user errors and Ctrl-C as one line."""
    debug = getattr(cfg, "debug", False)
    try:
        setup(cfg)
        return work()
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write(
            "error: interrupted; every finished unit is saved: rerun the same command to resume\n"
        )
        raise SystemExit(130) from None
    except UserError as err:
        if debug:
            raise
        sys.stderr.write(f"error: {' '.join(str(err).split())}\n")
        raise SystemExit(2) from None


def main(cls: type[C], work: Callable[[C], Any], argv: Sequence[str] | None, prog: str) -> Any:
    """A command's ``main(argv)``: parse, then run ``work(config)`` under :func:`guard`."""
    cfg = parse(cls, argv, prog)
    return guard(cfg, lambda: work(cfg))


STARTED: float | None = None
"""``time.perf_counter()`` when ``run_module`` began (None when a command runs through ``main``):
what a command's start-up cost before its own code ran."""


def run_module(name: str) -> None:
    """The ``__main__`` path of command ``name``: parse (``--help`` answers here, before any
    heavy import), then import the command's module and run it; exits with its status."""
    global STARTED
    STARTED = time.perf_counter()
    from workbench.commands import COMMANDS

    cls, module = COMMANDS[name]
    cfg = parse(cls, sys.argv[1:], f"python -m {name}")
    guard(cfg, lambda: importlib.import_module(module).execute(cfg))
    raise SystemExit(0)
