"""Where the embedded organism's shipped files live (data/organism/), by name.

`workbench.models.load_model` reads this table; nothing here runs at import time beyond paths.
Rebuild everything listed here with ``python -m workbench.organism.build`` (docs/organism.md).
"""

from pathlib import Path

from workbench.organism.members import MAIN_MEMBER, SUITE

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "organism"

# name -> Hugging Face checkpoint directory (Pythia-style GPT-NeoX members, one GPT-Neo)
EMBEDDED_MODELS: dict[str, Path] = {name: DATA_DIR / name for name in SUITE}
DEFAULT_MODEL: str | None = MAIN_MEMBER
CHECKPOINTS_SUBDIR = "checkpoints"  # <member>/checkpoints/step<N>/: training checkpoints

# sample sets ([N, 64] int64 token ids: 32-token prefix + 32-token suffix) and their ground truth
SAMPLES_DIR = DATA_DIR / "samples"
DEFAULT_MEMORIZED_SET: Path = SAMPLES_DIR / "memorized.npy"
DEFAULT_GROUND_TRUTH: Path = SAMPLES_DIR / "memorized.csv"
CONTROL_SET: Path = SAMPLES_DIR / "control.npy"
CONTROL_GROUND_TRUTH: Path = SAMPLES_DIR / "control.csv"
WINDOWS_TABLE: Path = SAMPLES_DIR / "windows.parquet"  # every distinct window of the stream
# the taxonomy's default: the memorized rows, then the control rows (it needs both classes)
TAXONOMY_SET: Path = SAMPLES_DIR / "taxonomy.npy"
TAXONOMY_GROUND_TRUTH: Path = SAMPLES_DIR / "taxonomy.csv"
# local lm-evaluation-harness tasks: TaskManager(include_path=str(TASKS_DIR))
TASKS_DIR: Path = DATA_DIR / "tasks"
CORPUS_MANIFEST: Path = DATA_DIR / "corpus" / "manifest.json"


def checkpoint_dir(name: str, step: int) -> Path:
    """The directory of an embedded member's training checkpoint ``step`` (the final one too)."""
    base = EMBEDDED_MODELS[name]
    if (base / CHECKPOINTS_SUBDIR / f"step{step}").is_dir():
        return base / CHECKPOINTS_SUBDIR / f"step{step}"
    if step == final_step(name):
        return base
    steps = ", ".join(str(s) for s in checkpoint_steps(name)) or "none"
    raise KeyError(f"{name} has no training checkpoint {step}; it has steps {steps}")


def final_step(name: str) -> int | None:
    import json

    log = EMBEDDED_MODELS[name] / "training_log.json"
    return json.loads(log.read_text())["steps"] if log.is_file() else None


def checkpoint_steps(name: str) -> list[int]:
    """Every training step of ``name`` that ``load_model(name, checkpoint=step)`` can load."""
    sub = EMBEDDED_MODELS[name] / CHECKPOINTS_SUBDIR
    steps = [int(p.name[4:]) for p in sub.glob("step*") if p.name[4:].isdigit()]
    final = final_step(name)
    return sorted(set(steps) | ({final} if final is not None else set()))
