"""ftkit.reporting.statistics against known values, and the NER intervals and paired bootstrap in a run's report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ftkit.reporting import statistics
from ftkit.tasks.classification import classification_metrics


def pairs(only_first: int, only_other: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    """Per-example correctness of two classifiers with the given 2x2 table."""
    first = [True] * only_first + [False] * only_other + [True] * both + [False] * neither
    other = [False] * only_first + [True] * only_other + [True] * both + [False] * neither
    return first, other


def test_mcnemar_exact_binomial_by_hand():
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024
    result = statistics.mcnemar(*pairs(1, 9, both=30, neither=5))
    assert result["test"] == "McNemar, exact binomial, 10 discordant pairs"
    assert (result["only_this_correct"], result["only_other_correct"]) == (1, 9)
    assert result["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert result["significant"] and result["statistic"] is None


@pytest.mark.parametrize(("only_first", "only_other"), [(0, 0), (3, 3), (0, 5), (7, 2), (12, 12), (4, 20)])
def test_mcnemar_exact_equals_scipys_binomial_test(only_first, only_other):
    result = statistics.mcnemar(*pairs(only_first, only_other, both=10))
    expected = 1.0 if only_first + only_other == 0 else stats.binomtest(only_first, only_first + only_other).pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)
    assert result["significant"] == (expected < 0.05)


def test_mcnemar_chi_square_with_continuity_correction():
    # Wikipedia's McNemar example (b = 121, c = 59): chi^2 with correction (|121 - 59| - 1)^2 / 180 = 20.672
    result = statistics.mcnemar(*pairs(121, 59, both=101, neither=33))
    assert result["test"] == "McNemar, chi-square with continuity correction, 180 discordant pairs"
    assert result["statistic"] == pytest.approx(61**2 / 180)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(61**2 / 180, df=1), rel=1e-9)
    assert result["p_value"] == pytest.approx(5.45e-6, rel=0.01)
    # Agresti's approval ratings (86 vs 150): (|150 - 86| - 1)^2 / 236 = 16.818, p = 4.1e-5
    agresti = statistics.mcnemar(*pairs(150, 86, both=794, neither=570))
    assert agresti["statistic"] == pytest.approx(63**2 / 236)
    assert agresti["p_value"] == pytest.approx(stats.chi2.sf(63**2 / 236, df=1), rel=1e-9)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs():
    assert "exact" in statistics.mcnemar(*pairs(20, 4))["test"]
    assert "chi-square" in statistics.mcnemar(*pairs(20, 5))["test"]
    with pytest.raises(ValueError, match="unequal length"):
        statistics.mcnemar([True], [True, False])


def test_resample_counts_are_seeded_chunked_resamples():
    chunks = list(statistics.resample_counts(7, 450, seed=3))
    assert [len(chunk) for chunk in chunks] == [200, 200, 50]
    assert all((chunk.sum(axis=1) == 7).all() for chunk in chunks)
    again = np.concatenate(list(statistics.resample_counts(7, 450, seed=3)))
    np.testing.assert_array_equal(np.concatenate(chunks), again)
    other = np.concatenate(list(statistics.resample_counts(7, 450, seed=4)))
    assert not np.array_equal(again, other)


def test_plain_scores_equal_the_recipes_metrics():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]  # d occurs nowhere: sklearn counts its F1 as 0, and so must the bootstrap
    gold = list(rng.choice(labels[:3], 90))
    predicted = [g if rng.random() < 0.6 else str(rng.choice(labels[:3])) for g in gold]
    accuracy, macro_f1 = statistics.classification_scores(np.ones(90), gold, predicted, labels)
    expected = classification_metrics(gold, predicted, labels)
    assert accuracy[0] == pytest.approx(expected["accuracy"])
    assert macro_f1[0] == pytest.approx(expected["macro_f1"])


def test_all_correct_gives_the_interval_1_to_1_and_the_seed_reproduces():
    gold = ["a", "b"] * 100
    intervals = statistics.classification_intervals(gold, gold, ["a", "b"], samples=500, seed=1)
    assert intervals == {"accuracy": [1.0, 1.0], "macro_f1": [1.0, 1.0]}
    predicted = ["a"] * 200
    first = statistics.classification_intervals(gold, predicted, ["a", "b"], samples=500, seed=1)
    assert first == statistics.classification_intervals(gold, predicted, ["a", "b"], samples=500, seed=1)
    low, high = first["accuracy"]
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 200), abs=0.03)


def test_percentile_intervals_cover_the_true_accuracy_about_95_in_100_times():
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        gold = ["a"] * 100
        predicted = ["a" if rng.random() < 0.7 else "b" for _ in gold]
        low, high = statistics.classification_intervals(gold, predicted, ["a", "b"], 400, seed=trial)["accuracy"]
        covered += low <= 0.7 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_entity_scores_are_micro_precision_recall_f1_of_the_summed_counts():
    counts = [(2, 1, 0), (0, 0, 3), (1, 1, 1)]  # tp 3, fp 2, fn 4
    precision, recall, f1 = statistics.entity_scores(np.ones(3), counts)
    assert (precision[0], recall[0]) == pytest.approx((3 / 5, 3 / 7))
    assert f1[0] == pytest.approx(2 * 3 / (2 * 3 + 2 + 4))
    nothing = statistics.entity_scores(np.ones(2), [(0, 0, 0), (0, 0, 0)])
    assert [value[0] for value in nothing] == [0.0, 0.0, 0.0]


def test_paired_bootstrap_of_identical_systems_gives_p_1():
    counts = [(1, 0, 1), (0, 1, 0), (2, 0, 0), (0, 0, 1)] * 10
    result = statistics.paired_bootstrap_f1(counts, counts, samples=1000, seed=0)
    assert result["p_value"] == 1.0 and result["difference"] == 0.0 and result["interval"] == [0.0, 0.0]
    assert not result["significant"]


def test_paired_bootstrap_of_a_clearly_better_system():
    better = [(1, 0, 0)] * 40
    worse = [(0, 1, 1)] * 30 + [(1, 0, 0)] * 10
    result = statistics.paired_bootstrap_f1(better, worse, samples=999, seed=0)
    assert result["difference"] == pytest.approx(1 - 0.25)
    assert result["p_value"] == pytest.approx(2 / 1000) and result["significant"]
    assert result["interval"][0] > 0


def test_uncertainty_compares_the_first_system_with_each_other():
    gold = ["a", "b"] * 31
    report = statistics.classification_uncertainty(gold, {"finetuned": gold, "base": ["a"] * 62}, ["a", "b"], 200, 5)
    assert report["examples"] == 62 and report["samples"] == 200 and report["seed"] == 5
    assert f"{report['points_per_example']['accuracy']:.1f}" == "1.6"  # the 62-example test split
    assert set(report["intervals"]) == {"finetuned", "base"} and set(report["paired_tests"]) == {"base"}
    assert report["paired_tests"]["base"]["only_this_correct"] == 31


@pytest.fixture(scope="module")
def ner_recipe():
    from ftkit.config.compose import compose
    from ftkit.recipes import get_recipe_class

    cfg = compose(["recipe=ner"])
    return cfg, get_recipe_class("ner")(cfg.recipe)


def test_ner_entity_counts_sum_to_the_recipes_micro_scores(ner_recipe):
    _, recipe = ner_recipe
    records = recipe.load_split("test")[:40]
    predictions = []
    for i, record in enumerate(records):  # some right, some missed, some wrong spans or types
        entities = record["entities"] if i % 3 else record["entities"][:1]
        if i % 4 == 0:
            entities = [*entities, {"text": record["tokens"][0], "type": "Disease"}]
        predictions.append({"output": "", "parsed": True, "entities": entities})
    counts = recipe.entity_counts(predictions, records)
    metrics = recipe.score(predictions, records)
    precision, recall, f1 = statistics.entity_scores(np.ones(len(counts)), counts)
    assert (precision[0], recall[0], f1[0]) == pytest.approx(
        (metrics["micro_precision"], metrics["micro_recall"], metrics["micro_f1"])
    )
    assert sum(tp + fn for tp, _, fn in counts) == metrics["gold_entities"]


def test_a_ner_report_has_entity_intervals_and_the_paired_bootstrap(ner_recipe, tmp_path: Path):
    from omegaconf import OmegaConf

    from ftkit.reporting.baselines import run_baselines
    from ftkit.reporting.run_report import write_report

    cfg, recipe = ner_recipe
    cfg = OmegaConf.merge(cfg, {"evaluate": {"bootstrap_samples": 300}})
    records = recipe.load_split("test")[:30]
    results = {}
    for name, keep in (("finetuned", slice(None)), ("base", slice(0, 0))):
        predictions = [{"output": "", "parsed": True, "entities": r["entities"][keep]} for r in records]
        results[name] = {"metrics": recipe.score(predictions, records), "predictions": predictions, "seconds": 1.0}
    assert run_baselines(recipe, ["majority", "tfidf"], recipe.load_split("train"), records, 0) == {}
    stats_ = {"train_minutes": 1.0, "tokens_per_second": 10.0, "peak_rss_mb": 100.0}
    metrics = write_report(
        tmp_path, cfg, recipe, results["base"], results["finetuned"], stats_, [], test=records, seed=3
    )
    uncertainty = json.loads((tmp_path / "metrics.json").read_text())["uncertainty"]
    assert uncertainty == json.loads(json.dumps(metrics["uncertainty"]))
    assert set(uncertainty["intervals"]) == {"finetuned", "base"} and metrics["baselines"] == {}
    assert uncertainty["intervals"]["finetuned"]["micro_f1"] == [1.0, 1.0]
    paired = uncertainty["paired_tests"]["base"]
    assert paired["test"] == "paired bootstrap of entity F1, 300 resamples"
    assert paired["difference"] == 1.0 and paired["p_value"] == pytest.approx(2 / 301) and paired["significant"]
    gold = uncertainty["gold_entities"]
    assert gold == results["finetuned"]["metrics"]["gold_entities"] > 0
    report = (tmp_path / "report.md").read_text()
    assert f"One gold entity moves entity recall by {100 / gold:.1f} points" in report
    assert "| fine-tuned vs | test | F1 difference |" in report and "| base | paired bootstrap" in report
