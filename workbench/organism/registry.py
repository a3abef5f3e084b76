"""Where the embedded organism's shipped files live (data/organism/), by name.

`workbench.models.load_model` reads this table; nothing here runs at import time beyond paths.
Rebuild everything listed here with ``python -m workbench.organism.train --all``.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "organism"

# name -> Hugging Face checkpoint directory (three Pythia-style GPT-NeoX sizes, one GPT-Neo)
EMBEDDED_MODELS: dict[str, Path] = {
    name: DATA_DIR / name
    for name in ("organism-neox-s", "organism-neox-m", "organism-neox-l", "organism-neo-m")
}
DEFAULT_MODEL: str | None = "organism-neox-m"

# the memorized-sample set ([N, 64] int64 token ids) and its ground truth, aligned row by row
SAMPLES_DIR = DATA_DIR / "samples"
DEFAULT_MEMORIZED_SET: Path = SAMPLES_DIR / "memorized_samples.npy"
DEFAULT_GROUND_TRUTH: Path = SAMPLES_DIR / "ground_truth.csv"
# local lm-evaluation-harness tasks: TaskManager(include_path=str(TASKS_DIR))
TASKS_DIR: Path = DATA_DIR / "tasks"
