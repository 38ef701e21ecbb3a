"""Balancing the classes of the training split (config key data.balance), for classification recipes.

Supports
  - oversample: each smaller class is repeated up to the largest class's count: as many whole copies of the class
    as fit, then the rest drawn at random from the class without replacement, so every record of a class is
    repeated the same number of times, give or take one (none is weighted up by chance).
  - undersample: each larger class keeps a random sample of the smallest class's count; the others are dropped.
  - class_weights: nothing repeated or dropped; each class gets the weight w_c = N / (K * n_c) (N training records,
    K classes present, n_c records of class c), so the weights average 1 over the training records, and
    ftkit.training.trainer.FtkitSFTTrainer weighs each example's loss on its label tokens by its class's weight
    (cost-sensitive learning).
  - none: the records as they are.
Draws are seeded (data.seed): the same records and seed give the same result. Records keep their order; repeats
follow the originals (the trainer's sampler shuffles). The findings (counts per class before and after, and the
weights) go into metrics.json as train.data_preparation.balance.

Applied by ftkit.training.run to the training split only, after the data checks (so repeats are not refused as
duplicates) and after augmentation (so the counts are those trained on). Raises nothing: ftkit.config.checks
already refused an unknown method and a recipe without labels.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

Record = dict[str, Any]
METHODS = ("none", "oversample", "undersample", "class_weights")


def class_counts(records: list[Record]) -> dict[str, int]:
    """Records per label, largest class first (ties by label)."""
    counts = Counter(record["label"] for record in records)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def class_weights(records: list[Record]) -> dict[str, float]:
    """w_c = N / (K * n_c) for each label present: inverse class frequency, averaging 1 over the records."""
    counts = class_counts(records)
    total, classes = len(records), len(counts)
    return {label: total / (classes * count) for label, count in counts.items()}


def oversample(records: list[Record], seed: int) -> list[Record]:
    """The records, then repeats of each smaller class's records up to the largest class's count."""
    rng = random.Random(seed)
    by_label = _by_label(records)
    target = max(len(members) for members in by_label.values())
    repeats: list[Record] = []
    for members in by_label.values():
        wanted = target - len(members)
        whole, rest = divmod(wanted, len(members))
        repeats += members * whole
        repeats += [members[i] for i in sorted(rng.sample(range(len(members)), rest))]
    return records + [dict(record) for record in repeats]


def undersample(records: list[Record], seed: int) -> list[Record]:
    """Each class cut down to the smallest class's count by a seeded draw; the kept records in their order."""
    rng = random.Random(seed)
    by_index: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_index.setdefault(record["label"], []).append(index)
    target = min(len(indices) for indices in by_index.values())
    kept = {i for indices in by_index.values() for i in rng.sample(indices, target)}
    return [record for index, record in enumerate(records) if index in kept]


def balance(records: list[Record], method: str, seed: int) -> tuple[list[Record], dict[str, Any]]:
    """The training records as data.balance=`method` leaves them, and what was done, for metrics.json.

    The findings: {"method", "counts_before", "counts_after"} and, for class_weights, "class_weights" (label ->
    weight), which ftkit.training.run hands to the trainer.
    """
    findings: dict[str, Any] = {"method": method, "counts_before": class_counts(records)}
    if method == "oversample":
        records = oversample(records, seed)
    elif method == "undersample":
        records = undersample(records, seed)
    elif method == "class_weights":
        findings["class_weights"] = class_weights(records)
    elif method != "none":
        raise ValueError(f"unknown balance method {method!r} (ftkit.config.checks allows {', '.join(METHODS)})")
    findings["counts_after"] = class_counts(records)
    return records, findings


def _by_label(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record["label"], []).append(record)
    return groups
