"""The memory estimate against the measured peak RSS, per batch size (run by hand).

    python tests/benchmarks/bench_memory.py                      # batches 32 64 128 256
    python tests/benchmarks/bench_memory.py --batches 32 128 --no-mmap --dtype bfloat16

Each batch size runs in a fresh process (``tests/memory_probe.py``: the main organism member,
its memorized set, the clean model and every block short-circuited alone, one thread): the peak
RSS one ``evaluate_batch`` call adds over the RSS after loading the model and data, against
``workbench.memory.estimate`` (``live``: the tensors it counts; ``estimate``: with the allocator
allowance). With ``--mmap`` (default on), each batch runs a second time with glibc's mmap
threshold fixed at 64 kB (``MALLOC_MMAP_THRESHOLD_``), so every large block is returned to the
system when freed: its peak is close to the live tensors alone, and the ratio of the two
measurements is what heap fragmentation adds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "memory_probe.py"


def probe(batch: int, mmap: bool, dtype: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, str(PROBE), "--batch", str(batch), "--dtype", dtype]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--mmap", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtype", default="float32", help="the model's (bfloat16: float32 log-probs)")
    args = p.parse_args()
    rows = []
    for batch in args.batches:
        row = probe(batch, mmap=False, dtype=args.dtype)
        if args.mmap:
            row["measured_mmap"] = probe(batch, mmap=True, dtype=args.dtype)["measured"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    df = pd.DataFrame(rows).set_index("batch")
    mb = ["estimate", "live", "measured"] + (["measured_mmap"] if args.mmap else [])
    table = (df[mb] / 1e6).round(1).add_suffix(" MB")
    table["estimate / measured"] = (df["estimate"] / df["measured"]).round(2)
    table["live / measured"] = (df["live"] / df["measured"]).round(2)
    if args.mmap:
        table["measured / measured_mmap"] = (df["measured"] / df["measured_mmap"]).round(2)
    table["seconds"] = df["seconds"].round(1)
    print(table.to_markdown())


if __name__ == "__main__":
    main()
