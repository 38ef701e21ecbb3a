"""The sentiment recipe: bundled data, label maps (CSV, JSONL, hub:), errors, `ftkit train` end to end, benchmark."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from omegaconf import OmegaConf

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.tasks.classification import ClassificationTask
from tests.conftest import REPO, tiny_overrides
from tests.test_config import assert_user_error

LABELS = ["negative", "neutral", "positive"]
TWITTER_MAP = "recipe.label_map={0: negative, 1: positive, 2: neutral}"  # the Twitter financial news label ids
TWITTER_IDS = {"negative": 0, "positive": 1, "neutral": 2}


def sentiment_recipe(*overrides: str):
    cfg = compose(["recipe=sentiment", *overrides])
    check(cfg)
    return get_recipe_class("sentiment")(cfg.recipe)


def bundled_texts(count: int) -> list[dict]:
    lines = (REPO / "recipes/data/sentiment/test.jsonl").read_text().splitlines()[:count]
    return [json.loads(line) for line in lines]


def write_int_csv(path, records: list[dict], ids: dict[str, int]) -> None:
    """A CSV in the Twitter financial news layout: text,label with integer label ids."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        writer.writerows([r["text"], ids[r["label"]]] for r in records)


def test_bundled_sentiment_data():
    recipe = sentiment_recipe("recipe.data.max_train_examples=null")
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    assert {name: len(records) for name, records in splits.items()} == {"train": 600, "validation": 60, "test": 150}
    for records in splits.values():
        counts = Counter(r["label"] for r in records)
        assert set(counts) == set(LABELS) and len(set(counts.values())) == 1  # balanced in every split
    texts = [r["text"].lower() for records in splits.values() for r in records]
    assert len(texts) == len(set(texts)), "a headline appears twice"
    # The default cap takes a balanced prefix of train.jsonl.
    default = sentiment_recipe().load_split("train")
    assert len(default) == 450 and set(Counter(r["label"] for r in default).values()) == {150}


def test_label_map_matches_ints_and_strings_as_written(tmp_path):
    data = tmp_path / "mixed.jsonl"
    rows = [("up", 1), ("down", "0"), ("flat", " 2 "), ("bear", "bearish"), ("float id", 2.0)]
    data.write_text("".join(json.dumps({"headline": text, "y": label}) + "\n" for text, label in rows))
    recipe = sentiment_recipe(
        f"recipe.data.train={data}",
        "recipe.data.text_field=headline",
        "recipe.data.label_field=y",
        "recipe.label_map={0: negative, 1: positive, 2: neutral, bearish: negative}",
    )
    records = recipe.load_split("train")
    assert [r["label"] for r in records] == ["positive", "negative", "neutral", "negative", "neutral"]
    assert records[3]["source"] == f"{data}:4"


def test_label_names_need_no_map_and_ints_without_one_point_to_it(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nshares jump,positive\nshares slide,0\n")
    with pytest.raises(FtkitError) as error:
        sentiment_recipe(f"recipe.data.train={data}").load_split("train")
    assert error.value.where == f"{data}:3"
    assert "'0' is not one of recipe.labels" in error.value.problem and "recipe.label_map" in error.value.fix
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "shares jump", "label": "positive"}\n{"text": "shares slide", "label": 0}\n')
    with pytest.raises(FtkitError, match="label 0 is a raw value") as error:
        sentiment_recipe(f"recipe.data.train={data}").load_split("train")
    assert error.value.where == f"{data}:2" and "recipe.label_map={0: negative, ...}" in error.value.fix


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("recipe.label_map={0: bearish, 1: positive}", "maps 0 to 'bearish', which is not one of recipe.labels"),
        ("recipe.label_map={}", "recipe.label_map is empty"),
        ("recipe.label_map=[negative, positive]", "must map raw label values to labels"),
        ("recipe.prompt_template=Headline", "no {text} placeholder"),
    ],
)
def test_label_map_config_mistakes(override, fragment):
    with pytest.raises(FtkitError, match="Fix:") as error:
        sentiment_recipe(override)
    assert fragment in str(error.value)


def test_label_map_that_maps_one_value_twice_is_refused():
    cfg = OmegaConf.create(
        {"labels": LABELS, "prompt_template": "{text}", "label_map": {0: "negative", "0": "neutral"}}
    )
    with pytest.raises(FtkitError, match="maps 0 twice"):
        ClassificationTask.check_config(cfg)


def test_composing_sentiment_imports_nothing_heavy():
    code = (
        "import sys; from ftkit.config.compose import compose; from ftkit.config.checks import check;"
        f"check(compose(['recipe=sentiment', {TWITTER_MAP!r}]));"
        "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'sklearn') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_train_sentiment_end_to_end(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", "recipe=sentiment", *tiny_overrides(tiny_model, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["primary_metric"] == "accuracy"
    for which in ("base", "finetuned"):
        assert metrics[which]["examples"] == 24
        assert metrics[which]["confusion_matrix"]["labels"] == LABELS and set(metrics[which]["per_class"]) == set(
            LABELS
        )
        assert 0 <= metrics[which]["macro_f1"] <= 1
    predictions = [json.loads(line) for line in (run_dir / "predictions/finetuned.jsonl").read_text().splitlines()]
    assert len(predictions) == 24 and all(set(p["scores"]) == set(LABELS) for p in predictions)
    assert all(p["label"] == max(p["scores"], key=p["scores"].get) for p in predictions)
    assert metrics["train"]["global_step"] == 6  # 48 examples, batch 8
    assert "name: sentiment" in (run_dir / "config.yaml").read_text()


def test_label_map_from_csv_and_a_datasets_folder_end_to_end(run_ftkit, tiny_model, tmp_path):
    """Integer labels mapped in training (CSV) and evaluation (a folder read by datasets.load_dataset via hub:)."""
    records = bundled_texts(21)
    train = tmp_path / "sent_train.csv"
    write_int_csv(train, records[:12], TWITTER_IDS)
    folder = tmp_path / "local_dataset"
    folder.mkdir()
    (folder / "test.jsonl").write_text(
        "".join(json.dumps({"text": r["text"], "label": TWITTER_IDS[r["label"]]}) + "\n" for r in records[12:])
    )
    run_dir = tmp_path / "run"
    result = run_ftkit(
        "train",
        "recipe=sentiment",
        *tiny_overrides(tiny_model, run_dir),
        f"recipe.data.train={train}",
        "recipe.data.validation=null",
        f"recipe.data.test=hub:{folder}:test",
        TWITTER_MAP,
        "trainer.eval_strategy=no",
        "evaluate.base=false",
        env={"HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["finetuned"]
    expected = Counter(r["label"] for r in records[12:])
    assert {label: metrics["per_class"][label]["support"] for label in LABELS} == {x: expected[x] for x in LABELS}
    assert "Data: train 12, test 9" in (run_dir / "train.log").read_text()


def test_unmapped_raw_label_is_rejected_with_file_and_line(run_ftkit, tmp_path):
    data = tmp_path / "sent_train.csv"
    data.write_text('text,label\nshares jump,1\n"Beacon Telecom, flat",2\nRDSE sinks 4%,7\nshares slide,0\n')
    result = run_ftkit("train", "recipe=sentiment", f"recipe.data.train={data}", TWITTER_MAP)
    assert_user_error(
        result,
        f"{data}:4",
        "label value '7' is not in recipe.label_map {0: negative, 1: positive, 2: neutral}",
        "Fix: correct the record, or map the value too",
    )
    assert not any(tmp_path.rglob("adapter"))


def test_hub_dataset_offline_is_a_user_error(run_ftkit, tmp_path):
    result = run_ftkit(
        "train",
        "recipe=sentiment",
        "recipe.data.train=hub:zeroshot/twitter-financial-news-sentiment",
        TWITTER_MAP,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert_user_error(result, "recipe.data.train", "the Hugging Face Hub is unreachable", "unset HF_HUB_OFFLINE")
    assert len(result.stderr.strip().splitlines()) == 1  # one paragraph: no traceback, no Hydra report


def test_benchmark_script_on_a_tiny_slice(tiny_model, tmp_path):
    """benchmarks/classification.py end to end: stratified subsets, `ftkit train`, TF-IDF baseline, results row."""
    records = [json.loads(line) for line in (REPO / "recipes/data/sentiment/train.jsonl").read_text().splitlines()]
    data = tmp_path / "sent_all.csv"
    write_int_csv(data, records[:90], TWITTER_IDS)
    results = tmp_path / "results.md"
    command = [
        sys.executable,
        str(REPO / "benchmarks/classification.py"),
        "--name",
        "tiny-slice",
        "--train",
        str(data),
        "--recipe",
        "sentiment",
        "--label-map",
        "{0: negative, 1: positive, 2: neutral}",
        "--train-size",
        "30",
        "--test-size",
        "15",
        "--model-path",
        str(tiny_model),
        "--work-dir",
        str(tmp_path / "work"),
        "--results",
        str(results),
        "model.name=tiny-llama",
        "trainer.per_device_train_batch_size=8",
        "trainer.logging_steps=2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTKIT_CACHE": str(tmp_path / "cache")}
    env.pop("FTKIT_DEBUG", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    subsets = {
        split: [json.loads(line) for line in (tmp_path / "work" / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test")
    }
    assert Counter(r["label"] for r in subsets["train"]) == {"negative": 10, "neutral": 10, "positive": 10}
    assert Counter(r["label"] for r in subsets["test"]) == {"negative": 5, "neutral": 5, "positive": 5}
    assert not {r["text"] for r in subsets["train"]} & {r["text"] for r in subsets["test"]}

    metrics = json.loads((tmp_path / "work/run/metrics.json").read_text())
    header, rule, row = results.read_text().splitlines()
    assert header.startswith("| dataset | model | train examples | test examples | training minutes |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:4] == ["tiny-slice", "tiny-llama", "30", "15"]
    assert cells[5] == f"{metrics['base']['accuracy']:.3f}" and cells[8] == f"{metrics['finetuned']['macro_f1']:.3f}"
    # The TF-IDF baseline is the product's: the run's own tfidf row (same subsets) gives the same scores.
    tfidf = metrics["baselines"]["tfidf"]
    assert cells[9:11] == [f"{tfidf['accuracy']:.3f}", f"{tfidf['macro_f1']:.3f}"]
    assert row in result.stdout
