"""How sure a test score is: bootstrap intervals, paired tests, and what one test example is worth.

Pure functions of per-example outcomes (numpy and the standard library; no model, no config):

- Resamples: `resample_counts` draws how often each of n test examples occurs in each bootstrap resample
  (seeded, in chunks, so 1000 resamples of a large test split stay within memory); every system is resampled with
  the same draws, which makes the comparisons paired.
- Intervals: `percentile_interval` (the 95% percentile bootstrap interval); `classification_intervals` (accuracy and
  macro-F1 over the given labels, a label absent from both gold and predictions counting 0, as sklearn's
  zero_division=0 does); `entity_intervals` (entity precision / recall / F1 from per-sentence true positive, false
  positive and false negative counts, summed per resample, as seqeval's micro average does).
- Paired tests: `mcnemar` (exact two-sided binomial test on the discordant pairs when there are fewer than
  EXACT_BELOW of them, else chi-square with continuity correction; the result names which);
  `paired_bootstrap_f1` (two-sided p of the entity F1 difference from the resampled differences).
  `paired_bootstrap_mean` (the same for the mean of a per-example outcome, e.g. a preference pair ranked right).
- `points_per_example`: how many percentage points one test example moves accuracy (100 / n).
- What a run's report holds: `classification_uncertainty` (intervals for each system, McNemar of the first
  against each other), `entity_uncertainty` (intervals, paired bootstrap of entity F1) and `mean_uncertainty`
  (intervals of per-example means, paired bootstrap of the first), as JSON-ready dicts.

Raises ValueError for inputs of unequal length, an empty test set, or fewer than one resample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # the significance level the report's plain sentences use
EXACT_BELOW = 25  # discordant pairs below which McNemar's chi-square approximation is too coarse
CHUNK_CELLS = 2_000_000  # resamples are drawn in chunks of about this many counts (16 MB), whatever n is
WIDE = 0.10  # an interval at least this wide (10 points) is called wide in the report


def resample_counts(n: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of a (resamples, n) matrix: how often each example occurs in each resample of n drawn with
    replacement. The same (n, samples, seed) gives the same draws."""
    if n < 1 or samples < 1:
        raise ValueError(f"resampling needs examples and resamples, got n={n}, samples={samples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(200, CHUNK_CELLS // n))
    for start in range(0, samples, chunk):
        rows = min(chunk, samples - start)
        picks = rng.integers(0, n, size=(rows, n)) + np.arange(rows)[:, None] * n
        yield np.bincount(picks.ravel(), minlength=rows * n).reshape(rows, n)


def percentile_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> list[float]:
    """[low, high]: the central `confidence` share of the resampled values."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (the zero_division=0 of sklearn and seqeval)."""
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)


def classification_scores(
    weights: np.ndarray, gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, macro-F1) for each row of weights (how often each example counts); rows of ones give the
    plain scores, equal to ftkit.tasks.classification.classification_metrics's."""
    _check_lengths(gold, predicted)
    index = {label: i for i, label in enumerate(labels)}
    true_hot = np.zeros((len(gold), len(labels)))
    predicted_hot = np.zeros((len(gold), len(labels)))
    for row, (truth, guess) in enumerate(zip(gold, predicted, strict=True)):
        if truth in index:
            true_hot[row, index[truth]] = 1
        if guess in index:
            predicted_hot[row, index[guess]] = 1
    correct = np.array([truth == guess for truth, guess in zip(gold, predicted, strict=True)], dtype=float)
    weights = np.atleast_2d(weights)
    accuracy = weights @ correct / weights.sum(axis=1)
    true_positives = weights @ (true_hot * predicted_hot)
    # F1 = 2tp / (2tp + fp + fn), and 2tp + fp + fn = predicted + gold counts of the label
    f1 = _ratio(2 * true_positives, weights @ predicted_hot + weights @ true_hot)
    return accuracy, f1.mean(axis=1)


def classification_intervals(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str], samples: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals of accuracy and macro-F1 over `labels`."""
    accuracies, macro_f1s = [], []
    for weights in resample_counts(len(gold), samples, seed):
        accuracy, macro_f1 = classification_scores(weights, gold, predicted, labels)
        accuracies.append(accuracy)
        macro_f1s.append(macro_f1)
    return {
        "accuracy": percentile_interval(np.concatenate(accuracies)),
        "macro_f1": percentile_interval(np.concatenate(macro_f1s)),
    }


def entity_scores(weights: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1) for each row of weights, from per-sentence [tp, fp, fn] counts (shape (n, 3))."""
    weights = np.atleast_2d(weights)
    true_positives, false_positives, false_negatives = (weights @ np.asarray(counts, dtype=float)).T
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(true_positives, true_positives + false_negatives)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def entity_intervals(counts: Sequence[Sequence[int]], samples: int, seed: int) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals of entity micro precision, recall and F1 (resampling sentences)."""
    counts = _entity_counts(counts)
    resampled = [entity_scores(w, counts) for w in resample_counts(len(counts), samples, seed)]
    precision, recall, f1 = (np.concatenate(column) for column in zip(*resampled, strict=True))
    return {
        "micro_precision": percentile_interval(precision),
        "micro_recall": percentile_interval(recall),
        "micro_f1": percentile_interval(f1),
    }


def paired_bootstrap_f1(
    counts: Sequence[Sequence[int]], other_counts: Sequence[Sequence[int]], samples: int, seed: int
) -> dict[str, Any]:
    """Entity F1 of a system minus another's on the same sentences: the difference, its 95% interval, and the
    two-sided p of "no difference" read from the resampled differences: twice the smaller share of them on one
    side of 0 (the level at which a percentile interval of the difference would just reach 0), each count + 1
    so that a finite number of resamples never claims p = 0.
    """
    counts, other_counts = _entity_counts(counts), _entity_counts(other_counts)
    _check_lengths(counts, other_counts)
    everything = np.ones(len(counts))
    difference = float(entity_scores(everything, counts)[2][0] - entity_scores(everything, other_counts)[2][0])
    differences = np.concatenate(
        [
            entity_scores(w, counts)[2] - entity_scores(w, other_counts)[2]
            for w in resample_counts(len(counts), samples, seed)
        ]
    )
    # a float sum of the same counts is exact, so identical systems give differences of exactly 0
    at_most, at_least = int((differences <= 0).sum()), int((differences >= 0).sum())
    p_value = min(1.0, 2 * (min(at_most, at_least) + 1) / (samples + 1))
    return {
        "test": f"paired bootstrap of entity F1, {samples} resamples",
        "difference": difference,
        "interval": percentile_interval(differences),
        "p_value": p_value,
        "significant": p_value < ALPHA,
    }


def paired_bootstrap_mean(
    outcomes: Sequence[float], other_outcomes: Sequence[float], samples: int, seed: int, metric: str
) -> dict[str, Any]:
    """The mean of a per-example outcome for a system minus another's on the same examples: the difference, its
    95% interval and the two-sided p read from the resampled differences, as paired_bootstrap_f1 does."""
    _check_lengths(outcomes, other_outcomes)
    differences_per_example = np.asarray(outcomes, dtype=float) - np.asarray(other_outcomes, dtype=float)
    n = len(differences_per_example)
    differences = np.concatenate([w @ differences_per_example / n for w in resample_counts(n, samples, seed)])
    at_most, at_least = int((differences <= 0).sum()), int((differences >= 0).sum())
    p_value = min(1.0, 2 * (min(at_most, at_least) + 1) / (samples + 1))
    return {
        "test": f"paired bootstrap of {metric}, {samples} resamples",
        "metric": metric,
        "difference": float(differences_per_example.mean()),
        "interval": percentile_interval(differences),
        "p_value": p_value,
        "significant": p_value < ALPHA,
    }


def mcnemar(correct: Sequence[bool], other_correct: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test of two classifiers on the same examples, from the discordant pairs: b = examples only the
    first gets right, c = only the other. Fewer than EXACT_BELOW discordant pairs: exact two-sided binomial
    test (b ~ Binomial(b + c, 1/2)); otherwise chi-square with continuity correction, (|b - c| - 1)^2 / (b + c),
    1 degree of freedom."""
    _check_lengths(correct, other_correct)
    only_first = sum(1 for a, b in zip(correct, other_correct, strict=True) if a and not b)
    only_other = sum(1 for a, b in zip(correct, other_correct, strict=True) if b and not a)
    discordant = only_first + only_other
    if discordant < EXACT_BELOW:
        test = f"McNemar, exact binomial, {discordant} discordant pairs"
        statistic = None
        # two-sided: twice the smaller tail of Binomial(discordant, 1/2), at most 1 (and 1 with no discordant pair)
        tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_other) + 1)) / 2**discordant
        p_value = min(1.0, 2 * tail)
    else:
        test = f"McNemar, chi-square with continuity correction, {discordant} discordant pairs"
        statistic = (abs(only_first - only_other) - 1) ** 2 / discordant
        p_value = math.erfc(math.sqrt(statistic / 2))  # the chi-square survival function at 1 degree of freedom
    return {
        "test": test,
        "only_this_correct": only_first,
        "only_other_correct": only_other,
        "statistic": statistic,
        "p_value": p_value,
        "significant": p_value < ALPHA,
    }


def classification_uncertainty(
    gold: Sequence[str], predicted: dict[str, Sequence[str]], labels: Sequence[str], samples: int, seed: int
) -> dict[str, Any]:
    """Intervals of accuracy and macro-F1 for each system (name -> its predicted labels), and McNemar's test of
    the first system named against each other one."""
    reference, *others = predicted
    correct = {name: [t == p for t, p in zip(gold, labels_of, strict=True)] for name, labels_of in predicted.items()}
    return {
        **_resampling(len(gold), samples, seed),
        "points_per_example": {"accuracy": points_per_example(len(gold))},
        "intervals": {name: classification_intervals(gold, p, labels, samples, seed) for name, p in predicted.items()},
        "paired_tests": {name: mcnemar(correct[reference], correct[name]) for name in others},
    }


def entity_uncertainty(counts: dict[str, Sequence[Sequence[int]]], samples: int, seed: int) -> dict[str, Any]:
    """Intervals of entity precision, recall and F1 for each system (name -> per-sentence [tp, fp, fn]), and the
    paired bootstrap of the first system's entity F1 against each other one's."""
    reference, *others = counts
    first = _entity_counts(counts[reference])
    gold_entities = int(first[:, 0].sum() + first[:, 2].sum())  # tp + fn: the same for every system
    return {
        **_resampling(len(first), samples, seed),
        "gold_entities": gold_entities,
        "points_per_example": {"micro_recall": points_per_example(gold_entities)} if gold_entities else {},
        "intervals": {name: entity_intervals(c, samples, seed) for name, c in counts.items()},
        "paired_tests": {name: paired_bootstrap_f1(counts[reference], counts[name], samples, seed) for name in others},
    }


def mean_uncertainty(
    outcomes: dict[str, dict[str, Sequence[float]]],
    paired_metric: str,
    samples: int,
    seed: int,
    not_shares: Sequence[str] = (),
) -> dict[str, Any]:
    """Intervals of the mean of each per-example outcome for each system (name -> {metric: one value per example}),
    and the paired bootstrap of the first system's paired_metric against each other one's. not_shares: the metrics
    that are not shares of examples (their intervals are not read in percentage points)."""
    reference, *others = outcomes
    n = len(outcomes[reference][paired_metric])
    intervals = {}
    for name, by_metric in outcomes.items():
        intervals[name] = {}
        for metric, values in by_metric.items():
            array = np.asarray(values, dtype=float)
            _check_lengths(array, outcomes[reference][paired_metric])
            intervals[name][metric] = percentile_interval(
                np.concatenate([w @ array / n for w in resample_counts(n, samples, seed)])
            )
    return {
        **_resampling(n, samples, seed),
        "points_per_example": {paired_metric: points_per_example(n)},
        "not_shares": list(not_shares),
        "intervals": intervals,
        "paired_tests": {
            name: paired_bootstrap_mean(
                outcomes[reference][paired_metric], outcomes[name][paired_metric], samples, seed, paired_metric
            )
            for name in others
        },
    }


def _resampling(n: int, samples: int, seed: int) -> dict[str, Any]:
    return {
        "method": f"{CONFIDENCE:.0%} percentile bootstrap intervals, {samples} resamples of the {n} test examples "
        f"(seed {seed}), the same resamples for every system",
        "samples": samples,
        "seed": seed,
        "confidence": CONFIDENCE,
        "examples": n,
    }


def points_per_example(n: int) -> float:
    """Percentage points of accuracy (or recall over n gold entities) that one example moves."""
    if n < 1:
        raise ValueError("no examples")
    return 100 / n


def _entity_counts(counts: Sequence[Sequence[int]]) -> np.ndarray:
    array = np.asarray(counts, dtype=float).reshape(-1, 3) if len(counts) else np.zeros((0, 3))
    if len(array) == 0:
        raise ValueError("no sentences to resample")
    return array


def _check_lengths(first: Sequence[Any], second: Sequence[Any]) -> None:
    if len(first) != len(second):
        raise ValueError(f"paired outcomes of unequal length: {len(first)} and {len(second)}")
    if not len(first):
        raise ValueError("no examples")
