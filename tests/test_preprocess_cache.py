"""The preprocessing cache: a second run on the same data reuses TRL's tokenized data, and trains the same."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from ftkit.training.data_checks import example_lengths
from ftkit.training.preprocess_cache import cached_lengths, every_rank_has, preparation_key
from ftkit.training.run import training_arguments
from ftkit.training.trainer import FtkitSFTTrainer
from tests.conftest import tiny_overrides

REUSED = "Preprocessed train data reused from"
STORED = "Preprocessed train data stored in"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("FTKIT_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tickets() -> tuple[Any, list[dict[str, Any]]]:
    cfg = compose([])
    recipe = get_recipe_class("tickets")(cfg.recipe)
    return recipe, [recipe.to_example(record) for record in recipe.load_split("train")[:24]]


def build(tiny_model: Path, tmp_path: Path, examples: list[dict[str, Any]], *overrides: str, cache: bool = True):
    cfg = compose(
        [
            o
            for o in tiny_overrides(tiny_model, tmp_path, "trainer.eval_strategy=no", *overrides)
            if not o.startswith("hydra.")
        ]
    )
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    return FtkitSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=training_arguments(cfg, recipe, tmp_path),
        train_dataset=Dataset.from_list(examples),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        cache_preprocessing=cache,
    )


def test_cached_data_is_what_trl_prepares_and_any_change_misses(tiny_model, tmp_path, cache, tickets, caplog):
    _, examples = tickets
    caplog.set_level(logging.INFO, logger="ftkit")
    fresh = build(tiny_model, tmp_path, examples, cache=False).train_dataset
    assert not cache.exists()  # cache_preprocessing=false writes nothing

    stored = build(tiny_model, tmp_path, examples).train_dataset
    assert STORED in caplog.text and REUSED not in caplog.text
    [entry] = (cache / "datasets").iterdir()
    caplog.clear()
    reused = build(tiny_model, tmp_path, examples).train_dataset
    assert f"{REUSED} {entry} (key {entry.name[:12]}): skipped tokenizing 24 examples" in caplog.text
    assert {"input_ids", "labels"} <= set(fresh.column_names)
    assert stored.to_list() == fresh.to_list() and reused.to_list() == fresh.to_list()
    assert reused.column_names == fresh.column_names and reused.features == fresh.features

    # One changed training record, another max_length, another loss setting: each is a new entry.
    changed = [dict(examples[0], completion=[{"role": "assistant", "content": "Electrical"}]), *examples[1:]]
    assert changed[0] != examples[0]
    caplog.clear()
    build(tiny_model, tmp_path, changed)
    build(tiny_model, tmp_path, examples, "model.max_length=200")
    build(tiny_model, tmp_path, examples, "++trainer.completion_only_loss=false")
    assert REUSED not in caplog.text and caplog.text.count(STORED) == 3
    assert len(list((cache / "datasets").iterdir())) == 4


def test_a_second_run_reuses_the_preprocessed_data_and_trains_the_same(run_ftkit, tiny_model, tmp_path):
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:  # run_ftkit gives both runs the same FTKIT_CACHE
        result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "evaluate.base=false"))
        assert result.returncode == 0, result.stderr[-3000:]
    first, second = ((run_dir / "train.log").read_text() for run_dir in runs)
    assert STORED in first and "Preprocessed eval data stored in" in first and REUSED not in first
    assert REUSED in second and "Preprocessed eval data reused from" in second and STORED not in second
    assert "skipped tokenizing 48 examples" in second
    losses = [json.loads((run_dir / "metrics.json").read_text())["train"]["train_loss"] for run_dir in runs]
    assert losses[0] == losses[1]
    adapters = [load_file(run_dir / "adapter" / "adapter_model.safetensors") for run_dir in runs]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(adapters[0][name].equal(adapters[1][name]) for name in adapters[0])


def test_the_key_covers_the_tokenizer(tiny_model, tmp_path, tickets):
    _, examples = tickets
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    dataset = Dataset.from_list(examples)

    def key(tokenizer: Any) -> str:
        return preparation_key(dataset, tokenizer, args, False, True, None)

    base = key(AutoTokenizer.from_pretrained(tiny_model))
    assert key(AutoTokenizer.from_pretrained(tiny_model)) == base  # the same on every load
    templated = AutoTokenizer.from_pretrained(tiny_model)
    templated.chat_template += "\n"
    added = AutoTokenizer.from_pretrained(tiny_model)
    added.add_tokens(["<ticket>"])
    assert key(templated) != base and key(added) != base
    assert preparation_key(dataset, added, args, True, True, None) != key(added)  # packing


def test_the_length_checks_token_counts_are_cached(tiny_model, cache, tickets):
    _, examples = tickets
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    counted: list[int] = []

    def count(some: list[dict[str, Any]]) -> list[int]:
        counted.append(len(some))
        return example_lengths(tokenizer, some)

    expected = example_lengths(tokenizer, examples)
    assert cached_lengths(tokenizer, examples, lambda: count(examples)) == expected
    assert cached_lengths(tokenizer, examples, lambda: count(examples)) == expected
    assert counted == [24]  # the second call read them
    assert cached_lengths(tokenizer, examples[1:], lambda: count(examples[1:])) == expected[1:]
    assert counted == [24, 23]


def _found_by_every_rank(rank: int, port: int, results: Any) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = (every_rank_has(rank == 0), every_rank_has(True))
    finally:
        dist.destroy_process_group()


def test_ranks_that_disagree_all_prepare():
    """Rank 0 finds the entry, rank 1 does not: both must prepare (TRL's preparation waits at barriers)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_found_by_every_rank, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: (False, True), 1: (False, True)}
