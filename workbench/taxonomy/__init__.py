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

from workbench.taxonomy.cnn import (
    VARIANTS,
    AttentionCNN,
    CNNVariant,
    TrainConfig,
    confusion_matrix,
    evaluate,
    min_f1,
    per_class_f1,
    train_cnn,
)
from workbench.taxonomy.features import attention_features, head_patterns, load_features
from workbench.taxonomy.labels import (
    GUESS_RECALL,
    RECITE_RECONSTRUCT_RECOLLECT,
    TAXONOMIES,
    LabelConfig,
    guess_recall,
    label_samples,
    numeric_values,
    recite_reconstruct_recollect,
    rouge_l,
    rouge_n,
    template,
)
from workbench.taxonomy.localize import (
    guided_gradients,
    layer_summary,
    localization_maps,
    top_layers,
)
from workbench.taxonomy.pipeline import TaxonomyConfig, run
from workbench.taxonomy.split_effects import class_drop, clean_verdicts, drop_figure, drop_matrix

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
