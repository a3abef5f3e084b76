"""Guess or Recall: memorization taxonomies, attention-map CNN classifiers and their localization.

After Dentan, Buscaldi, Vanier 2025, "Guess or Recall? Training CNNs to Classify and Localize
Memorization in LLMs" (arXiv 2508.02573), with Prashanth et al. 2024's "Recite, Reconstruct,
Recollect" taxonomy (arXiv 2406.17746) and the 32-extractable memorization of Biderman et al. 2023.

- :mod:`~workbench.taxonomy.labels`: templates, ROUGE on token ids, both taxonomies;
- :mod:`~workbench.taxonomy.features`: head-pooled attention maps, streamed to disk;
- :mod:`~workbench.taxonomy.cnn`: the eight CNN variants, balanced training, min-F1, confusion;
- :mod:`~workbench.taxonomy.localize`: guided-backpropagation maps per layer and class;
- :mod:`~workbench.taxonomy.split_effects`: memorization drop per short-circuited block by class;
- :mod:`~workbench.taxonomy.pipeline` / ``python -m workbench.taxonomy``: the whole study as a run.
"""

# Names are imported on first use (PEP 562), so that ``python -m workbench.taxonomy --help``
# does not import torch. Each name and the submodule that defines it:
_WHERE = {
    "AttentionCNN": "cnn",
    "CNNVariant": "cnn",
    "GUESS_RECALL": "labels",
    "LabelConfig": "labels",
    "RECITE_RECONSTRUCT_RECOLLECT": "labels",
    "TAXONOMIES": "labels",
    "TaxonomyConfig": "pipeline",
    "TrainConfig": "cnn",
    "VARIANTS": "cnn",
    "attention_features": "features",
    "class_drop": "split_effects",
    "clean_verdicts": "split_effects",
    "confusion_matrix": "cnn",
    "drop_figure": "split_effects",
    "drop_matrix": "split_effects",
    "evaluate": "cnn",
    "guess_recall": "labels",
    "guided_gradients": "localize",
    "head_patterns": "features",
    "label_samples": "labels",
    "layer_summary": "localize",
    "load_features": "features",
    "localization_maps": "localize",
    "min_f1": "cnn",
    "numeric_values": "labels",
    "per_class_f1": "cnn",
    "recite_reconstruct_recollect": "labels",
    "rouge_l": "labels",
    "rouge_n": "labels",
    "run": "pipeline",
    "template": "labels",
    "top_layers": "localize",
    "train_cnn": "cnn",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "GUESS_RECALL",
    "RECITE_RECONSTRUCT_RECOLLECT",
    "TAXONOMIES",
    "VARIANTS",
    "AttentionCNN",
    "CNNVariant",
    "LabelConfig",
    "TaxonomyConfig",
    "TrainConfig",
    "attention_features",
    "class_drop",
    "clean_verdicts",
    "confusion_matrix",
    "drop_figure",
    "drop_matrix",
    "evaluate",
    "guess_recall",
    "guided_gradients",
    "head_patterns",
    "label_samples",
    "layer_summary",
    "load_features",
    "localization_maps",
    "min_f1",
    "numeric_values",
    "per_class_f1",
    "recite_reconstruct_recollect",
    "rouge_l",
    "rouge_n",
    "run",
    "template",
    "top_layers",
    "train_cnn",
]
