"""Splits of one file (recipe.data.split) and recipe.labels=auto: proportions, stratification, the same split
every time (and under another PYTHONHASHSEED), small groups, max_train_examples after the split, the run's record
of the split, and `ftkit eval` on a split run scoring the run's own test split and refusing a changed data file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.data.splits import assign_holdout, read_splits
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.tasks.classification import labels_override, with_labels_read
from tests.conftest import REPO, tiny_overrides
from tests.test_config import assert_user_error

SPLIT = ["recipe.data.split=[0.8,0.1,0.1]", "recipe.data.validation=null", "recipe.data.test=null"]
# An imbalanced label set, as in the course's failure-mode data: 50 / 30 / 15 / 3 / 2 records.
SIZES = {"Pump": 50, "Motor": 30, "Valve": 15, "Seal": 3, "Belt": 2}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def labelled_file(path: Path, sizes: dict[str, int] = SIZES) -> Path:
    """Records of each label interleaved (the file's order is not the labels' order)."""
    rows = [(i, label) for label, size in sizes.items() for i in range(size)]
    rows.sort()
    return write_jsonl(path, [{"text": f"{label.lower()} fault number {i}", "label": label} for i, label in rows])


def tickets(*overrides: str):
    return get_recipe_class("tickets")(compose(list(overrides)).recipe)


def ids(records: list[dict]) -> list[str]:
    return [record["source"] for record in records]


def test_split_proportions_are_exact_and_each_label_keeps_its_share(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    recipe = tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto")
    splits = read_splits(recipe).records
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [80, 10, 10]
    # disjoint, and together every record of the file once
    every = [source for records in splits.values() for source in ids(records)]
    assert len(every) == len(set(every)) == 100
    for name in ("validation", "test"):
        counts = Counter(record["label"] for record in splits[name])
        for label in ("Pump", "Motor", "Valve"):  # 10% of 50 / 30 / 15, within one record of rounding
            assert abs(counts[label] - SIZES[label] * 0.1) <= 1, (name, counts)
        assert counts["Seal"] + counts["Belt"] <= 1  # small groups keep their records in training (see below)


def test_groups_of_one_or_two_records_stay_in_train_and_every_label_is_trained_on(tmp_path):
    chosen = assign_holdout(["a"] * 20 + ["b", "c", "c", "d", "d", "d"], [0.6, 0.2, 0.2], seed=1, where="file")
    train = set(chosen["train"])
    assert {20, 21, 22} <= train  # b (1 record) and c (2 records) whole
    assert len({23, 24, 25} & train) >= 1  # d (3 records) keeps at least one in train
    assert sum(len(chosen[name]) for name in ("train", "validation", "test")) == 26
    assert len(chosen["test"]) == len(chosen["validation"]) == 5  # round(26 x 0.2)


def test_a_validation_fraction_of_0_makes_no_validation_split(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    recipe = tickets(f"recipe.data.train={data}", "recipe.data.split=[0.9,0,0.1]", *SPLIT[1:], "recipe.labels=auto")
    assert recipe.load_split("validation") is None
    assert len(recipe.load_split("test")) == 10 and len(recipe.load_split("train")) == 90


def test_the_same_split_every_time_and_another_with_another_seed(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    first = read_splits(tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto"))
    second = read_splits(tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto"))
    assert first.record == second.record
    other = read_splits(tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto", "recipe.data.split_seed=7"))
    assert ids(other.records["test"]) != ids(first.records["test"])


def test_the_split_does_not_depend_on_python_hash_seed(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    script = (
        "import json, sys\n"
        "from ftkit.config.compose import compose\n"
        "from ftkit.data.splits import read_splits\n"
        "from ftkit.recipes import get_recipe_class\n"
        "cfg = compose(sys.argv[1:])\n"
        "record = read_splits(get_recipe_class('tickets')(cfg.recipe)).record\n"
        "print(json.dumps({name: split['ids'] for name, split in record['splits'].items()}))\n"
    )
    args = [f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto"]
    outputs = []
    for seed in ("1", "98765"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]["test"]) == 10


def test_max_train_examples_caps_the_train_split_after_the_split(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    whole = read_splits(tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto")).records
    capped = read_splits(
        tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto", "recipe.data.max_train_examples=20")
    )
    assert ids(capped.records["train"]) == ids(whole["train"])[:20]
    assert ids(capped.records["test"]) == ids(whole["test"])  # the held-out splits do not move
    assert capped.record["splits"]["train"]["count"] == 20 and capped.record["max_train_examples"] == 20


def test_too_few_records_to_hold_out_is_refused(tmp_path):
    data = labelled_file(tmp_path / "tiny.jsonl", {"Pump": 2, "Motor": 2, "Valve": 1})
    with pytest.raises(FtkitError, match="can be held out") as error:
        tickets(f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto").load_split("test")
    assert error.value.where == "recipe.data.split"


def test_ner_splits_stratified_by_the_entity_types_a_sentence_holds(tmp_path):
    records = []
    for i in range(60):
        kinds = [["Disease"], ["Chemical"], ["Disease", "Chemical"], []][i % 4]
        text = " ".join(f"{kind.lower()}{i}" for kind in kinds) or f"nothing here {i}"
        spans, start = [], 0
        for kind in kinds:
            word = f"{kind.lower()}{i}"
            spans.append({"start": start, "end": start + len(word), "type": kind})
            start += len(word) + 1
        records.append({"text": text, "spans": spans})
    data = write_jsonl(tmp_path / "ner.jsonl", records)
    cfg = compose(["recipe=ner", f"recipe.data.train={data}", *SPLIT, "recipe.entity_types=null"])
    recipe = get_recipe_class("ner")(cfg.recipe)
    assert recipe.stratum(recipe.load_split("test")[0]) in {"Disease", "Chemical", "Chemical|Disease", ""}
    test = recipe.load_split("test")
    assert len(test) == 6
    # 15 sentences of each kind, 1.5 each: one each, and the two left over to the first strata by name
    assert Counter(recipe.stratum(r) for r in test) == {"": 2, "Chemical": 2, "Chemical|Disease": 1, "Disease": 1}
    assert recipe.entity_types() == ["Chemical", "Disease"]
    assert recipe.split_reader.record()["strata"] == {"": 15, "Chemical": 15, "Chemical|Disease": 15, "Disease": 15}


def test_instruct_splits_whole_conversations_before_the_per_turn_examples(tmp_path):
    conversations = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
                {"role": "user", "content": f"follow-up {i}"},
                {"role": "assistant", "content": f"second answer {i}"},
            ]
        }
        for i in range(20)
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", conversations)
    cfg = compose(["recipe=sft_instruct", f"recipe.data.train={data}", *SPLIT])
    recipe = get_recipe_class("sft_instruct")(cfg.recipe)
    train, test = recipe.load_split("train"), recipe.load_split("test")
    assert len(test) == 2 and len(train) == 16 * 2  # 16 conversations, two assistant turns each
    assert not set(ids(test)) & set(ids(train))


def test_auto_labels_are_the_training_splits_by_frequency_ties_by_name(tmp_path):
    data = labelled_file(tmp_path / "train.jsonl", {"Motor": 3, "Pump": 5, "Belt": 3, "Valve": 2})
    recipe = tickets(f"recipe.data.train={data}", "recipe.labels=auto", "recipe.data.validation=null")
    assert recipe.labels == ["Pump", "Belt", "Motor", "Valve"]


def test_auto_labels_refuse_a_test_label_unseen_in_training_at_its_file_and_line(tmp_path):
    train = labelled_file(tmp_path / "train.jsonl", {"Motor": 3, "Pump": 5})
    rows = [{"text": "motor hot", "label": "Motor"}, {"text": "sink clogged", "label": "Plumbing"}]
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    recipe = tickets(f"recipe.data.train={train}", f"recipe.data.test={test}", "recipe.labels=auto")
    with pytest.raises(FtkitError, match="'Plumbing' \\(test split\\) does not occur in the training split") as error:
        recipe.load_split("test")
    assert error.value.where == f"{test}:2"


def test_auto_labels_with_a_label_map_are_the_mapped_names(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"text": f"headline {i}", "label": i % 3} for i in range(7)])
    cfg = compose(
        [
            "recipe=sentiment",
            f"recipe.data.train={data}",
            "recipe.labels=auto",
            "recipe.label_map={0: negative, 1: positive, 2: neutral}",
        ]
    )
    assert get_recipe_class("sentiment")(cfg.recipe).labels == ["negative", "neutral", "positive"]  # 3, 2, 2


def test_labels_read_are_written_into_the_config_and_the_overrides_a_run_replays(tmp_path):
    data = labelled_file(tmp_path / "train.jsonl", {"Motor": 3, "Pump/Seal": 5, "it's": 2})
    cfg = compose([f"recipe.data.train={data}", "recipe.labels=auto"])
    recipe = get_recipe_class("tickets")(cfg.recipe)
    overrides = with_labels_read(cfg, recipe, [f"recipe.data.train={data}", "recipe.labels=auto"])
    assert list(cfg.recipe.labels) == ["Pump/Seal", "Motor", "it's"]
    assert overrides == [f"recipe.data.train={data}", labels_override(["Pump/Seal", "Motor", "it's"])]
    assert list(compose(overrides).recipe.labels) == ["Pump/Seal", "Motor", "it's"]  # what eval and serve replay


@pytest.mark.parametrize("value", ["Pump", "5", "true"])
def test_labels_must_be_a_list_or_auto(value):
    with pytest.raises(FtkitError, match="recipe.labels must be a list of label names or the word auto"):
        check(compose([f"recipe.labels={value}"]))


def test_a_run_refuses_a_recorded_split_that_differs(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    args = [f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto"]
    record = read_splits(tickets(*args)).record
    record_file = tmp_path / "splits.json"
    read_splits(tickets(*args), record, record_file)  # the same split: accepted
    with pytest.raises(FtkitError, match="seed: the run's 42, now 7"):
        read_splits(tickets(*args, "recipe.data.split_seed=7"), record, record_file)
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # two records swapped
    with pytest.raises(FtkitError, match="the data changed since the run") as error:
        read_splits(tickets(*args), record, record_file)
    assert error.value.where == str(record_file)


def test_eval_scores_a_split_runs_own_test_split_and_refuses_a_changed_file(run_ftkit, tiny_model, tmp_path):
    data = labelled_file(tmp_path / "all.jsonl", {"Mechanical": 20, "Electrical": 16, "Software/Controls": 4})
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, run_dir, f"recipe.data.train={data}", *SPLIT, "recipe.labels=auto")
    result = run_ftkit("train", *[o for o in overrides if not o.startswith("evaluate.max_examples")])
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads((run_dir / "splits.json").read_text())
    assert [record["splits"][name]["count"] for name in ("train", "validation", "test")] == [32, 4, 4]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["labels"] == ["Mechanical", "Electrical", "Software/Controls"]
    assert "recipe.labels=auto" not in (run_dir / "overrides.yaml").read_text()
    predictions = [json.loads(line) for line in (run_dir / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert len(predictions) == 4

    evaluated = run_ftkit("eval", f"run={run_dir}", f"out={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["test_sha256"] == record["splits"]["test"]["sha256"]
    run_metrics = json.loads((run_dir / "metrics.json").read_text())["finetuned"]
    assert summary["metrics"]["accuracy"] == run_metrics["accuracy"]

    # a record of the test split changed: the split made now is not the one the run was scored on
    line = int(record["splits"]["test"]["ids"][0].rpartition(":")[2])
    lines = data.read_text().splitlines()
    lines[line - 1] = lines[line - 1].replace("fault number", "fault no.")
    data.write_text("\n".join(lines) + "\n")
    refused = run_ftkit("eval", f"run={run_dir}", f"out={tmp_path / 'eval-2'}")
    assert_user_error(refused, "the data changed since the run", "restore the data file", "splits.json")
    assert not (tmp_path / "eval-2").exists()
