"""ftkit's length-grouped sampler: the batches of Trainer's grouping, in a seeded random order."""

from __future__ import annotations

import random

from transformers.trainer_pt_utils import get_length_grouped_indices

from ftkit.training.trainer import EpochSeededLengthGroupedSampler

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(5, 200) for _ in range(203)]  # 25 batches of 8 and a short one of 3
BATCH = 8


def batches_of(order: list[int]) -> list[list[int]]:
    return [order[i : i + BATCH] for i in range(0, len(order), BATCH)]


def sampled(seed: int = 42, epoch: int = 0) -> list[int]:
    sampler = EpochSeededLengthGroupedSampler(BATCH, lengths=LENGTHS, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_example_once_in_batches_of_similar_length():
    order = sampled()
    assert sorted(order) == list(range(len(LENGTHS)))
    shuffled = list(range(len(LENGTHS)))
    random.Random(1).shuffle(shuffled)
    assert filled(order) > 0.85 and filled(shuffled) < 0.7  # padding: the point of grouping


def filled(order: list[int]) -> float:
    """Share of a padded batch's tokens that are real, over the full batches."""
    full = batches_of(order)[:-1]
    return sum(LENGTHS[i] for batch in full for i in batch) / sum(BATCH * max(LENGTHS[i] for i in b) for b in full)


def test_the_batches_are_trainers_but_not_in_long_to_short_runs():
    import torch

    order = sampled()
    generator = torch.Generator().manual_seed(42)
    grouped = get_length_grouped_indices(LENGTHS, BATCH, generator=generator)
    assert sorted(map(sorted, batches_of(order))) == sorted(map(sorted, batches_of(grouped)))
    assert batches_of(order)[0] == batches_of(grouped)[0]  # the longest example's batch first
    assert max(LENGTHS[i] for i in order) in [LENGTHS[i] for i in batches_of(order)[0]]
    assert len(batches_of(order)[-1]) == len(LENGTHS) % BATCH  # the short batch last

    def descending_steps(batches: list[list[int]]) -> int:
        longest = [max(LENGTHS[i] for i in batch) for batch in batches]
        return sum(a >= b for a, b in zip(longest, longest[1:], strict=False))

    # Trainer's order falls from long to short through each megabatch (21 of 24 steps here); a shuffled one
    # about half the time.
    assert descending_steps(batches_of(grouped)) >= 20
    assert descending_steps(batches_of(order)) <= 16


def test_the_order_is_fixed_by_seed_and_epoch():
    assert sampled(42, 0) == sampled(42, 0)
    assert sampled(42, 0) != sampled(42, 1)
    assert sampled(42, 0) != sampled(7, 0)
