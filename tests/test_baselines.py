"""ftkit.reporting.baselines: majority and TF-IDF baselines, and their rows and intervals in a run's report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftkit.config.checks import BASELINES
from ftkit.reporting.baselines import PREDICTORS, majority_labels, run_baselines, tfidf_labels
from ftkit.reporting.run_report import summary_table, write_report


def records(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in pairs]


def test_the_config_check_and_the_predictors_know_the_same_baselines():
    assert sorted(PREDICTORS) == sorted(BASELINES)


def test_majority_is_the_most_frequent_training_label_ties_to_the_first_listed():
    train = records(("a", "Motor"), ("b", "Pump"), ("c", "Pump"), ("d", "Valve"))
    assert majority_labels(train, records(("x", "Motor"), ("y", "Valve")), ["Motor", "Pump", "Valve"], 0) == [
        "Pump",
        "Pump",
    ]
    tied = records(("a", "Valve"), ("b", "Motor"))
    assert majority_labels(tied, records(("x", "Pump")), ["Motor", "Pump", "Valve"], 0) == ["Motor"]


def test_tfidf_learns_words_and_fields_and_is_deterministic():
    words = {"Pump": "pump impeller cavitation seal", "Motor": "motor winding overheating bearing"}
    train = [
        {"text": f"{words[label].split()[i % 4]} report {i}", "label": label}
        for i in range(40)
        for label in ("Pump", "Motor")
    ]
    test = records(("the impeller is worn", "Pump"), ("winding smells burnt", "Motor"))
    first = tfidf_labels(train, test, ["Pump", "Motor"], seed=1)
    assert first == ["Pump", "Motor"] == tfidf_labels(train, test, ["Pump", "Motor"], seed=1)
    # the other fields the prompt names are read too: here they alone tell the labels apart
    fielded = [{"text": "same text", "label": r["label"], "fields": {"site": r["label"].lower()}} for r in train]
    probe = [{"text": "same text", "label": "Motor", "fields": {"site": "motor"}}]
    assert tfidf_labels(fielded, probe, ["Pump", "Motor"], seed=1) == ["Motor"]


def test_tfidf_on_a_single_label_training_split_predicts_that_label():
    train = records(("pump leaks", "Pump"), ("pump seal", "Pump"))
    assert tfidf_labels(train, records(("motor hums", "Motor")), ["Pump", "Motor"], seed=0) == ["Pump"]


@pytest.fixture(scope="module")
def tickets():
    from ftkit.config.compose import compose
    from ftkit.recipes import get_recipe_class

    cfg = compose([])
    recipe = get_recipe_class("tickets")(cfg.recipe)
    return cfg, recipe, recipe.load_split("train"), recipe.load_split("test")


def test_baselines_are_scored_by_the_recipe_on_the_test_split(tickets):
    _, recipe, train, test = tickets
    results = run_baselines(recipe, ["majority", "tfidf"], train, test, seed=42)
    assert list(results) == ["majority", "tfidf"]
    most = Counter(r["label"] for r in train).most_common(1)[0][0]
    majority = results["majority"]
    assert majority["predictions"] == [{"label": most}] * len(test)
    assert majority["metrics"]["accuracy"] == pytest.approx(sum(r["label"] == most for r in test) / len(test))
    assert majority["metrics"] == recipe.score(majority["predictions"], test)
    tfidf = results["tfidf"]["metrics"]
    assert set(tfidf) == set(majority["metrics"]) and tfidf["examples"] == len(test)
    assert tfidf["accuracy"] > 0.5 > majority["metrics"]["accuracy"]  # the bundled tickets are mostly keywords
    assert run_baselines(recipe, [], train, test, seed=42) == {}


def fake_model_results(recipe, test: list[dict]) -> dict[str, dict]:
    """A 'fine-tuned' model right on 5 in 6 test tickets and a 'base' one that always says the first label."""
    results = {}
    for name, predicted in (
        ("finetuned", [r["label"] if i % 6 else recipe.labels[0] for i, r in enumerate(test)]),
        ("base", [recipe.labels[0]] * len(test)),
    ):
        predictions = [{"label": label} for label in predicted]
        results[name] = {"metrics": recipe.score(predictions, test), "predictions": predictions, "seconds": 2.0}
    return results


def header(markdown: str) -> list[str]:
    """The column names of the first table row that starts with 'metric' (the summary table)."""
    line = next(line for line in markdown.splitlines() if line.startswith("| metric "))
    return [cell.strip() for cell in line.split("|")[1:-1]]


TRAIN_STATS = {"train_minutes": 1.5, "tokens_per_second": 100.0, "peak_rss_mb": 900.0, "global_step": 3}


def report(tickets, folder: Path, **evaluate) -> tuple[dict, str]:
    cfg, recipe, train, test = tickets
    cfg = OmegaConf.merge(cfg, {"evaluate": evaluate})
    baselines = run_baselines(recipe, list(cfg.evaluate.baselines), train, test, seed=42)
    models = fake_model_results(recipe, test)
    folder.mkdir(exist_ok=True)  # ftkit train's write_config made it
    write_report(
        folder,
        cfg,
        recipe,
        models["base"],
        models["finetuned"],
        TRAIN_STATS,
        [],
        baselines=baselines,
        test=test,
        seed=42,
    )
    return json.loads((folder / "metrics.json").read_text()), (folder / "report.md").read_text()


def test_the_report_has_baseline_rows_intervals_and_paired_tests(tickets, tmp_path):
    metrics, text = report(tickets, tmp_path, bootstrap_samples=1000)
    test = tickets[3]
    assert set(metrics["baselines"]) == {"majority", "tfidf"}
    assert set(metrics["evaluation_seconds"]) == {"base", "finetuned", "majority", "tfidf"}
    for name in ("majority", "tfidf"):
        lines = (tmp_path / "predictions" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line)["label"] for line in lines] == [
            p["label"] for p in run_baselines(tickets[1], [name], tickets[2], test, 42)[name]["predictions"]
        ]
    uncertainty = metrics["uncertainty"]
    assert uncertainty["samples"] == 1000 and uncertainty["examples"] == len(test) and uncertainty["seconds"] < 30
    assert list(uncertainty["intervals"]) == ["finetuned", "base", "majority", "tfidf"]
    for system, intervals in uncertainty["intervals"].items():
        scores = metrics["finetuned"] if system == "finetuned" else metrics.get(system) or metrics["baselines"][system]
        for name in ("accuracy", "macro_f1"):
            low, high = intervals[name]
            assert low <= scores[name] <= high, (system, name)
    assert list(uncertainty["paired_tests"]) == ["base", "majority", "tfidf"]
    base_test = uncertainty["paired_tests"]["base"]
    assert base_test["only_other_correct"] == 0 and base_test["p_value"] < 0.05 and "chi-square" in base_test["test"]

    assert header(summary_table(metrics, "accuracy")) == ["metric", "majority", "tfidf", "base", "fine-tuned"]
    assert header(text) == header(summary_table(metrics, "accuracy"))
    points = 100 / len(test)
    assert f"One test example moves accuracy by {points:.1f} points ({len(test)} test examples)." in text
    assert "## How sure these scores are (test split)" in text
    assert "| tfidf | McNemar" in text and "| majority |" in text
    assert "significant at 0.05" in text


def test_baselines_and_intervals_can_be_turned_off(tickets, tmp_path):
    metrics, text = report(tickets, tmp_path, baselines=[], bootstrap_samples=0)
    assert metrics["baselines"] == {} and metrics["uncertainty"] is None
    assert not (tmp_path / "predictions" / "tfidf.jsonl").exists()
    assert "How sure" not in text and header(text) == ["metric", "base", "fine-tuned"]
    # bootstrap alone off: the baseline rows stay, without intervals
    metrics, _ = report(tickets, tmp_path / "rows", bootstrap_samples=0)
    assert set(metrics["baselines"]) == {"majority", "tfidf"} and metrics["uncertainty"] is None


def test_an_older_runs_metrics_without_baselines_still_make_a_table():
    metrics = {
        "finetuned": {"accuracy": 0.9},
        "base": None,
        "train": {"train_minutes": 1.0, "tokens_per_second": 5.0, "peak_rss_mb": 10.0},
    }
    assert header(summary_table(metrics, "accuracy")) == ["metric", "base", "fine-tuned"]
