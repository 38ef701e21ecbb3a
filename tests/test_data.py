"""Data files: bundled tickets data, and bad records rejected with file:line through `ftkit train`."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from tests.test_config import assert_user_error


def tickets_recipe(*overrides: str):
    cfg = compose(list(overrides))
    return get_recipe_class("tickets")(cfg.recipe)


def test_bundled_tickets_data():
    recipe = tickets_recipe("recipe.data.max_train_examples=null")
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    assert sum(len(records) for records in splits.values()) >= 600
    for records in splits.values():
        assert set(Counter(r["label"] for r in records)) == set(recipe.labels)
    texts = [r["text"] for records in splits.values() for r in records]
    assert len(texts) == len(set(texts)), "a ticket appears twice"
    assert len(recipe.labels) >= 5


def test_max_train_examples_caps_only_the_train_split():
    recipe = tickets_recipe("recipe.data.max_train_examples=50")
    assert len(recipe.load_split("train")) == 50
    assert len(recipe.load_split("test")) == 120


def test_to_example_is_a_conversational_prompt_completion():
    recipe = tickets_recipe()
    example = recipe.to_example({"text": "hyd hose weeping at HPU-3", "label": "Hydraulic/Pneumatic"})
    assert example["prompt"][0]["role"] == "system"
    assert example["prompt"][-1] == {"role": "user", "content": "hyd hose weeping at HPU-3"}
    assert example["completion"] == [{"role": "assistant", "content": "Hydraulic/Pneumatic"}]


def test_parse_output():
    recipe = tickets_recipe()
    assert recipe.parse_output(" electrical\n") == "Electrical"
    assert recipe.parse_output("Safety/Facilities, because the guard is missing") == "Safety/Facilities"
    assert recipe.parse_output("no idea") is None


def test_csv_with_custom_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('body,category\n"bearing, drive end",Mechanical\nfuse blown,Electrical\n')
    recipe = tickets_recipe(
        f"recipe.data.train={path}", "recipe.data.text_field=body", "recipe.data.label_field=category"
    )
    assert [r["label"] for r in recipe.load_split("train")] == ["Mechanical", "Electrical"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_record_missing_text_field_names_file_and_line(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    write_jsonl(data, [{"text": "fuse blown", "label": "Electrical"}, {"body": "belt slipping", "label": "Mechanical"}])
    result = run_ftkit("train", f"recipe.data.train={data}", "evaluate.base=false")
    assert_user_error(result, f"{data}:2", "no 'text' field", "Fix:")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("adapter"))


def test_label_outside_the_set_names_file_and_line(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    write_jsonl(
        data,
        [
            {"text": "fuse blown", "label": "Electrical"},
            {"text": "ok", "label": "Mechanical"},
            {"text": "belt slipping", "label": "Mechanicl"},
        ],
    )
    result = run_ftkit("train", f"recipe.data.train={data}")
    assert_user_error(result, f"{data}:3", "'Mechanicl' is not one of recipe.labels", "did you mean 'Mechanical'")


def test_malformed_json_and_missing_file(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a", "label": "Electrical"}\n{"text": "b", \n')
    assert_user_error(run_ftkit("train", f"recipe.data.test={data}"), f"{data}:2", "malformed JSON")
    assert_user_error(run_ftkit("train", "recipe.data.train=nope.jsonl"), "recipe.data.train", "does not exist")


def test_config_holds_bundled_paths():
    cfg = compose([])
    assert OmegaConf.select(cfg, "recipe.data.train") == "bundled:tickets/train.jsonl"


def test_hub_spec_reads_a_folder_of_data_files_through_datasets(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep the test's cache here
    folder = tmp_path / "tickets_dataset"
    folder.mkdir()
    write_jsonl(
        folder / "train.jsonl", [{"text": "fuse blown", "label": "Electrical"}, {"text": "belt", "label": "Mechanical"}]
    )
    write_jsonl(
        folder / "test.jsonl", [{"text": "PLC fault", "label": "Software/Controls"}, {"text": "x", "label": "Pump"}]
    )
    # Without a split the spec reads the split being loaded (train here); with one, that split.
    recipe = tickets_recipe(f"recipe.data.train=hub:{folder}", f"recipe.data.test=hub:{folder}:test")
    train = recipe.load_split("train")
    assert [r["label"] for r in train] == ["Electrical", "Mechanical"]
    assert train[1]["source"] == f"hub:{folder}:train[1]"
    with pytest.raises(FtkitError, match="'Pump' is not one of recipe.labels") as error:
        recipe.load_split("test")
    assert error.value.where == f"hub:{folder}:test[1]"


def test_hub_spec_mistakes(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "only_train"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "fuse blown", "label": "Electrical"}])
    with pytest.raises(FtkitError, match=r"cannot load split 'validation'.*\['train'\]") as error:
        tickets_recipe(f"recipe.data.validation=hub:{folder}").load_split("validation")
    assert error.value.where == "recipe.data.validation"
    with pytest.raises(FtkitError, match="names no dataset"):
        tickets_recipe("recipe.data.train=hub:").load_split("train")
    with pytest.raises(FtkitError, match="no dataset .* on the Hub or on disk"):
        tickets_recipe(f"recipe.data.train=hub:{tmp_path / 'missing'}").load_split("train")
