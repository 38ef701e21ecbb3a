"""ftkit.training.data_checks on real recipe objects: duplicates (refuse / drop / keep), overlaps, lengths (refuse /
truncate / drop). The refusals through the CLI are in the bad-input corpus (tests/bad_inputs/cases/)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.training.data_checks import check_lengths, check_splits, example_input, example_lengths

TICKETS = [
    {"text": "gearbox on conveyor C-7 grinding at startup", "label": "Mechanical"},
    {"text": "panel lights flicker in the paint booth", "label": "Electrical"},
    {"text": "air cylinder on press P-2 leaking at the rod seal", "label": "Hydraulic/Pneumatic"},
]
LONG = " ".join(f"pump P-{i} vibration high, bearing noise, coupling worn" for i in range(40))  # ~540 tokens


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def load(*overrides: str) -> tuple[Any, Any, dict[str, list[dict[str, Any]]]]:
    """Config, recipe and its loaded splits (those that are set)."""
    cfg = compose(list(overrides))
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    return cfg, recipe, {name: records for name, records in splits.items() if records is not None}


@pytest.fixture()
def duplicated(tmp_path: Path) -> Path:
    """Lines 4 and 6 repeat lines 2 and 1; line 5 repeats line 3's text with another label (not a duplicate)."""
    records = [*TICKETS, TICKETS[1], {**TICKETS[2], "label": "Mechanical"}, TICKETS[0]]
    return write_jsonl(tmp_path / "train.jsonl", records)


def test_duplicates_refused_with_count_and_both_places(duplicated):
    cfg, recipe, splits = load(f"recipe.data.train={duplicated}")
    with pytest.raises(FtkitError) as error:
        check_splits(recipe, cfg, splits)
    assert error.value.where == f"{duplicated}:4"
    assert "2 of 6 training records repeat an earlier one (the same prompt and answer); the first repeats " in (
        error.value.problem
    )
    assert error.value.problem.endswith(f"{duplicated}:2")
    assert "data_checks.duplicates=drop" in error.value.fix and "=keep" in error.value.fix


def test_duplicates_dropped_keep_the_first_of_each(duplicated, caplog):
    cfg, recipe, splits = load(f"recipe.data.train={duplicated}", "data_checks.duplicates=drop")
    with caplog.at_level(logging.INFO, logger="ftkit"):
        checked = check_splits(recipe, cfg, splits)
    assert [r["source"] for r in checked["train"]] == [f"{duplicated}:{line}" for line in (1, 2, 3, 5)]
    assert checked["test"] is splits["test"] and checked["validation"] is splits["validation"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "2 of 6 training records repeat an earlier one; trained on the first of each, 4 remain "
        "(data_checks.duplicates=drop)"
    ]


def test_duplicates_kept_are_counted_in_an_info_line(duplicated, caplog):
    cfg, recipe, splits = load(f"recipe.data.train={duplicated}", "data_checks.duplicates=keep")
    with caplog.at_level(logging.INFO, logger="ftkit"):
        checked = check_splits(recipe, cfg, splits)
    assert checked["train"] == splits["train"]
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.INFO, "2 of 6 training records repeat an earlier one; all kept (data_checks.duplicates=keep)")
    ]


def test_multitask_weights_repeat_records_without_counting_them_as_duplicates():
    cfg, recipe, splits = load("recipe=multitask", "recipe.weights.tickets=2.5")
    assert len(splits["train"]) > len({r["source"] for r in splits["train"]})  # the weights repeat records
    assert check_splits(recipe, cfg, splits)["train"] == splits["train"]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_overlap_with_train_is_refused_with_count_and_places(split, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", TICKETS)
    # same text with another label still overlaps: the input is what the model is scored on
    held_out = write_jsonl(tmp_path / f"{split}.jsonl", [{"text": "new ticket", "label": "Electrical"}, TICKETS[2]])
    cfg, recipe, splits = load(f"recipe.data.train={train}", f"recipe.data.{split}={held_out}")
    with pytest.raises(FtkitError) as error:
        check_splits(recipe, cfg, splits)
    assert error.value.where == f"{held_out}:2"
    assert f"1 of 2 {split} records has the same input as a training record" in error.value.problem
    assert error.value.problem.endswith(f"(the first repeats {train}:3)")
    assert f"remove them from the {split} file" in error.value.fix and "memorisation" in error.value.fix


def test_example_input_leaves_out_the_answer():
    prompt = [{"role": "user", "content": "hi"}]
    answer = [{"role": "assistant", "content": "hello"}]
    assert example_input({"prompt": prompt, "completion": answer}) == prompt
    assert example_input({"messages": [*prompt, *answer]}) == prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture()
def with_long(tmp_path: Path) -> Path:
    long = [{"text": LONG, "label": "Mechanical"}, {"text": LONG + " again", "label": "Mechanical"}]
    return write_jsonl(tmp_path / "train.jsonl", [TICKETS[0], long[0], TICKETS[1], long[1], TICKETS[2]])


def test_lengths_are_the_chat_template_tokens_trl_trains_on(tokenizer):
    _, recipe, splits = load()
    examples = [recipe.to_example(r) for r in splits["train"][:20]]
    expected = [
        len(tokenizer.apply_chat_template(e["prompt"] + e["completion"], tokenize=True, return_dict=True)["input_ids"])
        for e in examples
    ]
    assert example_lengths(tokenizer, examples) == expected


def test_too_long_refused_with_count_longest_and_first_place(with_long, tokenizer):
    cfg, recipe, splits = load(f"recipe.data.train={with_long}")
    longest = max(example_lengths(tokenizer, [recipe.to_example(r) for r in splits["train"]]))
    with pytest.raises(FtkitError) as error:
        check_lengths(recipe, cfg, tokenizer, splits["train"])
    assert error.value.where == f"{with_long}:2"
    assert "2 of 5 training examples are longer than model.max_length=256 tokens" in error.value.problem
    assert f"raise model.max_length to {longest} (the longest)" in error.value.fix


def test_too_long_truncated_keeps_every_record_and_warns(with_long, tokenizer, caplog):
    cfg, recipe, splits = load(f"recipe.data.train={with_long}", "data_checks.too_long=truncate")
    with caplog.at_level(logging.INFO, logger="ftkit"):
        assert check_lengths(recipe, cfg, tokenizer, splits["train"]) == splits["train"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("2 of 5 training examples are longer than model.max_length=256 tokens (longest ")
    assert "TRL keeps their first 256 tokens" in warning


def test_too_long_dropped_are_left_out_and_counted(with_long, tokenizer, caplog):
    cfg, recipe, splits = load(f"recipe.data.train={with_long}", "data_checks.too_long=drop")
    with caplog.at_level(logging.INFO, logger="ftkit"):
        kept = check_lengths(recipe, cfg, tokenizer, splits["train"])
    assert [r["source"] for r in kept] == [f"{with_long}:{line}" for line in (1, 3, 5)]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("2 of 5 training examples are longer than model.max_length=256 tokens")
    assert warning.endswith("dropped, 3 remain (data_checks.too_long=drop)")
    # with room for the longest, nothing is over and nothing is said
    caplog.clear()
    roomy = compose([f"recipe.data.train={with_long}", "data_checks.too_long=drop", "model.max_length=1024"])
    assert check_lengths(recipe, roomy, tokenizer, splits["train"]) == splits["train"]
    assert not caplog.records
