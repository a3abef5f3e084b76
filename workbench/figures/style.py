"""What every figure shares: colours, titles, the plotly template, and picking a model."""

from __future__ import annotations

from workbench.tables import MissingColumns

COLORSCALE = "Blues"
CLEAN_COLOR = "red"
GROUP_COLORS = {"language": "#2ca02c", "reasoning": "#4c4cff", "other": "#7f7f7f"}
METRIC_TITLES = {
    "exact_match": "Exact match",
    "token_accuracy": "Token accuracy",
    "completion_entropy": "Completion entropy (nats)",
}
ACCURACY_TITLE = "Benchmark accuracy (mean over tasks)"
BLOCK_TITLE = "Short-circuited attention block"
MARKER_LINE = {"color": "#333", "width": 0.6}
TEMPLATE = "simple_white"


def pick_model(df, model: str | None) -> str:
    """``model`` if the table has it (else ``MissingColumns``); by default its first model."""
    models = list(dict.fromkeys(df["model"]))
    if model is None:
        if not models:
            raise MissingColumns("the table is empty")
        return models[0]
    if model not in models:
        raise MissingColumns(f"model {model!r} is not in the table; it has {models}")
    return model
