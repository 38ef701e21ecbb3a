"""What every instruction-tuning recipe shares: chat records in four formats, one example per assistant turn,
greedy generation and text metrics (ROUGE-L, BLEU, perplexity of the reference).

An instruction recipe (recipes/sft_instruct.py, recipes/report.py) subclasses `InstructTask`; its docstring lists
what it supports and raises. The record formats live in ftkit.tasks.chat_formats. Splits come through
ftkit.data.splits.SplitReader: the files, or shares of one (recipe.data.split, recipe.data.folds), unstratified,
made of whole conversations before the per-turn examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from ftkit.data.splits import SplitReader
from ftkit.errors import FtkitError, closest
from ftkit.tasks.chat_formats import (
    FORMATS,
    Message,
    alpaca_user_turn,
    assistant_turns,
    load_conversations,
    with_system_prompt,
)
from ftkit.tasks.readers import check_split_specs, configured_paths

log = logging.getLogger("ftkit")


@dataclass
class InstructDataConfig:
    train: Any = MISSING  # a path (or bundled:<recipe>/<file>), or a list of them
    validation: Any = None
    test: Any = None
    max_train_examples: int | None = None  # records (conversations) read from train, before the per-turn split
    # One file split here, as for the other tasks (ftkit.config.schema.DataConfig): fractions of train, or k-fold
    split: list[float] | None = None
    split_seed: int = 42
    folds: int | None = None
    fold: int | None = None


@dataclass
class InstructRecipeConfig:
    name: str = MISSING
    data: InstructDataConfig = field(default_factory=InstructDataConfig)
    format: str = "auto"  # auto | alpaca | sharegpt | messages | prompt_completion
    # None: no system turn added (the chat template may insert its own default); "": an empty one
    system_prompt: str | None = None
    max_new_tokens: int = 64  # generation length at evaluation


class InstructTask:
    """Chat records -> answers: formats, per-turn examples, generation and text metrics."""

    primary_metric = "rouge_l"
    greater_is_better = True
    # Prompt/completion examples: loss on the completion (the assistant turn) only.
    trains_with = "sft"
    sft_config: dict[str, Any] = {"completion_only_loss": True}
    serves: tuple[str, ...] = ()  # ftkit serve: chat only

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        choices = ["auto", *FORMATS]
        if cfg.format not in choices:
            raise FtkitError(
                f"recipe.format={cfg.format!r} is not a record format ftkit reads",
                f"use one of {', '.join(choices)}; {closest(str(cfg.format), choices)}",
                where="recipe.format",
            )
        if cfg.max_new_tokens < 1:
            raise FtkitError(
                f"recipe.max_new_tokens must be at least 1, got {cfg.max_new_tokens}",
                "use e.g. recipe.max_new_tokens=64",
                where="recipe.max_new_tokens",
            )
        check_split_specs(cfg.data, "data.jsonl")

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.split_reader = SplitReader(cfg.data, self.read_file, self.stratum)

    def stratum(self, record: dict[str, Any]) -> str:
        """A split of one file is not stratified: free-text answers have no class to keep in proportion."""
        return ""

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        records = self.split_reader.read(split)
        if records is None or split == "test":
            return records  # the test split is scored on each record's final assistant turn
        return [{**record, "messages": turn} for record in records for turn in assistant_turns(record["messages"])]

    def read_file(self, split: str) -> list[dict[str, Any]] | None:
        """Every conversation of the file(s) configured for split, interleaved in proportion; None when none is."""
        paths = configured_paths(self.cfg.data, split)
        if paths is None:
            return None
        files = []
        for path in paths:
            fmt, conversations = load_conversations(path, self.cfg.format)
            log.info("%s: %d records, %s format", path, len(conversations), fmt)
            files.append([{"messages": messages, "source": where, "format": fmt} for where, messages in conversations])
        return interleave(files)

    def conversation(self, record: dict[str, Any]) -> list[Message]:
        """The record's messages, with recipe.system_prompt as the first turn when set and the record has none."""
        return with_system_prompt(record["messages"], self.cfg.system_prompt)

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        messages = self.conversation(record)
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """An unanswered input for `ftkit predict`: alpaca `instruction` (+ `input`), a `prompt` text, or `messages`
        ending with a user turn. The answer slot is left empty, so a prediction's reference is "" and its nll only
        scores the end of turn."""
        if isinstance(raw.get("messages"), list) and raw["messages"]:
            messages = [{"role": str(m.get("role")), "content": str(m.get("content"))} for m in raw["messages"]]
        elif isinstance(raw.get("instruction"), str) and raw["instruction"].strip():
            extra = raw.get("input") if isinstance(raw.get("input"), str) else None
            messages = [{"role": "user", "content": alpaca_user_turn(raw["instruction"], extra)}]
        elif isinstance(raw.get("prompt"), str) and raw["prompt"].strip():
            messages = [{"role": "user", "content": raw["prompt"]}]
        else:
            raise FtkitError(
                "the input has no instruction, prompt or messages to answer",
                'give each line {"instruction": ..., "input": ...}, {"prompt": ...} or {"messages": [...]}',
                where=where,
            )
        if messages[-1]["role"] != "user":
            raise FtkitError("the messages do not end with a user turn", "end them with the turn to answer", where)
        return {"messages": [*messages, {"role": "assistant", "content": ""}], "source": where}

    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.tasks.generation import generate
        from ftkit.tasks.text_metrics import reference_nll

        conversations = [self.conversation(record) for record in records]
        prompts = [messages[:-1] for messages in conversations]
        references = [messages[-1]["content"] for messages in conversations]
        generations = generate(model, tokenizer, prompts, self.cfg.max_new_tokens, batch_size)
        scored = reference_nll(model, tokenizer, prompts, references, batch_size)
        return [
            {
                "source": record["source"],
                "generation": self.parse_output(generation),
                "reference": reference,
                "nll": nll,
                "tokens": tokens,
            }
            for record, generation, reference, (nll, tokens) in zip(
                records, generations, references, scored, strict=True
            )
        ]

    def parse_output(self, text: str) -> str:
        """Free generation is the answer itself, stripped of surrounding whitespace."""
        return text.strip()

    def references(self, records: list[dict[str, Any]]) -> list[str]:
        return [record["messages"][-1]["content"] for record in records]

    def score(self, predictions: list[dict], records: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit.tasks.text_metrics import generation_metrics

        return generation_metrics(predictions, self.references(records))


def interleave(files: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records of several files merged in proportion (record i of n sits at (i + 0.5) / n), stable."""
    keyed = [((i + 0.5) / len(records), f, i) for f, records in enumerate(files) for i in range(len(records))]
    return [files[f][i] for _, f, i in sorted(keyed)]
