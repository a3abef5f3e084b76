"""Time a model × checkpoint × block memorization sweep of the organism: serial against Ray.

Run by hand (not collected by pytest):

    python tests/benchmarks/bench_ray.py                          # 3 checkpoints, blocks 0-3
    python tests/benchmarks/bench_ray.py --checkpoints 100 1400 --blocks 0-5 --n 128 --workers 2

Both runs are the same command (``python -m workbench.memorization`` with ``--checkpoints``) into
fresh run directories, in this process: ``--executor serial`` (one unit after another, torch on
``--threads`` threads) and ``--executor ray`` on a local Ray instance of ``--workers`` CPUs (one
task per unit, one torch thread each; the workers load their checkpoints themselves). The script
checks that both tables are identical, then prints the wall times, the time Ray took to start
(reported apart: a cluster is started once for many sweeps) and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workbench import memorization
from workbench.organism import registry


def sweep(data: Path, out: Path, args, *extra: str) -> float:
    argv = ["--model", args.model, "--checkpoints", *map(str, args.checkpoints)]
    argv += ["--blocks", args.blocks, "--data", str(data), "--batch-size", str(args.batch_size)]
    argv += ["--device", "cpu", "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    memorization.main(argv)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism-neox-m")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[100, 700, 3518])
    p.add_argument("--blocks", default="0-3")
    p.add_argument("--n", type=int, default=64, help="samples of the memorized set")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the serial run")
    args = p.parse_args()

    import ray
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "set.npy"
    np.save(data, np.load(registry.DEFAULT_MEMORIZED_SET, mmap_mode="r")[: args.n])
    n_units = len(args.checkpoints) * -(-args.n // args.batch_size)
    print(
        f"{args.model}: checkpoints {args.checkpoints}, blocks {args.blocks} (+ clean), "
        f"{args.n} samples in batches of {args.batch_size}: {n_units} units"
    )
    serial = sweep(data, tmp / "serial", args, "--threads", str(args.threads))
    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - start
    on_ray = sweep(data, tmp / "ray", args, "--executor", "ray")
    ray.shutdown()
    a, b = (pd.read_parquet(tmp / d / "memorization.parquet") for d in ("serial", "ray"))
    assert a.equals(b), "the Ray table differs from the serial one"
    print(f"tables identical ({len(a)} rows)")
    print(f"serial ({args.threads} thread):    {serial:7.1f} s")
    print(f"ray ({args.workers} workers):        {on_ray:7.1f} s (+ {startup:.1f} s to start Ray)")
    print(f"ratio serial / ray:       {serial / on_ray:7.2f}x")
    print(f"ratio incl. Ray start-up: {serial / (on_ray + startup):7.2f}x")


if __name__ == "__main__":
    main()
