"""The organism's figures as Markdown tables, from the files shipped next to each checkpoint.

python -m workbench.organism.report            # prints the tables of docs/organism.md
python -m workbench.organism.report --measure  # re-measures every gates.json first
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.organism import evaluate, registry, tasks


def load(member_dir: Path) -> tuple[dict, dict]:
    log = json.loads((member_dir / "training_log.json").read_text())
    gates = json.loads((member_dir / "gates.json").read_text())
    return log, gates


def _rate(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} [{lo:.2f}, {hi:.2f}]"


def markdown(models: dict[str, Path]) -> str:
    records = {n: load(p) for n, p in models.items() if (p / "gates.json").is_file()}
    names = list(records)
    lines = [
        "| member | family | blocks | d_model | heads | seed | parameters | steps | CPU min "
        "| wall min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (log, _) in records.items():
        m = log["member"]
        lines.append(
            f"| {name} | {m['family']} | {m['n_layers']} | {m['d_model']} | {m['n_heads']} | "
            f"{m['seed']} | {log['parameters']:,} | {log['steps']} | "
            f"{log['cpu_seconds'] / 60:.1f} | {log['train_seconds'] / 60:.1f} |"
        )
    header = "| | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(names)
    for set_name in ("memorized", "control"):
        lines += [
            "",
            f"Exact match on the {set_name} set (95% Wilson intervals):",
            "",
            header,
            rule,
        ]
        first = records[names[0]][1]["sets"][set_name]
        lines.append(
            "| all | "
            + " | ".join(_rate(g["sets"][set_name]["all"]) for _, g in records.values())
            + " |"
        )
        for key in ("by_kind", "by_dup_bin"):
            for cell in first[key]:
                row = [_rate(g["sets"][set_name][key][cell]) for _, g in records.values()]
                label = f"{cell} (n={first[key][cell]['n']})"
                lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += ["", "Local lm-eval tasks, accuracy [95% interval] (chance):", "", header, rule]
    for task, chance in tasks.chance_levels().items():
        row = []
        for _, g in records.values():
            t = g["tasks"][task]
            row.append(f"{t['acc']:.3f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]")
        lines.append(f"| {task} ({chance:.2f}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="re-measure gates.json")
    args = parser.parse_args(argv)
    if args.measure:
        for path in registry.EMBEDDED_MODELS.values():
            if (path / "config.json").is_file():
                evaluate.measure_gates(path, registry.SAMPLES_DIR, registry.TASKS_DIR)
    print(markdown(registry.EMBEDDED_MODELS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
