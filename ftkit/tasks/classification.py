"""What every classification recipe shares: label records, label-scoring prediction, metrics.

A classification recipe (recipes/tickets.py, recipes/sentiment.py) subclasses `ClassificationTask`; its yaml
gives the labels, data fields and prompt, and the class only names what one text is ("ticket", "headline").

- Records: read with ftkit.tasks.readers (JSONL, CSV, bundled:, hub:), each {"text", "label", "source": file:line}.
- Prompt: recipe.prompt_template holds {text} (the text field) and may name other fields of the records, e.g.
  '{text} (site: {site})'; each record is checked for them as it is read, so a missing one is refused at its
  file:line before any model loads. Such a template cannot be served by /v1/classify, which sends only text.
- Labels: the label field holds a label name, or, when the recipe's schema has a `label_map` and it is set, a raw
  value (an int or a string, as it appears in the file) that the map turns into a label name.
- recipe.labels=auto: the labels are those of the training split (the mapped names with a label_map), most frequent
  first, ties by name; under k-fold (recipe.data.folds) those of the whole file, so every fold scores the same
  classes. A validation or test label the training split lacks is refused at its file:line, as are two labels that
  differ only in case, a label with spaces around it, and a training split with fewer than two labels. A run
  writes the list into its config.yaml and overrides.yaml (with_labels_read), so eval, serve and export load it
  with the labels it trained with.
- Splits: ftkit.data.splits.SplitReader (the files, or shares of one file stratified by label).
- Prediction: labels are scored as whole token sequences given the prompt (ftkit.tasks.scoring), to the end only those
  that can win unless recipe.score_all_labels; no free text is parsed.
- Metrics: accuracy (primary), macro-F1, per-class precision/recall/F1, confusion matrix (sklearn).

Nothing heavy is imported at module level: recipe modules are imported while configs are composed.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, open_dict

from ftkit.config.overrides import is_key
from ftkit.config.schema import DataConfig
from ftkit.data.splits import SplitReader
from ftkit.errors import FtkitError, closest
from ftkit.tasks.readers import is_integer, json_type, read_data, require_field, require_text

log = logging.getLogger("ftkit")

AUTO = "auto"  # recipe.labels=auto: the labels are read from the training split


@dataclass
class ClassificationRecipeConfig:
    name: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    # The label names, or auto: those of the training split, most frequent first. Typed Any (a list or the word
    # auto) and checked in check_config.
    labels: Any = MISSING
    # None: no system turn (the chat template may insert its own default); "": an empty one (fewest tokens)
    system_prompt: str | None = None
    prompt_template: str = "{text}"
    # false: only labels that can win are scored to the end (same prediction, faster); true: all labels' scores
    score_all_labels: bool = False


def raw_key(value: Any) -> str | None:
    """How a raw label value is matched against recipe.label_map: text stripped, numbers and booleans as written.

    CSV cells are always text and JSON keeps numbers, so the key 0 matches both a CSV "0" and a JSON 0.
    None for values that cannot be a label (null, lists, objects).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def describe_map(label_map: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}: {label}" for key, label in label_map.items()) + "}"


class ClassificationTask:
    """Text -> one of recipe.labels. Subclasses set `item` (what one text is, for messages and examples)."""

    primary_metric = "accuracy"
    greater_is_better = True
    serves: ClassVar[tuple[str, ...]] = ("classify",)  # ftkit serve's /v1/classify
    trains_with = "sft"
    sft_config: ClassVar[dict[str, Any]] = {}  # prompt-completion examples: TRL's completion-only loss is the default
    item: ClassVar[str] = "text"

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        if cfg.labels != AUTO:
            cls.check_labels(cfg)
        fields = template_fields(cfg.prompt_template, "recipe.prompt_template")
        if "text" not in fields:
            raise FtkitError(
                "recipe.prompt_template has no {text} placeholder",
                f"include {{text}} where the {cls.item} goes, e.g. '{cls.item.capitalize()}: {{text}}'",
                where="recipe.prompt_template",
            )
        label_field = OmegaConf.select(cfg, "data.label_field", default="label")
        if label_field in fields:
            raise FtkitError(
                f"recipe.prompt_template uses {{{label_field}}}, the label field, so every prompt would hold its own "
                "answer",
                f"remove {{{label_field}}} from recipe.prompt_template",
                where="recipe.prompt_template",
            )
        cls.label_map_of(cfg)

    @staticmethod
    def check_labels(cfg: DictConfig) -> None:
        """recipe.labels given as a list: at least two distinct, non-empty names without spaces around them."""
        if not isinstance(cfg.labels, ListConfig):
            raise FtkitError(
                f"recipe.labels must be a list of label names or the word {AUTO}, got {cfg.labels!r}",
                "list them, e.g. 'recipe.labels=[Pump,Motor,Valve]', or read them from the training split: "
                f"recipe.labels={AUTO}",
                where="recipe.labels",
            )
        labels = label_names(cfg.labels)
        if len(labels) < 2:
            raise FtkitError(
                "a classification recipe needs at least two labels", "list them in recipe.labels", where="recipe.labels"
            )
        blank = [i for i, label in enumerate(labels) if not isinstance(label, str) or not label.strip()]
        if blank:
            raise FtkitError(
                f"recipe.labels[{blank[0]}] is {labels[blank[0]]!r}: a label must be a non-empty word the model can "
                "write as its answer",
                "give every label a name, e.g. 'recipe.labels=[Pump,Motor,Valve]'",
                where="recipe.labels",
            )
        spaced = [label for label in labels if label != label.strip()]
        if spaced:
            raise FtkitError(
                f"recipe.labels has {spaced[0]!r}, with spaces around it, which the records' labels would never match",
                f"write it without the spaces: {spaced[0].strip()!r}",
                where="recipe.labels",
            )
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise FtkitError(
                f"recipe.labels repeats {', '.join(duplicated)}", "list every label once", where="recipe.labels"
            )

    @staticmethod
    def label_map_of(cfg: DictConfig) -> dict[str, str] | None:
        """recipe.label_map with its keys as raw_key() writes them, checked; None when unset or not in the schema."""
        label_map = cfg.get("label_map")
        if label_map is None:
            return None
        if not isinstance(label_map, DictConfig):
            raise FtkitError(
                f"recipe.label_map must map raw label values to labels, got {label_map!r}",
                "write it as a mapping, e.g. recipe.label_map='{0: negative, 1: positive, 2: neutral}'",
                where="recipe.label_map",
            )
        if not label_map:
            raise FtkitError(
                "recipe.label_map is empty",
                "map every raw label value to a label, e.g. recipe.label_map={0: negative, 1: positive}, or set "
                "recipe.label_map=null when the data holds the label names themselves",
                where="recipe.label_map",
            )
        labels = label_names(cfg.labels) if cfg.labels != AUTO else None  # auto: the labels are the mapped names
        mapped: dict[str, str] = {}
        for key, label in label_map.items():
            if labels is not None and label not in labels:
                raise FtkitError(
                    f"recipe.label_map maps {key!r} to {label!r}, which is not one of recipe.labels "
                    f"({', '.join(labels)})",
                    f"map it to one of the labels, or add {label!r} to recipe.labels; {closest(str(label), labels)}",
                    where="recipe.label_map",
                )
            normal = raw_key(key) or str(key)
            if normal in mapped and mapped[normal] != label:
                raise FtkitError(
                    f"recipe.label_map maps {normal} twice, to {mapped[normal]!r} and to {label!r}",
                    "keep one entry per raw value (0 and '0' are the same value)",
                    where="recipe.label_map",
                )
            mapped[normal] = str(label)
        return mapped

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.auto_labels = cfg.labels == AUTO
        self._labels: list[str] | None = None if self.auto_labels else label_names(cfg.labels)
        self.label_map = self.label_map_of(cfg)
        # Record fields the prompt names besides the text; with any, /v1/classify (text only) cannot build a prompt.
        self.prompt_fields = [f for f in template_fields(cfg.prompt_template, "recipe.prompt_template") if f != "text"]
        if self.prompt_fields:
            self.serves = ()
        self.split_reader = SplitReader(cfg.data, self.read_file, self.stratum)

    @property
    def labels(self) -> list[str]:
        """recipe.labels, or with recipe.labels=auto those read from the training split (read once)."""
        if self._labels is None:
            # Under k-fold the whole file: every fold then scores the same classes in the same order.
            source = self.split_reader.whole() if self.split_reader.folds else self.load_split("train")
            self._labels = labels_by_frequency(source or [])
            log.info("Labels read from the training split (recipe.labels=auto): %s", ", ".join(self._labels))
        return self._labels

    def stratum(self, record: dict[str, Any]) -> str:
        """What a split of one file stratifies by: the label."""
        return record["label"]

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        records = self.split_reader.read(split)
        if records is not None and self.auto_labels and split != "train":
            known = set(self.labels)
            unseen = next((record for record in records if record["label"] not in known), None)
            if unseen is not None:
                raise FtkitError(
                    f"label {unseen['label']!r} ({split} split) does not occur in the training split, which "
                    f"recipe.labels={AUTO} reads the labels from ({', '.join(self.labels)})",
                    "add training records with this label, correct or drop this record, or list every label: "
                    "recipe.labels=[...]",
                    where=unseen["source"],
                )
        return records

    def read_file(self, split: str) -> list[dict[str, Any]] | None:
        """Every record of the file configured for split (recipe.data.<split>); None when none is."""
        spec = self.cfg.data.get(split)
        if spec is None:
            return None
        text_field, label_field = self.cfg.data.text_field, self.cfg.data.label_field
        records = []
        for where, raw in read_data(spec, key=f"recipe.data.{split}", split=split):
            text = require_text(raw, text_field, where)
            record = {"text": text, "label": self.label_of(raw, label_field, where), "source": where}
            if self.prompt_fields:
                record["fields"] = self.prompt_values(raw, where)
            records.append(record)
        return records

    def label_of(self, record: dict[str, Any], field: str, where: str) -> str:
        """The label name of a record: its label field as it is, or mapped through recipe.label_map."""
        value = require_field(record, field, where)
        if self.label_map is None:
            if "label_map" in self.cfg and not isinstance(value, str) and raw_key(value) is not None:
                # with recipe.labels=auto the labels are not known while the training split is read
                known = "the labels" if self.auto_labels else f"one of recipe.labels ({', '.join(self.labels)})"
                example = "<label>" if self.auto_labels else self.labels[0]
                raise FtkitError(
                    f"label {value!r} is a raw value, not {known}",
                    f"map raw values to labels with recipe.label_map, e.g. recipe.label_map={{{raw_key(value)}: "
                    f"{example}, ...}}",
                    where=where,
                )
            label = require_text(record, field, where)
            if self.auto_labels:
                if label != label.strip():
                    raise FtkitError(
                        f"label {label!r} has spaces around it, and with recipe.labels={AUTO} it would be a class "
                        f"apart from {label.strip()!r}",
                        f"write it as {label.strip()!r}",
                        where=where,
                    )
                return label
            # A label that differs from a known one only in case or surrounding spaces is refused, not normalised:
            # silently merging them would hide a data bug (and "neutral " may be a different export's label).
            near = [known for known in self.labels if known.casefold() == label.strip().casefold()]
            if label not in self.labels and near:
                raise FtkitError(
                    f"label {label!r} differs from {near[0]!r} of recipe.labels only in case or surrounding spaces",
                    f"write it exactly as {near[0]!r} (or add {label!r} to recipe.labels if it is a class of its own)",
                    where=where,
                )
            if label not in self.labels:
                mapping = ", or map raw values to labels with recipe.label_map" if "label_map" in self.cfg else ""
                raise FtkitError(
                    f"label {label!r} is not one of recipe.labels ({', '.join(self.labels)})",
                    f"correct the record, or add the label to recipe.labels{mapping}; {closest(label, self.labels)}",
                    where=where,
                )
            return label
        key = raw_key(value)
        if key is None:
            raise FtkitError(
                f"field {field!r} must be a label value (text or a number), got {value!r}",
                "fix or drop the record",
                where=where,
            )
        if key not in self.label_map:
            raise FtkitError(
                f"label value {value!r} is not in recipe.label_map {describe_map(self.label_map)}",
                "correct the record, or map the value too, e.g. "
                f"recipe.label_map={describe_map({**self.label_map, key: '<label>'})}",
                where=where,
            )
        return self.label_map[key]

    def prompt_values(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """The values of the other fields recipe.prompt_template names, checked on a record as it is read."""
        values = {}
        for name in self.prompt_fields:
            if name not in raw:
                raise FtkitError(
                    f"recipe.prompt_template uses {{{name}}}, and the record has no {name!r} field (it has: "
                    f"{', '.join(map(repr, raw)) or 'none'})",
                    f"add {name!r} to every record, or remove {{{name}}} from recipe.prompt_template; "
                    f"{closest(name, list(raw))}",
                    where=where,
                )
            value = raw[name]
            if not (isinstance(value, (str, float)) or is_integer(value)):
                raise FtkitError(
                    f"field {name!r}, which recipe.prompt_template uses, is {json_type(value)} ({value!r}), not text "
                    "or a number",
                    "give it text or a number in every record, or remove it from recipe.prompt_template",
                    where=where,
                )
            values[name] = value
        return values

    def prompt(self, text: str, fields: dict[str, Any] | None = None) -> list[dict[str, str]]:
        values = {"text": text, **(fields or {})}
        missing = [name for name in self.prompt_fields if name not in values]
        if missing:  # a bare text (ftkit serve's /v1/classify) for a template that names other fields
            raise FtkitError(
                f"recipe.prompt_template uses {{{missing[0]}}}, and only a text was given",
                "give inputs that have every field the template names, or train with a template that uses {text} only",
                where="recipe.prompt_template",
            )
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt is not None else []
        return [*messages, {"role": "user", "content": self.cfg.prompt_template.format(**values)}]

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": self.prompt(record["text"], record.get("fields")),
            "completion": [{"role": "assistant", "content": record["label"]}],
        }

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """An unlabelled input for `ftkit predict`: its text field (and the other fields the prompt names)."""
        record = {"text": require_text(raw, self.cfg.data.text_field, where)}
        if self.prompt_fields:
            record["fields"] = self.prompt_values(raw, where)
        return record

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.tasks.scoring import label_logprobs

        prompts = [self.prompt(r["text"], r.get("fields")) for r in records]
        only_winners = not self.cfg.get("score_all_labels", False)
        scores = label_logprobs(model, tokenizer, prompts, self.labels, batch_size, only_winners=only_winners)
        # Labels that could not win were not scored to the end (-inf): they are left out of "scores".
        return [
            {
                "label": self.labels[int(row.argmax())],
                "scores": {
                    label: value
                    for label, value in zip(self.labels, row.tolist(), strict=True)
                    if value != float("-inf")
                },
            }
            for row in scores
        ]

    def classify(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        """Each text's label and the labels' probabilities (log-likelihoods normalised over the labels; all labels
        scored to the end), for `ftkit serve`'s /v1/classify."""
        import torch

        from ftkit.tasks.scoring import label_logprobs

        scores = label_logprobs(model, tokenizer, [self.prompt(text) for text in texts], self.labels, batch_size)
        probabilities = torch.softmax(scores, dim=-1)
        return [
            {
                "label": self.labels[int(row.argmax())],
                "probabilities": dict(zip(self.labels, [round(p, 6) for p in row.tolist()], strict=True)),
            }
            for row in probabilities
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
        return classification_metrics([r["label"] for r in records], [p["label"] for p in predictions], self.labels)


def label_names(labels: Any) -> list[Any]:
    """recipe.labels as a list: numbers written as labels (recipe.labels=[0,1]) are their text, as in the data."""
    return [str(label) if isinstance(label, (int, float)) else label for label in labels]


def labels_by_frequency(records: list[dict[str, Any]]) -> list[str]:
    """The labels of records, most frequent first (ties by name), for recipe.labels=auto; FtkitError for fewer than
    two, or for two that differ only in case."""
    counts = Counter(record["label"] for record in records)
    labels = sorted(counts, key=lambda label: (-counts[label], label))
    if len(labels) < 2:
        raise FtkitError(
            f"recipe.labels={AUTO} found {len(labels)} label(s) in the training split "
            f"({', '.join(labels) or 'none'}), and a classifier needs at least two",
            "check recipe.data.label_field, add records of the other labels, or list them: recipe.labels=[...]",
            where="recipe.labels",
        )
    by_case: dict[str, str] = {}
    for label in labels:
        twin = by_case.setdefault(label.casefold(), label)
        if twin != label:
            first = next(record["source"] for record in records if record["label"] == label)
            raise FtkitError(
                f"the training split has the labels {twin!r} and {label!r}, which differ only in case, and "
                f"recipe.labels={AUTO} would make them two classes",
                f"write them alike in the data, or list the labels to keep both: recipe.labels=[{twin},{label},...]",
                where=first,
            )
    return labels


def labels_override(labels: list[str]) -> str:
    """recipe.labels=[...] as an override Hydra reads back as the same list: each label quoted, with its quotes,
    backslashes and interpolation marks escaped."""

    def quoted(label: str) -> str:
        # Hydra's quoted strings: backslashes before a quote or at the end are doubled, the quote escaped
        label = re.sub(r"(\\*)'", lambda match: match[1] * 2 + "\\'", label)
        label = re.sub(r"(\\+)$", lambda match: match[1] * 2, label)
        return "'" + label.replace("${", "\\${") + "'"

    return "recipe.labels=[" + ",".join(quoted(label) for label in labels) + "]"


def with_labels_read(cfg: DictConfig, recipe: Any, overrides: list[str]) -> list[str]:
    """For recipe.labels=auto: cfg.recipe.labels set to the labels read from data, and the overrides a run keeps
    (and eval, serve and export replay) saying them, so the run is loaded with its labels, not re-read."""
    if cfg.recipe.get("labels") != AUTO:
        return overrides
    labels = list(recipe.labels)
    with open_dict(cfg):
        cfg.recipe.labels = labels
    return [override for override in overrides if not is_key(override, "recipe.labels")] + [labels_override(labels)]


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: true)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "examples": len(y_true),
    }


def template_fields(template: str, key: str) -> list[str]:
    """The {field} names a prompt template uses, in order; broken braces, positional fields ({0}, {}), attribute or
    index lookups ({site.name}) and format specs are refused at key, before any record is read."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise FtkitError(
            f"{key} is not a valid template ({error})",
            "name record fields in braces, e.g. '{text}', and double literal braces: {{ }}",
            where=key,
        ) from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise FtkitError(
                f"{key} has the placeholder {written}, which is not a plain record field name",
                "write each placeholder as {field} with the name of a record field, e.g. {text}; double literal "
                "braces: {{ }}",
                where=key,
            )
        names.append(name)
    return list(dict.fromkeys(names))
