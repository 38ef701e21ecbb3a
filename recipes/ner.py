"""ner: named-entity recognition by generation (bundled data: disease mentions in short clinical sentences).

Supports
  - CoNLL/BIO files (`token<TAB>tag`, a blank line between sentences; `token tag` with spaces, and extra middle
    columns such as CoNLL-2003's POS and chunk, work too; `-DOCSTART-` lines are skipped), read as IOB2 and,
    leniently, IOB1; any suffix except .jsonl/.json (bundled: bundled:ner/{train,validation,test}.conll).
  - JSONL records with a text and character spans, `{"text": "...", "spans": [{"start": 0, "end": 6,
    "type": "Disease"}]}` (end exclusive; field names: recipe.data.text_field / recipe.data.label_field). The text
    is split into words and punctuation marks, and also at every span edge, so each span covers whole tokens.
  - Any set of entity types: recipe.entity_types, or null to take the types found in the training data.
  - Target format: one `Type: mention` line per entity, in sentence order, or the fixed answer `none`
    (recipe.none_answer). Why: a 135M model copies short spans from its prompt far more reliably than it learns
    to balance JSON brackets and quotes, and each line costs ~3 tokens beyond the mention (a JSON list of
    {"text", "type"} objects costs ~12), so training is cheaper and a truncated answer loses one line, not the
    whole parse. The type name on every line keeps one format for one type or twelve.
  - Prediction: greedy generation (ftkit.generation), then parsing. An answer parses when it is the none answer or
    every non-empty line is `<type>: <mention>` with a known type (case-insensitive; a leading bullet, number and
    quotes around the mention are tolerated). Anything else is unparseable: it counts as predicting no entities,
    and the number of such answers is reported. Parsed mentions are mapped onto the sentence's tokens by
    ftkit.bio.align_entities (whitespace-insensitive exact match, exact case first, first occurrence not yet
    taken by an earlier mention of the same answer); a mention found nowhere is dropped and counted.
  - Metrics (seqeval, on the original gold tags; predictions become IOB2 tags): entity-level exact-match micro
    precision / recall / F1 (primary: micro_f1), seqeval's macro F1, per type precision / recall / F1 / support /
    predicted count (metrics "per_class"), and the counts unparseable, unparseable_rate, unaligned_entities.

Raises FtkitError (exit 2) for
  - a prompt_template without {text}, a system_prompt with placeholders other than {types}, an entity type that
    is empty, repeated or contains ':' or a line break, an empty none_answer, or an unknown recipe.data.format;
  - a data file that does not exist, is not UTF-8 or holds no sentences;
  - a CoNLL line with a token but no tag, a tag that is not O / B-<type> / I-<type>, or a B- or I- tag whose type
    is not in recipe.entity_types (or, when those are inferred, not in the training data) (file:line given);
  - training data without any entity when recipe.entity_types is null;
  - a JSONL record missing its text or spans field, or a span that is malformed, outside the text, covers only
    whitespace, overlaps another span or has a type outside recipe.entity_types (file:line given).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from ftkit.bio import align_entities, read_conll, sentence_from_char_spans, spans_to_tags, tags_to_spans
from ftkit.config import DataConfig
from ftkit.data import BUNDLED, read_records, require_text, resolve_path
from ftkit.errors import FtkitError, closest

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


SCHEMA = NerRecipeConfig


class NerRecipe:
    primary_metric = "micro_f1"
    greater_is_better = True
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
        self._splits: dict[str, list[dict[str, Any]]] = {}

    def entity_types(self) -> list[str]:
        """The configured types, or those of the training data (read once) when recipe.entity_types is null."""
        if self.types is None:
            self.load_split("train")
        assert self.types is not None
        return self.types

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        spec = self.cfg.data.get(split)
        if spec is None:
            return None
        if split in self._splits:
            return self._splits[split]
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
        limit = self.cfg.data.get("max_train_examples")
        self._splits[split] = records[:limit] if split == "train" and limit else records
        return self._splits[split]

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
        if self.cfg.max_new_tokens is not None:
            return int(self.cfg.max_new_tokens)
        answers = [self.answer(r["entities"]) for r in self.load_split("train") or []]
        return max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers) + 8

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """An unlabelled sentence for `ftkit predict`: its text field (the entities come back as mentions)."""
        return {"text": require_text(raw, self.cfg.data.text_field, where)}

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.generation import generate

        prompts = [self.prompt(r["text"]) for r in records]
        outputs = generate(model, tokenizer, prompts, self.max_new_tokens(tokenizer), batch_size)
        predictions = []
        for output in outputs:
            entities = self.parse_output(output)
            predictions.append({"output": output, "parsed": entities is not None, "entities": entities or []})
        return predictions

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
        from ftkit.bio import entity_metrics

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


def _formats(template: str, optional: bool = False, **fields: str) -> bool:
    """Whether template formats with exactly these placeholders (each required unless optional)."""
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError):
        return False
    return optional or all("{" + name + "}" in template for name in fields)


def _data_path(spec: str, key: str) -> Path:
    if not spec.startswith(BUNDLED) and not Path(spec).expanduser().is_file():
        raise FtkitError(
            f"data file {spec!r} does not exist" + (" (it is a directory)" if Path(spec).is_dir() else ""),
            f"give {key} a CoNLL file (token<TAB>tag lines) or a .jsonl file with text and spans "
            f"(relative paths start from {Path.cwd()})",
            where=key,
        )
    return resolve_path(spec, key)


RECIPE = NerRecipe
