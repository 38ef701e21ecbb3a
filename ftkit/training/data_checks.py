"""Checks on the loaded data that a run would otherwise train through silently (config key data_checks).

Why: repeated training examples weight some examples more than the data seems to; validation or test records
whose input is also a training input make the scores measure memorisation; and examples longer than
model.max_length are cut by TRL (keeping the first tokens, which for classification cuts off the answer).

- check_splits runs on the records, before any model loads: duplicates in the train split (data_checks.duplicates:
  refuse | drop | keep), and validation/test records whose input repeats a training input (data_checks.leakage:
  refuse | drop from their split | keep); how many overlapped and what was done is filled into `findings`, which
  ftkit.training.run writes into metrics.json.
- check_lengths runs once the tokenizer is loaded: training examples over model.max_length tokens
  (data_checks.too_long: refuse | truncate | drop). With cache_preprocessing the token counts are kept in
  ftkit.training.preprocess_cache, so a later run on the same examples and tokenizer does not count them again.

Locations come from each record's "source" (file:line, or hub:<dataset>:<split>[row]), which every recipe keeps.
Nothing heavy is imported: the tokenizer arrives as an argument.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from omegaconf import DictConfig

from ftkit.errors import FtkitError

log = logging.getLogger("ftkit")

Record = dict[str, Any]


def check_splits(
    recipe: Any, cfg: DictConfig, splits: dict[str, list[Record]], findings: dict[str, Any] | None = None
) -> dict[str, list[Record]]:
    """The splits with duplicate training records handled per data_checks.duplicates, and validation/test records
    that repeat a training input per data_checks.leakage; findings (when given) gets
    {"leakage": {<split>: {"overlapping": n, "action": refuse | drop | keep}}}."""
    train = splits["train"]
    examples = [recipe.to_example(record) for record in train]
    dropped = _duplicates(cfg.data_checks.duplicates, train, examples)
    train_inputs: dict[str, str] = {}  # input -> where the first training record with it is
    for index, (record, example) in enumerate(zip(train, examples, strict=True)):
        train_inputs.setdefault(_key(example_input(example)), _source(record, "train", index))
    splits = {**splits, "train": [record for index, record in enumerate(train) if index not in dropped]}
    mode = cfg.data_checks.leakage
    for name in ("validation", "test"):
        if name in splits:
            splits[name], overlapping = _leakage(recipe, mode, name, splits[name], train_inputs)
            if findings is not None:
                findings.setdefault("leakage", {})[name] = {"overlapping": overlapping, "action": mode}
    return splits


def check_lengths(
    recipe: Any, cfg: DictConfig, tokenizer: Any, train_records: list[Record], cache: bool = True
) -> list[Record]:
    """The training records, without those over model.max_length tokens when data_checks.too_long=drop.

    cache=False counts without reading or writing the preprocessing cache (a dry run writes nothing).

    Lengths are counted as TRL 1.x's SFTTrainer tokenizes a conversational example: the tokenizer's chat template
    applied to prompt + completion (or messages), the text tokenized without added special tokens (what
    apply_chat_template(tokenize=True) does). Differences: a trainer.chat_template_path, or the generation-marker
    template TRL swaps in under assistant_only_loss, is not applied here (both render the same conversation, so
    lengths may differ by a few tokens at most); tools and chat_template_kwargs are not used by ftkit recipes.
    """
    limit = cfg.model.max_length
    if limit is None or not train_records:
        return train_records
    examples = [recipe.to_example(record) for record in train_records]
    if cache and cfg.get("cache_preprocessing", False):
        from ftkit.training.preprocess_cache import cached_lengths  # imports TRL: only where training loads it anyway

        lengths = cached_lengths(tokenizer, examples, lambda: example_lengths(tokenizer, examples))
    else:
        lengths = example_lengths(tokenizer, examples)
    over = [index for index, length in enumerate(lengths) if length > limit]
    if not over:
        return train_records
    longest = max(lengths[index] for index in over)
    counted = (
        f"{len(over)} of {len(train_records)} training examples {_verb(len(over), 'is', 'are')} longer than "
        f"model.max_length={limit} tokens"
    )
    mode = cfg.data_checks.too_long
    if mode == "refuse":
        first = over[0]
        raise FtkitError(
            f"{counted} (the longest has {longest}; the first has {lengths[first]})",
            f"raise model.max_length to {longest} (the longest), or set data_checks.too_long=truncate (TRL keeps the "
            "first max_length tokens, which for classification cuts off the answer) or =drop",
            where=_source(train_records[first], "train", first),
        )
    if mode == "truncate":
        log.warning(
            "%s (longest %d): TRL keeps their first %d tokens and drops those left without an answer token "
            "(data_checks.too_long=truncate)",
            counted,
            longest,
            limit,
        )
        return train_records
    log.warning(
        "%s (longest %d): dropped, %d remain (data_checks.too_long=drop)",
        counted,
        longest,
        len(train_records) - len(over),
    )
    dropped = set(over)
    return [record for index, record in enumerate(train_records) if index not in dropped]


def example_lengths(tokenizer: Any, examples: list[Record]) -> list[int]:
    """Token counts of conversational examples under the tokenizer's chat template, tokenized in one batch; a
    preference example counts its longer answer (the trainer builds prompt + chosen and prompt + rejected)."""
    sequences = [sequences_of(example) for example in examples]
    texts = tokenizer.apply_chat_template([s for each in sequences for s in each], tokenize=False)
    counts = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return [max(next(counts) for _ in each) for each in sequences]


def sequences_of(example: Record) -> list[list[dict[str, Any]]]:
    """The conversations a trainer builds from one example: messages, prompt + completion, or for a preference
    pair prompt + chosen and prompt + rejected."""
    if "messages" in example:
        return [example["messages"]]
    if "chosen" in example:
        return [example["prompt"] + example["chosen"], example["prompt"] + example["rejected"]]
    return [example["prompt"] + example["completion"]]


def example_input(example: Record) -> list[dict[str, Any]]:
    """What the model is given: the prompt, or the messages without their final assistant turn."""
    if "prompt" in example:
        return example["prompt"]
    messages = example["messages"]
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


def _duplicates(mode: str, records: list[Record], examples: list[Record]) -> set[int]:
    """Indices of the later copies of an earlier example to drop: all of them (drop), none (keep); refuse raises.

    A record repeated from the same source (multitask weights above 1 repeat a task's records on purpose) is not
    counted: only an example that also appears at another location is a duplicate in the data.
    """
    first_at: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []  # (index of the later copy, index of the record it repeats)
    for index, (record, example) in enumerate(zip(records, examples, strict=True)):
        earlier = first_at.setdefault(_key(example), index)
        same_place = "source" in record and records[earlier].get("source") == record["source"]
        if earlier != index and not same_place:
            repeats.append((index, earlier))
    if not repeats:
        return set()
    counted = (
        f"{len(repeats)} of {len(records)} training records {_verb(len(repeats), 'repeats', 'repeat')} an earlier one"
    )
    if mode == "keep":
        log.info("%s; all kept (data_checks.duplicates=keep)", counted)
        return set()
    if mode == "drop":
        log.warning(
            "%s; trained on the first of each, %d remain (data_checks.duplicates=drop)",
            counted,
            len(records) - len(repeats),
        )
        return {index for index, _ in repeats}
    index, earlier = repeats[0]
    raise FtkitError(
        f"{counted} (the same prompt and answer); the first repeats {_source(records[earlier], 'train', earlier)}",
        "remove them, or set data_checks.duplicates=drop to train on the first of each, or =keep",
        where=_source(records[index], "train", index),
    )


def _leakage(
    recipe: Any, mode: str, name: str, records: list[Record], train_inputs: dict[str, str]
) -> tuple[list[Record], int]:
    """The split's records per data_checks.leakage (refuse raises; drop leaves out those whose input is a training
    input; keep keeps them, warned), and how many overlapped."""
    overlapping = [
        (index, train_inputs[key])
        for index, record in enumerate(records)
        if (key := _key(example_input(recipe.to_example(record)))) in train_inputs
    ]
    if not overlapping:
        return records, 0
    index, train_where = overlapping[0]
    counted = (
        f"{len(overlapping)} of {len(records)} {name} records {_verb(len(overlapping), 'has', 'have')} the same "
        "input as a training record"
    )
    if mode == "keep":
        log.warning(
            "%s (the first: %s repeats %s); kept, so %s scores partly measure memorisation (data_checks.leakage=keep)",
            counted,
            _source(records[index], name, index),
            train_where,
            name,
        )
        return records, len(overlapping)
    if mode == "drop":
        dropped = {i for i, _ in overlapping}
        if len(dropped) == len(records):
            raise FtkitError(
                f"every {name} record has the same input as a training record, so data_checks.leakage=drop would "
                f"leave no {name} records (the first repeats {train_where})",
                f"give a {name} file with inputs that are not in the training data, or set data_checks.leakage=keep",
                where=_source(records[index], name, index),
            )
        log.warning(
            "%s; dropped from %s, %d remain (data_checks.leakage=drop)", counted, name, len(records) - len(dropped)
        )
        return [record for i, record in enumerate(records) if i not in dropped], len(overlapping)
    raise FtkitError(
        f"{counted} (the first repeats {train_where})",
        f"remove them from the {name} file: scores on them measure memorisation, not generalisation; or set "
        f"data_checks.leakage=drop to leave them out of {name}, or =keep to score them anyway",
        where=_source(records[index], name, index),
    )


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _source(record: Record, split: str, index: int) -> str:
    """The record's file:line (or hub row), or its position in the split when the recipe keeps no source."""
    return str(record["source"]) if "source" in record else f"{split} record {index + 1}"
