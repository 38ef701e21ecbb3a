"""data.augment: eda's four operations (with and without synonyms), the synonyms file, paraphrasing by the model,
the counts, and that only the training split is augmented."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.config.compose import compose
from ftkit.data.augment import (
    eda_records,
    new_per_record,
    paraphrase_records,
    random_deletion,
    random_insertion,
    random_swap,
    read_synonyms,
    synonym_replacement,
    text_key,
)
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.run_dir import RunDir
from ftkit.training.run import prepare_training_split
from tests.conftest import tiny_overrides

WORDS = ["The", "pump", "on", "line", "4", "is", "leaking", "oil,", "again."]
SYNONYMS = {"pump": ["impeller"], "leaking": ["dripping", "seeping"], "oil": ["grease"]}


def is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(word in remaining for word in short)


# ---- the synonyms file -----------------------------------------------------------------------------------------


def test_read_synonyms(tmp_path):
    file = tmp_path / "synonyms.txt"
    file.write_text("# maintenance words\npump, impeller pump\n\nLeak, drip,  seep\nleak, escape\n", encoding="utf-8")
    assert read_synonyms(str(file)) == {
        "pump": ["impeller pump"],
        "impeller pump": ["pump"],
        "leak": ["drip", "seep", "escape"],  # in two groups: the synonyms of both
        "drip": ["Leak", "seep"],
        "seep": ["Leak", "drip"],
        "escape": ["leak"],
    }


@pytest.mark.parametrize(
    ("content", "where", "says"),
    [
        ("pump, impeller\nleak,, drip\n", ":2", "empty entry"),
        ("pump, impeller\nleak,\n", ":2", "empty entry"),
        ("pump\n", ":1", "a group needs two or more"),
        ("Pump, pump\n", ":1", "a group needs two or more"),
        ("# only a comment\n\n", "synonyms.txt", "no group"),
    ],
)
def test_a_malformed_synonyms_file_is_refused_at_its_line(tmp_path, content, where, says):
    file = tmp_path / "synonyms.txt"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(FtkitError) as refused:
        read_synonyms(str(file))
    assert refused.value.where.endswith(where) and says in refused.value.problem


def test_a_missing_or_non_utf8_synonyms_file_is_refused(tmp_path):
    with pytest.raises(FtkitError, match="does not exist"):
        read_synonyms(str(tmp_path / "nowhere.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("pump, impeller\ncaf\xe9, bar\n".encode("latin-1"))
    with pytest.raises(FtkitError) as refused:
        read_synonyms(str(latin1))
    assert refused.value.where == f"{latin1}:2" and "UTF-8" in refused.value.problem


# ---- eda's operations ------------------------------------------------------------------------------------------


def test_synonym_replacement_keeps_punctuation_and_capitals():
    rng = random.Random(0)
    replaced = synonym_replacement(WORDS, rng, SYNONYMS)
    assert replaced is not None and len(replaced) == len(WORDS) and replaced != WORDS
    changed = [(before, after) for before, after in zip(WORDS, replaced, strict=True) if before != after]
    assert len(changed) == 1  # n = round(0.1 * 9 words) = 1
    allowed = {"pump": {"impeller"}, "leaking": {"dripping", "seeping"}, "oil,": {"grease,"}}
    assert changed[0][1] in allowed[changed[0][0]]
    shouting = synonym_replacement(["PUMP", "Leaking"], random.Random(1), SYNONYMS)
    assert shouting is not None and (shouting[0] == "IMPELLER" or shouting[1] in ("Dripping", "Seeping"))
    assert synonym_replacement(["no", "synonyms", "here"], rng, SYNONYMS) is None


def test_random_insertion_with_and_without_synonyms():
    rng = random.Random(0)
    plain = random_insertion(WORDS, rng, None)  # a word of the text itself
    assert plain is not None and len(plain) == len(WORDS) + 1 and is_subsequence(WORDS, plain)
    (inserted,) = (Counter(plain) - Counter(WORDS)).elements()
    assert inserted in {word.strip(",.") for word in WORDS}
    with_synonyms = random_insertion(WORDS, rng, SYNONYMS)
    assert with_synonyms is not None and is_subsequence(WORDS, with_synonyms)
    (inserted,) = (Counter(with_synonyms) - Counter(WORDS)).elements()
    assert inserted in {"impeller", "dripping", "seeping", "grease"}
    assert random_insertion(["nothing", "known"], rng, SYNONYMS) is None


def test_random_swap_and_deletion():
    rng = random.Random(0)
    for _ in range(20):
        swapped = random_swap(WORDS, rng)
        assert swapped is not None and Counter(swapped) == Counter(WORDS)
        shorter = random_deletion(WORDS, rng)
        assert shorter is not None and 1 <= len(shorter) < len(WORDS) and is_subsequence(shorter, WORDS)
    assert random_swap(["alone"], rng) is None and random_deletion(["alone"], rng) is None
    assert random_deletion(["two", "words"], rng) in (["two"], ["words"])  # never all


def test_new_per_record_follows_the_factor():
    rng = random.Random(0)
    assert new_per_record(10, 2.0, rng) == [2] * 10
    half = new_per_record(10, 0.5, rng)
    assert sorted(half) == [0] * 5 + [1] * 5
    assert sorted(new_per_record(4, 1.25, rng)) == [1, 1, 1, 2]


TRAIN = [
    {"text": "pump on line 4 leaking oil", "label": "Mechanical", "source": "train.jsonl:1"},
    {"text": "PLC lost its program after the outage", "label": "Electrical", "source": "train.jsonl:2"},
    {"text": "valve sticks", "label": "Hydraulic/Pneumatic", "source": "train.jsonl:3"},
    {"text": "leaking", "label": "Mechanical", "source": "train.jsonl:4"},  # one word: only insertion applies
]


@pytest.mark.parametrize("synonyms", [None, SYNONYMS])
def test_eda_records_are_new_marked_labelled_and_seeded(synonyms):
    taken = {text_key(r["text"]) for r in TRAIN}
    added, counts = eda_records(TRAIN, 2.0, 7, synonyms, set(taken))
    assert counts["requested"] == 8 and counts["added"] == len(added) == 8 - counts["not_new"] and len(added) >= 6
    keys = [text_key(r["text"]) for r in added]
    assert len(set(keys)) == len(keys) and not set(keys) & taken  # nothing equal to an input or to each other
    for record in added:
        original = next(r for r in TRAIN if record["source"] == f"{r['source']} (eda)")
        assert record["label"] == original["label"] and record["augmented"] == "eda"
        if synonyms is None:  # no replacement; insertion repeats words of the same text
            assert set(record["text"].split()) <= set(original["text"].split())
    assert eda_records(TRAIN, 2.0, 7, synonyms, set(taken)) == (added, counts)
    assert eda_records(TRAIN, 2.0, 8, synonyms, set(taken))[0] != added


# ---- paraphrase ------------------------------------------------------------------------------------------------


def test_paraphrase_counts_what_it_drops_and_chains_its_rounds():
    asked: list[list[str]] = []
    answers = {
        "pump on line 4 leaking oil": 'Rewritten text: "the pump of line 4 leaks oil"',  # lead-in, quotes cut off
        "the pump of line 4 leaks oil": "line 4's pump is losing oil",  # round 2 rewrites round 1's text
        "PLC lost its program after the outage": "PLC lost its program after the outage",  # unchanged
        "valve sticks": "   ",  # empty
        "leaking": "valve sticks",  # another training input
        "fan noise in hall 2": "Rewrite the following text in other words: fan noise in hall 2",  # the request
        "belt slips": "belt belt belt belt belt belt belt belt belt belt",  # a model repeating itself
    }
    records = [
        *TRAIN,
        *({"text": t, "label": "Mechanical", "source": f"x:{t}"} for t in ("fan noise in hall 2", "belt slips")),
    ]

    def rewrite(texts: list[str]) -> list[str]:
        asked.append(texts)
        return [answers[text] for text in texts]

    taken = {text_key(r["text"]) for r in records}
    added, counts = paraphrase_records(records, 2.0, 0, rewrite, taken)
    assert [r["text"] for r in added] == ["the pump of line 4 leaks oil", "line 4's pump is losing oil"]
    assert all(r["label"] == "Mechanical" and r["source"] == "train.jsonl:1 (paraphrase)" for r in added)
    assert counts == {
        "requested": 12,
        "added": 2,
        "empty": 1,
        "unchanged": 1,
        "echoed": 1,
        "runaway": 1,
        "not_new": 1,
        "not_generated": 5,  # the second round of the five records whose first rewrite was dropped
    }
    assert asked == [[r["text"] for r in records], ["the pump of line 4 leaks oil"]]


def prepared(tiny_model: Path, tmp_path: Path, *settings: str, model: Any = None) -> tuple[dict, dict, RunDir]:
    """prepare_training_split as ftkit train runs it, on TRAIN with a validation and a test split."""
    cfg = compose([o for o in tiny_overrides(tiny_model, tmp_path, *settings) if not o.startswith("hydra.")])
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = {
        "train": copy.deepcopy(TRAIN),
        # "pump on line 4 leaking" is one deletion away from a training text: it must not be made
        "validation": [{"text": "pump on line 4 leaking", "label": "Mechanical", "source": "validation.jsonl:1"}],
        "test": [{"text": "valve sticks sticks", "label": "Hydraulic/Pneumatic", "source": "test.jsonl:1"}],
    }
    before = copy.deepcopy(splits)
    run_dir = RunDir(tmp_path)
    findings = prepare_training_split(
        cfg, recipe, splits, model, AutoTokenizer.from_pretrained(tiny_model), None, run_dir, write=True
    )
    assert splits["validation"] == before["validation"] and splits["test"] == before["test"]  # never augmented
    assert splits["train"][: len(TRAIN)] == before["train"]
    return splits, findings, run_dir


def test_only_the_training_split_is_augmented_and_listed(tiny_model, tmp_path):
    splits, findings, run_dir = prepared(tiny_model, tmp_path, "data.augment=eda", "data.augment_factor=10")
    added = splits["train"][len(TRAIN) :]
    assert added and all(r["augmented"] == "eda" for r in added)
    others = {text_key(r["text"]) for name in ("validation", "test") for r in splits[name]}
    assert not {text_key(r["text"]) for r in added} & others  # no new record repeats a validation or test input
    listed = [json.loads(line) for line in run_dir.augmented_file.read_text(encoding="utf-8").splitlines()]
    assert listed == added
    counts = findings["augment"]
    assert counts["method"] == "eda" and counts["requested"] == 40 and counts["added"] == len(added)
    assert counts["added"] + counts["not_new"] + counts["too_long"] == counts["requested"]


def test_paraphrase_on_the_tiny_model(tiny_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    splits, findings, _ = prepared(tiny_model, tmp_path, "data.augment=paraphrase", model=model)
    counts = findings["augment"]
    added = splits["train"][len(TRAIN) :]
    assert counts["requested"] == len(TRAIN) and counts["added"] == len(added)
    dropped = sum(counts[name] for name in ("empty", "unchanged", "echoed", "runaway", "not_new", "too_long"))
    assert counts["added"] + dropped == counts["requested"]
    for record in added:
        original = next(r for r in TRAIN if record["source"] == f"{r['source']} (paraphrase)")
        assert record["label"] == original["label"] and record["text"] != original["text"]


def test_ftkit_train_with_eda(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "data.augment=eda", "data.augment_factor=0.5"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    augmented = metrics["train"]["data_preparation"]["augment"]
    assert augmented["requested"] == 24 and 0 < augmented["added"] <= 24
    listed = [json.loads(line) for line in RunDir(run_dir).augmented_file.read_text().splitlines()]
    assert len(listed) == augmented["added"] and all(r["source"].endswith(" (eda)") for r in listed)
    assert metrics["finetuned"]["examples"] == 24  # the test split as capped, not augmented
    assert metrics["train"]["global_step"] == -(-(48 + augmented["added"]) // 8)
    report = (run_dir / "report.md").read_text()
    assert f"- data.augment=eda (factor 0.5): {augmented['added']} new training records of 24 asked for" in report
    assert "`augmented.jsonl`" in report
