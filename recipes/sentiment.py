"""sentiment: financial news sentiment, a headline or post -> negative / neutral / positive (label scoring).

Supports
  - JSONL (one object per line) or CSV (header row) files, or a Hugging Face dataset (hub:<dataset>[:<split>],
    read with datasets.load_dataset; a local folder of data files works too); the text and label fields are
    configurable (recipe.data.text_field, recipe.data.label_field); bundled data:
    bundled:sentiment/{train,validation,test}.jsonl (synthetic headlines, recipes/data/sentiment/README.md).
  - Raw label values mapped to label names with recipe.label_map, as they appear in the data: ints or strings,
    e.g. recipe.label_map='{0: negative, 1: positive, 2: neutral}' (a CSV "0" and a JSON 0 both match the key 0).
    Unset (null), the label field must hold the label names themselves.
  - Any label set (recipe.labels; default negative, neutral, positive): prediction scores each label's whole
    token sequence given the prompt (ftkit.tasks.scoring), it never parses free text.
  - Metrics: accuracy (primary), macro-F1, per-class precision/recall/F1, confusion matrix.
The mechanics are shared with every classification recipe (ftkit.tasks.classification.ClassificationTask).

Raises FtkitError (exit 2) for
  - an empty or duplicated label set, or a prompt_template without {text};
  - an empty recipe.label_map, one that maps to a name outside recipe.labels, or maps the same value twice;
  - a record without its text field or with empty text, a label outside recipe.labels (no map), or a raw label
    value missing from recipe.label_map (file:line and the map given);
  - a hub: dataset that cannot be loaded (Hub unreachable or offline, unknown dataset or split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftkit.tasks.classification import ClassificationRecipeConfig, ClassificationTask


@dataclass
class SentimentRecipeConfig(ClassificationRecipeConfig):
    # Raw label value (int or string, as in the data) -> label name; None: the data holds the label names.
    # Typed Any, checked in check_config: OmegaConf can neither merge a command-line {0: negative} into a typed
    # dict that is None, nor add keys to an empty one under Hydra's struct mode.
    label_map: Any = None


class SentimentRecipe(ClassificationTask):
    item = "headline"


SCHEMA = SentimentRecipeConfig
RECIPE = SentimentRecipe
