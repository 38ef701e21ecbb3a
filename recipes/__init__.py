"""Task recipes. A recipe is one module here plus conf/recipe/<name>.yaml, implementing `Recipe`.

A recipe knows its task and nothing about launching, logging or PEFT. Recipe modules import nothing heavy at
module level, so configs can be checked before torch loads.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar, Protocol

from omegaconf import DictConfig

from ftkit.errors import FtkitError, closest


class Recipe(Protocol):
    """What every recipe provides (see recipes/tickets.py for a complete one)."""

    primary_metric: ClassVar[str]  # key in score()'s result that selects and summarises runs
    greater_is_better: ClassVar[bool]

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Cross-field rules on the recipe config; raise FtkitError. Runs before anything loads."""

    def __init__(self, cfg: DictConfig) -> None: ...

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        """Read and validate one split's records (train / validation / test); None if not configured."""

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as a TRL conversational prompt-completion example: {"prompt": [...], "completion": [...]}."""

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[Any]:
        """Predictions for records, in order."""

    def parse_output(self, text: str) -> Any:
        """A prediction from free model output (for generation-based use), or None when it cannot be parsed."""

    def score(self, predictions: list[Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        """Metrics of predictions against the records' targets; must include primary_metric."""


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_recipe_class(name: str) -> type[Recipe]:
    if name not in names():
        raise FtkitError(
            f"no recipe module called {name!r}",
            f"set recipe.name to one of {', '.join(names())}; {closest(name, names())}",
            where="recipe.name",
        )
    return importlib.import_module(f"{__name__}.{name}").RECIPE
