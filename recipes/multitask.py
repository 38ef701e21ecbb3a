"""multitask: one LoRA adapter trained on a weighted mixture of several recipes' data, each task scored its own way.

Supports
  - Any recipes as tasks: `recipe.tasks.<task name>` holds that recipe's whole config (composed from its own
    conf/recipe/<name>.yaml by the defaults list of conf/recipe/multitask.yaml, so every task key is overridable:
    `recipe.tasks.sentiment.data.train=my.csv`).
  - Weights (`recipe.weights.<task>`): each task's share of the training mixture relative to its own size. A weight
    of 1 takes a task's training records once, 2 takes them twice, 0.5 a seeded half; validation and test
    splits are never re-weighted.
  - Tasks whose examples have different shapes (prompt/completion and multi-turn `messages`): when any task gives
    `messages`, every example is written as `messages` and the loss is taken on assistant turns only, which for
    a prompt/completion task is exactly its completion.
  - Metrics: each task's own metrics side by side under `tasks.<task>`, with `<task>/<metric>` copies of each
    task's primary metric at the top level; primary: `mean_primary`, the mean of the tasks' primary metrics
    (each taken so that higher is better: a lower-is-better metric such as perplexity is not averaged in).

Raises FtkitError (exit 2) for
  - no tasks, a task whose recipe is multitask itself, a weight for an unknown task, or a negative weight;
  - a task that splits one file (recipe.tasks.<task>.data.split or folds): a run records one split of one file
    (ftkit.data.splits), and a mixture has a file per task; each task's files are read as they are;
  - anything a task's own recipe raises for its config or data (with the task's keys, file:line for records).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from ftkit.errors import FtkitError, closest


@dataclass
class MultitaskConfig:
    name: str = MISSING
    tasks: dict[str, Any] = field(default_factory=dict)  # task name -> that recipe's config
    weights: dict[str, float] = field(default_factory=dict)  # task name -> mixture weight (default 1.0)
    seed: int = 42  # for fractional weights


SCHEMA = MultitaskConfig


class MultitaskRecipe:
    primary_metric = "mean_primary"
    greater_is_better = True
    trains_with = "sft"
    sft_config: ClassVar[dict[str, Any]] = {}
    serves: ClassVar[tuple[str, ...]] = ()  # ftkit serve: chat only (a request would not say which task it is)
    split_reader = None  # each task reads its own files; no split of one file to record

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        from ftkit.recipes import get_recipe_class

        names = list(cfg.tasks)
        if not names:
            raise FtkitError(
                "recipe=multitask has no tasks", "add some, e.g. '+recipe@recipe.tasks.ner=ner'", "recipe.tasks"
            )
        for name in names:
            task = cfg.tasks[name]
            if task.get("name") == "multitask":
                raise FtkitError(
                    f"task {name!r} is itself a multitask recipe", "list plain recipes as tasks", f"recipe.tasks.{name}"
                )
            get_recipe_class(task.name).check_config(task)
            data = task.get("data")
            if data is not None and (data.get("split") is not None or data.get("folds") is not None):
                key = "split" if data.get("split") is not None else "folds"
                raise FtkitError(
                    f"task {name!r} splits one file (recipe.tasks.{name}.data.{key}), and a multitask run reads each "
                    "task's files as they are",
                    f"give the task its files (recipe.tasks.{name}.data.train / validation / test) and set "
                    f"recipe.tasks.{name}.data.{key}=null",
                    f"recipe.tasks.{name}.data.{key}",
                )
        for name, weight in cfg.weights.items():
            if name not in names:
                raise FtkitError(
                    f"recipe.weights names {name!r}, which is not a task",
                    f"weight one of the tasks ({', '.join(names)}); {closest(str(name), names)}",
                    f"recipe.weights.{name}",
                )
            if weight < 0:
                raise FtkitError(f"recipe.weights.{name} is {weight}", "use a weight >= 0", f"recipe.weights.{name}")

    def __init__(self, cfg: DictConfig) -> None:
        from ftkit.recipes import get_recipe_class

        self.cfg = cfg
        self.tasks = {name: get_recipe_class(task.name)(task) for name, task in cfg.tasks.items()}
        self.messages_mode = any(t.sft_config.get("assistant_only_loss") for t in self.tasks.values())
        self.sft_config = {"assistant_only_loss": True} if self.messages_mode else {}

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        """Train: the weighted mixture, shuffled. Validation / test: the tasks' records interleaved round-robin,
        so a capped prefix (evaluate.max_examples) still holds every task."""
        per_task = []
        for name, task in self.tasks.items():
            records = task.load_split(split)
            if records is None:
                continue
            if split == "train":
                records = self._weighted(records, float(self.cfg.weights.get(name, 1.0)), name)
            per_task.append([{**record, "task": name} for record in records])
        if not per_task:
            return None
        if split == "train":
            mixture = [record for records in per_task for record in records]
            random.Random(self.cfg.seed).shuffle(mixture)
            return mixture
        longest = max(len(records) for records in per_task)
        return [records[i] for i in range(longest) for records in per_task if i < len(records)]

    def _weighted(self, records: list[dict[str, Any]], weight: float, name: str) -> list[dict[str, Any]]:
        whole, fraction = int(weight), weight - int(weight)
        extra = random.Random(f"{self.cfg.seed}:{name}").sample(records, round(fraction * len(records)))
        return records * whole + extra

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        example = self.tasks[record["task"]].to_example(record)
        if self.messages_mode and "messages" not in example:
            return {"messages": [*example["prompt"], *example["completion"]]}
        return example

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        task = raw.get("task")
        if task not in self.tasks:
            raise FtkitError(
                f"the input has task {task!r}, which is not one of {', '.join(self.tasks)}",
                'give each line a "task" field naming one of the tasks',
                where=where,
            )
        return {**self.tasks[task].input_record(raw, where), "task": task}

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[Any]:
        predictions: list[Any] = [None] * len(records)
        for name, task in self.tasks.items():
            index = [i for i, r in enumerate(records) if r["task"] == name]
            if index:
                task_predictions = task.predict(model, tokenizer, [records[i] for i in index], batch_size)
                for i, prediction in zip(index, task_predictions, strict=True):
                    predictions[i] = {"task": name, **prediction} if isinstance(prediction, dict) else prediction
        return predictions

    def parse_output(self, text: str) -> Any:
        raise ValueError("a multitask output has no single format: parse it with its task's recipe (self.tasks[task])")

    def score(self, predictions: list[Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        per_task: dict[str, Any] = {}
        for name, task in self.tasks.items():
            index = [i for i, r in enumerate(records) if r["task"] == name]
            if index:
                per_task[name] = task.score([predictions[i] for i in index], [records[i] for i in index])
        result: dict[str, Any] = {}
        higher = []
        for name, metrics in per_task.items():
            primary = self.tasks[name].primary_metric
            result[f"{name}/{primary}"] = metrics[primary]
            if self.tasks[name].greater_is_better:
                higher.append(metrics[primary])
        result["mean_primary"] = sum(higher) / len(higher) if higher else float("nan")
        result["examples"] = len(records)
        result["tasks"] = per_task
        return result


RECIPE = MultitaskRecipe
