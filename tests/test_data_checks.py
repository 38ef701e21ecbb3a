"""ftkit.training.data_checks on real recipe objects: duplicates (refuse / drop / keep), leakage into validation/test
(refuse / drop / keep, counted for metrics.json), lengths (refuse / truncate / drop). The refusals through the CLI
are in the bad-input corpus (tests/bad_inputs/cases/)."""

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


NEW = [
    {"text": "PLC fault light on the palletiser", "label": "Software/Controls"},
    {"text": "drive belt on fan F-12 squeals", "label": "Mechanical"},
    {"text": "guard missing on press P-1", "label": "Safety/Facilities"},
]


@pytest.fixture()
def leaky(tmp_path: Path) -> dict[str, Path]:
    """Training tickets; validation line 2 and test lines 1 and 3 repeat a training input."""
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", TICKETS),
        "validation": write_jsonl(tmp_path / "validation.jsonl", [NEW[0], {**TICKETS[0], "label": "Electrical"}]),
        "test": write_jsonl(tmp_path / "test.jsonl", [TICKETS[1], NEW[1], TICKETS[2], NEW[2]]),
    }


def leaky_overrides(files: dict[str, Path], mode: str) -> list[str]:
    return [f"recipe.data.{split}={path}" for split, path in files.items()] + [f"data_checks.leakage={mode}"]


def test_leakage_refused_names_both_ways_out(leaky):
    cfg, recipe, splits = load(*leaky_overrides(leaky, "refuse"))
    findings: dict[str, Any] = {}
    with pytest.raises(FtkitError) as error:
        check_splits(recipe, cfg, splits, findings)
    assert error.value.where == f"{leaky['validation']}:2"  # validation is checked first
    assert "data_checks.leakage=drop" in error.value.fix and "=keep" in error.value.fix
    assert findings == {}  # nothing to report: the run stops here


def test_leakage_dropped_from_validation_and_test_and_counted(leaky, caplog):
    cfg, recipe, splits = load(*leaky_overrides(leaky, "drop"))
    findings: dict[str, Any] = {}
    with caplog.at_level(logging.INFO, logger="ftkit"):
        checked = check_splits(recipe, cfg, splits, findings)
    assert [r["source"] for r in checked["validation"]] == [f"{leaky['validation']}:1"]
    assert [r["source"] for r in checked["test"]] == [f"{leaky['test']}:{line}" for line in (2, 4)]
    assert checked["train"] == splits["train"]
    assert findings == {
        "leakage": {
            "validation": {"overlapping": 1, "action": "drop"},
            "test": {"overlapping": 2, "action": "drop"},
        }
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "1 of 2 validation records has the same input as a training record; dropped from validation, 1 remain "
        "(data_checks.leakage=drop)",
        "2 of 4 test records have the same input as a training record; dropped from test, 2 remain "
        "(data_checks.leakage=drop)",
    ]


def test_leakage_kept_is_warned_and_counted(leaky, caplog):
    cfg, recipe, splits = load(*leaky_overrides(leaky, "keep"))
    findings: dict[str, Any] = {}
    with caplog.at_level(logging.INFO, logger="ftkit"):
        checked = check_splits(recipe, cfg, splits, findings)
    assert checked["test"] == splits["test"] and checked["validation"] == splits["validation"]
    assert findings["leakage"]["test"] == {"overlapping": 2, "action": "keep"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and warnings[1].startswith(
        f"2 of 4 test records have the same input as a training record (the first: {leaky['test']}:1 repeats "
        f"{leaky['train']}:2); kept"
    )


def test_leakage_drop_that_would_empty_a_split_is_refused(leaky):
    leaky["test"].write_text(leaky["train"].read_text())
    cfg, recipe, splits = load(*leaky_overrides(leaky, "drop"))
    with pytest.raises(FtkitError, match="every test record has the same input") as error:
        check_splits(recipe, cfg, {"train": splits["train"], "test": splits["test"]})
    assert "data_checks.leakage=keep" in error.value.fix


def test_clean_splits_report_no_overlap():
    cfg, recipe, splits = load()
    findings: dict[str, Any] = {}
    check_splits(recipe, cfg, splits, findings)
    assert findings == {"leakage": {name: {"overlapping": 0, "action": "refuse"} for name in ("validation", "test")}}


def test_leakage_counts_reach_metrics_json(leaky, run_ftkit, tiny_model, tmp_path):
    from tests.conftest import tiny_overrides

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, run_dir, "trainer.max_steps=1", "evaluate.base=false")
    result = run_ftkit("train", *overrides, *leaky_overrides(leaky, "drop"), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["data_checks"] == {
        "leakage": {"validation": {"overlapping": 1, "action": "drop"}, "test": {"overlapping": 2, "action": "drop"}}
    }
    assert metrics["finetuned"]["examples"] == 2  # the test records left after the drop


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
