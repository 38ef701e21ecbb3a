"""tickets: route a maintenance ticket to its category (classification by label scoring).

Supports
  - JSONL (one object per line) or CSV (header row) files; the text and label fields are configurable
    (recipe.data.text_field, recipe.data.label_field); bundled data: bundled:tickets/{train,validation,test}.jsonl.
  - Any label set (recipe.labels), including labels that share a prefix ("Pump", "Pump/Seal"): prediction scores
    each label's whole token sequence given the prompt (ftkit.scoring), it never parses free text.
  - Metrics: accuracy (primary), macro-F1, per-class precision/recall/F1, confusion matrix.

Raises FtkitError (exit 2) for
  - an empty or duplicated label set, or a prompt_template without {text};
  - a record without its text field, with empty text, or with a label outside recipe.labels (file:line given).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ftkit.data import read_records, require_text, resolve_path
from ftkit.errors import FtkitError, closest


class TicketsRecipe:
    primary_metric = "accuracy"
    greater_is_better = True

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        labels = list(cfg.labels)
        if len(labels) < 2:
            raise FtkitError(
                "a classification recipe needs at least two labels", "list them in recipe.labels", where="recipe.labels"
            )
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise FtkitError(
                f"recipe.labels repeats {', '.join(duplicated)}", "list every label once", where="recipe.labels"
            )
        if "{text}" not in cfg.prompt_template:
            raise FtkitError(
                "recipe.prompt_template has no {text} placeholder",
                "include {text} where the ticket goes, e.g. 'Ticket: {text}'",
                where="recipe.prompt_template",
            )

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.labels: list[str] = list(cfg.labels)

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        spec = self.cfg.data.get(split)
        if spec is None:
            return None
        path = resolve_path(spec, key=f"recipe.data.{split}")
        text_field, label_field = self.cfg.data.text_field, self.cfg.data.label_field
        records = []
        for line, raw in read_records(path):
            where = f"{path}:{line}"
            text = require_text(raw, text_field, where)
            label = require_text(raw, label_field, where).strip()
            if label not in self.labels:
                raise FtkitError(
                    f"label {label!r} is not one of recipe.labels ({', '.join(self.labels)})",
                    f"correct the record, or add the label to recipe.labels; {closest(label, self.labels)}",
                    where=where,
                )
            records.append({"text": text, "label": label, "source": where})
        limit = self.cfg.data.get("max_train_examples")
        return records[:limit] if split == "train" and limit else records

    def prompt(self, text: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return [*messages, {"role": "user", "content": self.cfg.prompt_template.format(text=text)}]

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": self.prompt(record["text"]),
            "completion": [{"role": "assistant", "content": record["label"]}],
        }

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.scoring import label_logprobs

        scores = label_logprobs(model, tokenizer, [self.prompt(r["text"]) for r in records], self.labels, batch_size)
        return [
            {"label": self.labels[int(row.argmax())], "scores": dict(zip(self.labels, row.tolist(), strict=True))}
            for row in scores
        ]

    def parse_output(self, text: str) -> str | None:
        """The label a free-text answer names: exact, then case-insensitive, then the longest label it starts with."""
        answer = text.strip()
        by_lower = {label.lower(): label for label in self.labels}
        if answer.lower() in by_lower:
            return by_lower[answer.lower()]
        starts = [label for label in self.labels if answer.lower().startswith(label.lower())]
        return max(starts, key=len) if starts else None

    def score(self, predictions: list[dict], records: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit.metrics import classification_metrics

        return classification_metrics([r["label"] for r in records], [p["label"] for p in predictions], self.labels)


RECIPE = TicketsRecipe
