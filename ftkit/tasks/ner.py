"""What every NER recipe shares: BIO / span records, `Type: mention` answers, parsing, alignment, metrics, serving.

A NER recipe (recipes/ner.py) subclasses `NerTask`; its docstring lists what the task supports and raises. The
BIO mechanics (CoNLL reading, tags <-> spans, entity alignment, seqeval metrics) live in ftkit.tasks.bio. Splits
come through ftkit.data.splits.SplitReader: the files, or shares of one file stratified by the sorted set of
entity types each sentence holds (with recipe.entity_types=null, the types of the whole file).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from ftkit.config.schema import DataConfig
from ftkit.data.splits import SplitReader
from ftkit.errors import FtkitError, closest
from ftkit.tasks.bio import (
    align_entities,
    read_conll,
    sentence_from_char_spans,
    spans_to_tags,
    tags_to_spans,
    tokenize,
)
from ftkit.tasks.readers import read_records, require_text, resolve_path

log = logging.getLogger("ftkit")

FORMATS = ("auto", "conll", "jsonl")
ANSWER_LINE = re.compile(r"^(?:[-*\u2022]\s*|\d+[.)]\s+)?(?P<type>[^:]+?)\s*:\s*(?P<mention>.*)$")
QUOTES = "\"'`\u201c\u201d\u2018\u2019"


@dataclass
class NerDataConfig(DataConfig):
    label_field: str = "spans"  # JSONL only: the field holding the character spans
    format: str = "auto"  # auto (.jsonl/.json: JSONL spans, anything else: CoNLL) | conll | jsonl


@dataclass
class NerRecipeConfig:
    name: str = MISSING
    data: NerDataConfig = field(default_factory=NerDataConfig)
    entity_types: list[str] | None = None  # None: the types found in the training data, sorted
    system_prompt: str | None = None  # may name {types}: the entity types, comma-separated
    prompt_template: str = "{text}"
    none_answer: str = "none"  # the whole answer when a sentence has no entity
    max_new_tokens: int | None = None  # None: the longest training answer + 8 tokens


class NerTask:
    """Sentence -> its entities, by generation: records, prompts, answers, parsing, alignment and metrics."""

    primary_metric = "micro_f1"
    greater_is_better = True
    serves: tuple[str, ...] = ("extract",)  # ftkit serve's /v1/extract
    trains_with = "sft"
    sft_config: dict[str, Any] = {}  # prompt-completion examples: TRL's completion-only loss is the default

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        if not _formats(cfg.prompt_template, text="x"):
            raise FtkitError(
                "recipe.prompt_template must contain {text} and no other {placeholder}",
                "write e.g. 'Sentence: {text}' (double literal braces: {{ }})",
                where="recipe.prompt_template",
            )
        if cfg.system_prompt is not None and not _formats(cfg.system_prompt, types="x", optional=True):
            raise FtkitError(
                "recipe.system_prompt may only use the placeholder {types}",
                "remove the other {placeholder}s (double literal braces: {{ }})",
                where="recipe.system_prompt",
            )
        if cfg.entity_types is not None:
            types = list(cfg.entity_types)
            bad = [t for t in types if not t.strip() or ":" in t or "\n" in t or t != t.strip()]
            repeated = sorted({t for t in types if types.count(t) > 1})
            if not types or bad or repeated:
                raise FtkitError(
                    f"recipe.entity_types must list distinct names without ':' or line breaks, got {types}",
                    "list each type once, e.g. recipe.entity_types=[Disease,Chemical], or null to infer them",
                    where="recipe.entity_types",
                )
        if not cfg.none_answer.strip() or "\n" in cfg.none_answer or ":" in cfg.none_answer:
            raise FtkitError(
                f"recipe.none_answer {cfg.none_answer!r} must be one line of text without ':'",
                "use e.g. recipe.none_answer=none",
                where="recipe.none_answer",
            )
        if cfg.data.format not in FORMATS:
            raise FtkitError(
                f"recipe.data.format={cfg.data.format!r} is not supported",
                f"use one of {', '.join(FORMATS)}; {closest(cfg.data.format, list(FORMATS))}",
                where="recipe.data.format",
            )
        if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
            raise FtkitError(
                "recipe.max_new_tokens must be positive",
                "use e.g. 64, or null for the longest training answer + 8",
                where="recipe.max_new_tokens",
            )

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.types: list[str] | None = list(cfg.entity_types) if cfg.entity_types is not None else None
        self._splits: dict[str, list[dict[str, Any]] | None] = {}
        self._answer_budget: int | None = None
        self.split_reader = SplitReader(cfg.data, self.read_file, self.stratum)

    def stratum(self, record: dict[str, Any]) -> str:
        """What a split of one file stratifies by: the entity types the sentence holds, sorted ("" for none)."""
        return "|".join(sorted({entity["type"] for entity in record["entities"]}))

    def entity_types(self) -> list[str]:
        """The configured types, or those of the training data (read once) when recipe.entity_types is null."""
        if self.types is None:
            self.load_split("train")
        assert self.types is not None
        return self.types

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        if split not in self._splits:
            self._splits[split] = self.split_reader.read(split)
        return self._splits[split]

    def read_file(self, split: str) -> list[dict[str, Any]] | None:
        """Every sentence of the file configured for split; the training file's gives the types when they are
        inferred (recipe.entity_types=null)."""
        spec = self.cfg.data.get(split)
        if spec is None:
            return None
        path = _data_path(spec, f"recipe.data.{split}")
        types = self.types if self.types is not None or split == "train" else self.entity_types()
        records = self._read(path, types)
        if self.types is None:  # split == "train": infer the types from it
            found = {tag[2:] for record in records for tag in record["tags"] if tag != "O"}
            if not found:
                raise FtkitError(
                    "the training data has no entities, so the entity types cannot be inferred",
                    "tag some entities, or list the types in recipe.entity_types",
                    where=str(path),
                )
            self.types = sorted(found)
            log.info("Entity types from the training data: %s", ", ".join(self.types))
        return records

    def _read(self, path: Path, types: list[str] | None) -> list[dict[str, Any]]:
        fmt = self.cfg.data.format
        if fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in (".jsonl", ".json")):
            records = []
            text_field, spans_field = self.cfg.data.text_field, self.cfg.data.label_field
            for line, raw in read_records(path):
                where = f"{path}:{line}"
                text = require_text(raw, text_field, where)
                if spans_field not in raw:
                    raise FtkitError(
                        f"the record has no {spans_field!r} field (it has: {', '.join(map(repr, raw))})",
                        f"add the spans ([] when there are none), or name the field with recipe.data.label_field; "
                        f"{closest(spans_field, list(raw))}",
                        where=where,
                    )
                tokens, tags, mentions = sentence_from_char_spans(text, raw[spans_field], types, where)
                entities = [{"text": mention, "type": kind} for mention, kind in mentions]
                records.append({"text": text, "tokens": tokens, "tags": tags, "entities": entities, "source": where})
            return records
        return [
            {
                "text": " ".join(sentence.tokens),
                "tokens": sentence.tokens,
                "tags": sentence.tags,
                "entities": [
                    {"text": " ".join(sentence.tokens[start:end]), "type": kind}
                    for start, end, kind in tags_to_spans(sentence.tags)
                ],
                "source": sentence.source,
            }
            for sentence in read_conll(path, types)
        ]

    def prompt(self, text: str) -> list[dict[str, str]]:
        messages = []
        if self.cfg.system_prompt is not None:
            system = self.cfg.system_prompt.format(types=", ".join(self.entity_types()))
            messages.append({"role": "system", "content": system})
        return [*messages, {"role": "user", "content": self.cfg.prompt_template.format(text=text)}]

    def answer(self, entities: list[dict[str, str]]) -> str:
        """The target text: `Type: mention` lines in sentence order, or the none answer."""
        return "\n".join(f"{e['type']}: {e['text']}" for e in entities) or self.cfg.none_answer

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": self.prompt(record["text"]),
            "completion": [{"role": "assistant", "content": self.answer(record["entities"])}],
        }

    def max_new_tokens(self, tokenizer: Any) -> int:
        """recipe.max_new_tokens, or the longest training answer + 8 tokens (counted once)."""
        if self.cfg.max_new_tokens is not None:
            return int(self.cfg.max_new_tokens)
        if self._answer_budget is None:
            answers = [self.answer(r["entities"]) for r in self.load_split("train") or []]
            self._answer_budget = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers) + 8
        return self._answer_budget

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """An unlabelled sentence for `ftkit predict`: its text field (the entities come back as mentions)."""
        return {"text": require_text(raw, self.cfg.data.text_field, where)}

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.tasks.generation import generate

        prompts = [self.prompt(r["text"]) for r in records]
        outputs = generate(model, tokenizer, prompts, self.max_new_tokens(tokenizer), batch_size)
        predictions = []
        for output in outputs:
            entities = self.parse_output(output)
            predictions.append({"output": output, "parsed": entities is not None, "entities": entities or []})
        return predictions

    def extract(self, model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        """Entities per text with character offsets, from greedy generation (`ftkit serve`'s /v1/extract)."""
        from ftkit.tasks.generation import generate

        outputs = generate(
            model, tokenizer, [self.prompt(text) for text in texts], self.max_new_tokens(tokenizer), batch_size
        )
        return [self.locate(text, output) for text, output in zip(texts, outputs, strict=True)]

    def locate(self, text: str, output: str) -> dict[str, Any]:
        """The entities an answer names, placed in text: parse_output, then ftkit.tasks.bio's alignment of each
        mention onto the text's tokens (the rules `ftkit eval` scores with), turned into character offsets.

        A mention found nowhere in the text is dropped and counted in "unaligned"; "parsed" is false for an answer
        that is not the recipe's format at all (then there are no entities).
        """
        parsed = self.parse_output(output)
        offsets = tokenize(text)
        found = [(entity["text"], entity["type"]) for entity in parsed or []]
        spans, unaligned = align_entities(found, [text[start:end] for start, end in offsets])
        entities = []
        for first, last, kind in spans:
            start, end = offsets[first][0], offsets[last - 1][1]
            entities.append({"text": text[start:end], "type": kind, "start": start, "end": end})
        return {"entities": entities, "parsed": parsed is not None, "unaligned": unaligned, "output": output}

    def parse_output(self, text: str) -> list[dict[str, str]] | None:
        """The entities a generated answer lists, [] for the none answer, None when it does not parse."""
        answer = text.strip()
        if answer.rstrip(".").strip().casefold() == self.cfg.none_answer.strip().casefold():
            return []
        by_name = {kind.casefold(): kind for kind in self.entity_types()}
        entities = []
        for line in answer.splitlines():
            if not line.strip():
                continue
            match = ANSWER_LINE.match(line.strip())
            kind = by_name.get(match["type"].strip().casefold()) if match else None
            mention = match["mention"].strip().strip(QUOTES).strip() if match else ""
            if kind is None or not mention:
                return None
            entities.append({"text": mention, "type": kind})
        return entities or None

    def score(self, predictions: list[dict], records: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit.tasks.bio import entity_metrics

        predicted_tags, unaligned = [], 0
        for prediction, record in zip(predictions, records, strict=True):
            found = [(e["text"], e["type"]) for e in prediction["entities"]]
            spans, missed = align_entities(found, record["tokens"])
            predicted_tags.append(spans_to_tags(len(record["tokens"]), spans))
            unaligned += missed
        metrics = entity_metrics([r["tags"] for r in records], predicted_tags, self.entity_types())
        unparseable = sum(not p["parsed"] for p in predictions)
        metrics.update(
            examples=len(records),
            unparseable=unparseable,
            unparseable_rate=unparseable / len(records) if records else 0.0,
            unaligned_entities=unaligned,
        )
        log.info(
            "ner: %d of %d answers unparseable; %d of the parsed mentions matched no tokens",
            unparseable,
            len(records),
            unaligned,
        )
        return metrics

    def entity_counts(self, predictions: list[dict], records: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
        """Per sentence (true positives, false positives, false negatives) of exact-match entities, aligned and
        matched as score() does, so their sums give its micro precision, recall and F1 (for the bootstrap)."""
        from seqeval.metrics.sequence_labeling import get_entities

        counts = []
        for prediction, record in zip(predictions, records, strict=True):
            found = [(e["text"], e["type"]) for e in prediction["entities"]]
            spans, _ = align_entities(found, record["tokens"])
            predicted = set(get_entities(spans_to_tags(len(record["tokens"]), spans)))
            gold = set(get_entities(list(record["tags"])))
            counts.append((len(gold & predicted), len(predicted - gold), len(gold - predicted)))
        return counts


def _formats(template: str, optional: bool = False, **fields: str) -> bool:
    """Whether template formats with exactly these placeholders (each required unless optional)."""
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError):
        return False
    return optional or all("{" + name + "}" in template for name in fields)


def _data_path(spec: str, key: str) -> Path:
    return resolve_path(spec, key, expected="a CoNLL file (token<TAB>tag lines) or a .jsonl file with text and spans")
