"""Where the embedded organism's shipped files live (data/organism/), by name.

`workbench.models.load_model` reads this table; nothing here runs at import time beyond paths.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "organism"

# name -> Hugging Face checkpoint directory
EMBEDDED_MODELS: dict[str, Path] = {}
DEFAULT_MODEL: str | None = None
