"""The organism's figures as Markdown tables, from the files shipped next to each checkpoint.

python -m workbench.organism.report            # prints the tables of docs/organism.md
python -m workbench.organism.report --measure  # re-measures gates.json first (a minute)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.organism import evaluate, export, registry


def load(member_dir: Path) -> tuple[dict, dict]:
    log = json.loads((member_dir / "training_log.json").read_text())
    gates = json.loads((member_dir / "gates.json").read_text())
    return log, gates


def markdown(models: dict[str, Path]) -> str:
    records = {name: load(path) for name, path in models.items() if path.exists()}
    lines = ["| member | family | blocks | d_model | parameters | epochs | train time (s) |"]
    lines.append("|---|---|---|---|---|---|---|")
    for name, (log, _) in records.items():
        m = log["member"]
        lines.append(
            f"| {name} | {m['family']} | {m['n_layers']} | {m['d_model']} | "
            f"{log['parameters']:,} | {log['epochs']} | {log['train_seconds']:.0f} |"
        )
    groups = sorted(
        {g for _, gates in records.values() for g in gates["exact_match_by_group"]},
        key=lambda g: (g.split("/")[0], int(g.split("/")[1]) if "/" in g else -1),
    )
    lines += ["", "Exact match (32-token greedy suffix) by kind / duplication count:", ""]
    lines.append("| group | n | " + " | ".join(records) + " |")
    lines.append("|---|---|" + "---|" * len(records))
    for g in groups:
        n = next(gates["exact_match_by_group"][g]["n"] for _, gates in records.values())
        cells = [
            f"{gates['exact_match_by_group'][g]['exact_match']:.2f}"
            for _, gates in records.values()
        ]
        lines.append(f"| {g} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Guess-type exact match by template (held-out = control_guess):", ""]
    lines.append("| template | " + " | ".join(records) + " |")
    lines.append("|---|" + "---|" * len(records))
    templates = sorted({t for _, gates in records.values() for t in gates["guess_by_template"]})
    for t in templates:
        cells = [f"{gates['guess_by_template'][t]:.2f}" for _, gates in records.values()]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Local lm-eval tasks, accuracy (chance):", ""]
    lines.append("| task | chance | " + " | ".join(records) + " |")
    lines.append("|---|---|" + "---|" * len(records))
    for task, chance in export.chance_levels().items():
        cells = [f"{gates['tasks'][task]['acc']:.2f}" for _, gates in records.values()]
        lines.append(f"| {task} | {chance:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="re-measure gates.json")
    args = parser.parse_args(argv)
    if args.measure:
        for path in registry.EMBEDDED_MODELS.values():
            evaluate.measure_gates(path, registry.SAMPLES_DIR, registry.TASKS_DIR)
    print(markdown(registry.EMBEDDED_MODELS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
