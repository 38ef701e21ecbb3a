"""tickets: route a maintenance ticket to its category (classification by label scoring).

Supports
  - JSONL (one object per line) or CSV (header row) files, or a Hugging Face dataset (hub:<dataset>[:<split>]);
    the text and label fields are configurable (recipe.data.text_field, recipe.data.label_field); bundled data:
    bundled:tickets/{train,validation,test}.jsonl.
  - Any label set (recipe.labels), including labels that share a prefix ("Pump", "Pump/Seal"): prediction scores
    each label's whole token sequence given the prompt (ftkit.tasks.scoring), it never parses free text.
  - Metrics: accuracy (primary), macro-F1, per-class precision/recall/F1, confusion matrix.
The mechanics are shared with every classification recipe (ftkit.tasks.classification.ClassificationTask).

Raises FtkitError (exit 2) for
  - an empty or duplicated label set, or a prompt_template without {text};
  - a record without its text field, with empty text, or with a label outside recipe.labels (file:line given);
  - a hub: dataset that cannot be loaded (Hub unreachable or offline, unknown dataset or split).
"""

from __future__ import annotations

from ftkit.tasks.classification import ClassificationTask


class TicketsRecipe(ClassificationTask):
    item = "ticket"


RECIPE = TicketsRecipe
