"""Task recipes. A recipe is one module here plus conf/recipe/<name>.yaml, implementing `Recipe`.

A recipe module is thin: a subclass of a task in ftkit.tasks (classification, NER, instruct) or its own class
(multitask), its schema (SCHEMA, when it has fields of its own) and a docstring that says what it supports and
raises. A recipe knows its task and nothing about launching, logging or PEFT. Recipe modules import nothing heavy
at module level, so configs can be checked before torch loads.
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
    trains_with: ClassVar[str]  # "sft": TRL's SFTTrainer; "dpo": its DPOTrainer (ftkit.training.preference_trainer)
    # SFTConfig settings the task needs (e.g. {"assistant_only_loss": True}); trainer.* overrides still win.
    sft_config: ClassVar[dict[str, Any]]

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Cross-field rules on the recipe config; raise FtkitError. Runs before anything loads. A recipe may also
        define check_run(cls, cfg) for rules on the whole config (ftkit.config.checks calls it when present)."""

    def __init__(self, cfg: DictConfig) -> None: ...

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        """Read and validate one split's records (train / validation / test); None if not configured. A split of
        one file (recipe.data.split / folds) comes from split_reader; commands ask ftkit.data.splits.read_splits."""

    # ftkit.data.splits.SplitReader: the files, or shares of one file, and the record of what went where;
    # None for a recipe whose records come from other recipes' readers (multitask).
    split_reader: Any

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as a TRL conversational example: {"prompt": [...], "completion": [...]} or {"messages": [...]}."""

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """A record predict() accepts, from one unlabelled input object (`ftkit predict`); FtkitError at `where`."""

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[Any]:
        """Predictions for records, in order; each JSON-serialisable (they are written to predictions/*.jsonl)."""

    def parse_output(self, text: str) -> Any:
        """A prediction from free model output (for generation-based use), or None when it cannot be parsed."""

    def score(self, predictions: list[Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        """Metrics of predictions against the records' targets; must include primary_metric."""

    # ---- serving: what `ftkit serve` asks of a recipe, besides chat -----------------------------------------
    serves: ClassVar[tuple[str, ...]]  # the requests it answers: "classify" (/v1/classify), "extract" (/v1/extract)

    def prompt(self, text: str) -> list[dict[str, str]]:
        """The chat messages that ask the model about one text (for the kinds in `serves`)."""

    def classify(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        """With "classify" in serves: {"label", "probabilities": {label: p}} per text."""

    def extract(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        """With "extract" in serves: {"entities": [{"text", "type", "start", "end"}], "parsed", "unaligned",
        "output"} per text."""


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def schemas() -> dict[str, type]:
    """Each recipe module's own structured config (its SCHEMA dataclass), by recipe name."""
    found = {}
    for name in names():
        schema = getattr(importlib.import_module(f"{__name__}.{name}"), "SCHEMA", None)
        if schema is not None:
            found[name] = schema
    return found


def trainer_profile(name: str) -> str:
    """The trainer option (conf/trainer/) a recipe starts with unless the command line picks one: the recipe class's
    trainer_profile (preference: DPO's learning rate and sampling), else default."""
    if name not in names():
        return "default"  # Hydra reports the unknown recipe option itself
    return getattr(get_recipe_class(name), "trainer_profile", "default")


def get_recipe_class(name: str) -> type[Recipe]:
    if name not in names():
        raise FtkitError(
            f"no recipe module called {name!r}",
            f"set recipe.name to one of {', '.join(names())}; {closest(name, names())}",
            where="recipe.name",
        )
    return importlib.import_module(f"{__name__}.{name}").RECIPE
