"""Measure the peak resident memory one ``evaluate_batch`` call adds, beside its estimate.

Used by ``tests/test_memory.py`` (in the test process) and ``tests/benchmarks/bench_memory.py``
(one fresh process per batch size: ``python tests/memory_probe.py --batch 64``, one JSON line per
batch on stdout).

On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the process's high-water mark
``VmHWM``; the measured peak is ``VmHWM`` after the call minus ``VmRSS`` just before it. Memory
glibc keeps after earlier calls would make the baseline high and the measurement low, so the
probe first gives every free heap page back (``malloc_trim(0)``). The data is the main organism
member on its memorized set under 13 interventions (clean + every single block), the default
command's sweep.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch

from workbench import memory
from workbench.decode import evaluate_batch
from workbench.interventions import CLEAN, single_block_sweep
from workbench.organism import registry

PREFIX = 32


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def supported() -> bool:
    """Whether this system lets a process reset and read its resident high-water mark."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmHWM") > 0
    except (OSError, RuntimeError):
        return False


def sweep_of(model) -> list:
    return [CLEAN, *single_block_sweep(range(model.cfg.n_layers))]


def measure(model, tokens: np.ndarray, interventions: list) -> dict:
    """The peak RSS increase of one ``evaluate_batch`` on ``tokens``, and its estimate."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    results = evaluate_batch(model, torch.from_numpy(tokens), interventions, prefix_len=PREFIX)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    del results
    est = memory.estimate(model, len(tokens), tokens.shape[1], PREFIX, interventions)
    return {
        "batch": len(tokens),
        "measured": peak - baseline,
        "estimate": est.total,
        "live": est.live,
        "baseline": baseline,
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, action="append", required=True)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    torch.set_num_threads(1)
    from workbench.models import load_model

    model = load_model(dtype=args.dtype)
    tokens = np.load(registry.DEFAULT_MEMORIZED_SET)
    interventions = sweep_of(model)
    evaluate_batch(model, torch.from_numpy(tokens[:2]), interventions, prefix_len=PREFIX)  # warm
    for batch in args.batch:
        print(json.dumps(measure(model, tokens[:batch], interventions)), flush=True)


if __name__ == "__main__":
    main()
