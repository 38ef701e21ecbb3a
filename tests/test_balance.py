"""data.balance: oversampling, undersampling and class weights, and the weighted loss FtkitSFTTrainer trains on.

The loss is checked against a hand computation (the model's plain logits, log-softmax, each label token's cross
entropy times its example's weight, over transformers' token count), in padding-free rows (several examples in one
row: the same as each alone) and under gradient accumulation (micro-batches give the loss and gradients of the one
batch they make up).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.data.balance import balance, class_counts, class_weights, oversample, undersample
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.training.models import adapter_config
from ftkit.training.patches import score_only_labelled_positions_on_cpu
from ftkit.training.run import training_arguments
from ftkit.training.trainer import LOSS_WEIGHT, TOKEN_WEIGHTS, FtkitSFTTrainer
from tests.conftest import randomize_lora_b, tiny_overrides

LABELS = ["A"] * 7 + ["B"] * 3 + ["C"] * 2


def records(labels: list[str] = LABELS) -> list[dict[str, Any]]:
    return [{"text": f"text {i}", "label": label, "source": f"train.jsonl:{i + 1}"} for i, label in enumerate(labels)]


# ---- the records ---------------------------------------------------------------------------------------------


def test_oversample_repeats_each_smaller_class_evenly_up_to_the_largest():
    original = records()
    result = oversample(original, seed=1)
    assert result[: len(original)] == original  # the originals first, in their order
    assert class_counts(result) == {"A": 7, "B": 7, "C": 7}
    times = Counter(record["source"] for record in result)
    # B: 7 = 2 whole copies (6) + 1 drawn; C: 7 = 3 whole copies (6) + 1 drawn; A is not repeated
    assert sorted(times[r["source"]] for r in original if r["label"] == "B") == [2, 2, 3]
    assert sorted(times[r["source"]] for r in original if r["label"] == "C") == [3, 4]
    assert all(times[r["source"]] == 1 for r in original if r["label"] == "A")


def test_oversample_and_undersample_are_seeded():
    original = records(["A"] * 20 + ["B"] * 7)
    assert oversample(original, seed=3) == oversample(original, seed=3)
    assert undersample(original, seed=3) == undersample(original, seed=3)
    drawn_over = {tuple(r["source"] for r in oversample(original, seed)) for seed in range(5)}
    drawn_under = {tuple(r["source"] for r in undersample(original, seed)) for seed in range(5)}
    assert len(drawn_over) > 1 and len(drawn_under) > 1  # the seed decides which records


def test_undersample_keeps_the_smallest_class_count_of_each_in_order():
    original = records()
    result = undersample(original, seed=0)
    assert class_counts(result) == {"A": 2, "B": 2, "C": 2}
    positions = [original.index(record) for record in result]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert [r for r in original if r["label"] == "C"] == [r for r in result if r["label"] == "C"]


def test_class_weights_are_inverse_frequency_and_average_one():
    weights = class_weights(records())
    assert weights == pytest.approx({"A": 12 / (3 * 7), "B": 12 / (3 * 3), "C": 12 / (3 * 2)})
    assert sum(weights[label] for label in LABELS) / len(LABELS) == pytest.approx(1.0)


def test_balance_reports_counts_before_and_after():
    kept, findings = balance(records(), "class_weights", seed=0)
    assert kept == records()  # nothing repeated or dropped
    assert findings["counts_before"] == findings["counts_after"] == {"A": 7, "B": 3, "C": 2}
    assert set(findings["class_weights"]) == {"A", "B", "C"}
    _, findings = balance(records(), "undersample", seed=0)
    assert findings == {
        "method": "undersample",
        "counts_before": {"A": 7, "B": 3, "C": 2},
        "counts_after": {"A": 2, "B": 2, "C": 2},
    }


def test_class_weights_refuse_settings_that_change_the_loss(tiny_model, tmp_path):
    for setting, named in [
        ("++trainer.packing=true", "trainer.packing"),
        ("++trainer.label_smoothing_factor=0.1", "trainer.label_smoothing_factor"),
        ("++trainer.loss_type=dft", "trainer.loss_type"),
    ]:
        cfg = compose([*tiny_overrides(tiny_model, tmp_path)[:-1], "data.balance=class_weights", setting])
        with pytest.raises(FtkitError, match=named):
            check(cfg)


# ---- the weighted loss ---------------------------------------------------------------------------------------

EXAMPLES = [  # (ticket, label, weight): completions of several tokens, weights far apart
    ("Pump P-3 seal leaking at the flange, puddle under the skid", "Mechanical", 0.5),
    ("PLC lost its program", "Electrical", 2.0),
    ("Conveyor 4 motor trips its breaker every morning at start-up", "Electrical", 2.0),
    ("Valve V-12 sticks", "Hydraulic/Pneumatic", 1.25),
]


def example(text: str, label: str, weight: float | None) -> dict[str, Any]:
    prompt = {"prompt": [{"role": "user", "content": text}], "completion": [{"role": "assistant", "content": label}]}
    return prompt if weight is None else {**prompt, LOSS_WEIGHT: weight}


def weighted_trainer(
    tiny_model: Path, tmp_path: Path, *settings: str, weights: bool = True, cache: bool = False
) -> FtkitSFTTrainer:
    """A FtkitSFTTrainer as ftkit train builds it, on EXAMPLES (with their weights), LoRA B random (non-zero).

    cache: through the preprocessing cache (off by default: a module-scoped fixture would run before the test's
    FTKIT_CACHE is set)."""
    overrides = tiny_overrides(
        tiny_model, tmp_path, "model.attn_implementation=eager", "trainer.eval_strategy=no", *settings
    )
    cfg = compose([o for o in overrides if not o.startswith("hydra.")])
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="eager")
    score_only_labelled_positions_on_cpu()  # as patches.install does in ftkit train
    trainer = FtkitSFTTrainer(
        model=model,
        args=training_arguments(cfg, recipe, tmp_path),
        train_dataset=Dataset.from_list([example(t, label, w if weights else None) for t, label, w in EXAMPLES]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        peft_config=adapter_config(cfg.peft, model),
        cache_preprocessing=cache,
    )
    randomize_lora_b(trainer.model)
    return trainer


def by_hand(trainer: FtkitSFTTrainer, features: list[dict[str, Any]], divisor: float) -> torch.Tensor:
    """sum over label tokens of weight * cross-entropy / divisor, from each example's plain logits alone."""
    total = torch.zeros(())
    for feature in features:
        ids = torch.tensor([feature["input_ids"]])
        labels = torch.tensor(feature["labels"][1:])
        logits = trainer.model(input_ids=ids).logits[0, :-1].float()
        scored = labels != -100
        cross_entropy = -torch.log_softmax(logits[scored], dim=-1).gather(1, labels[scored, None]).squeeze(1)
        total = total + feature.get(LOSS_WEIGHT, 1.0) * cross_entropy.sum()
    return total / divisor


def label_tokens(features: list[dict[str, Any]]) -> int:
    return sum(sum(1 for label in feature["labels"][1:] if label != -100) for feature in features)


@pytest.fixture(scope="module")
def tiny_trainers(tiny_model, tmp_path_factory):
    """Weighted trainers: padded batches, padding-free rows; and one without weights."""
    folder = tmp_path_factory.mktemp("weighted")
    return {
        "padded": weighted_trainer(tiny_model, folder / "padded"),
        "padding_free": weighted_trainer(tiny_model, folder / "free", "++trainer.padding_free=true"),
        "unweighted": weighted_trainer(tiny_model, folder / "plain", weights=False),
    }


def test_the_weight_reaches_the_batch_as_one_weight_per_token(tiny_trainers):
    trainer = tiny_trainers["padded"]
    assert trainer.weighs_examples and LOSS_WEIGHT in trainer.train_dataset.column_names
    batch = next(iter(trainer.get_train_dataloader()))  # through Trainer's column removal and the collator
    weights, labels = batch[TOKEN_WEIGHTS], batch["labels"]
    assert weights.shape == labels.shape and weights.dtype == torch.float32
    per_row = {float(row[mask].unique().item()) for row, mask in zip(weights, labels != -100, strict=True)}
    assert per_row <= {w for _, _, w in EXAMPLES} and len(per_row) > 1
    assert float(weights[batch["attention_mask"] == 0].abs().sum()) == 0  # padding weighs nothing
    free = tiny_trainers["padding_free"]
    packed = free.data_collator([free.train_dataset[i] for i in range(len(EXAMPLES))])
    assert packed[TOKEN_WEIGHTS].shape == packed["labels"].shape and packed["input_ids"].shape[0] == 1
    assert TOKEN_WEIGHTS not in tiny_trainers["unweighted"].data_collator([trainer.train_dataset[0]])


def test_weighted_loss_matches_a_hand_computation(tiny_trainers):
    trainer = tiny_trainers["padded"]
    features = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    count = label_tokens(features)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, trainer.data_collator(features), num_items_in_batch=count)
        expected = by_hand(trainer, features, count)
        unweighted = by_hand(trainer, [{k: v for k, v in f.items() if k != LOSS_WEIGHT} for f in features], count)
        own_count = trainer.compute_loss(trainer.model, trainer.data_collator(features))  # no num_items_in_batch
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(own_count, expected, atol=1e-5, rtol=1e-5)  # the batch's own label tokens
    assert abs(float(loss - unweighted)) > 1e-2  # the weights change the loss


def test_without_weights_the_loss_is_trls(tiny_trainers):
    trainer = tiny_trainers["unweighted"]
    assert not trainer.weighs_examples
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(EXAMPLES))])
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=7)
        trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=7)
    assert torch.equal(ours, trls)


def test_padding_free_rows_weigh_each_example_as_if_alone(tiny_trainers):
    trainer = tiny_trainers["padding_free"]
    assert trainer.padding_free
    features = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    packed = trainer.data_collator(features)
    assert int((packed["position_ids"][0] == 0).sum()) == len(EXAMPLES)
    with torch.no_grad():
        in_row = trainer.compute_loss(trainer.model, packed, num_items_in_batch=1)  # a sum
        alone = sum(
            trainer.compute_loss(trainer.model, trainer.data_collator([f]), num_items_in_batch=1) for f in features
        )
        expected = by_hand(trainer, features, 1)
    torch.testing.assert_close(in_row, alone, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(in_row, expected, atol=1e-4, rtol=1e-5)

    lora = [p for name, p in trainer.model.named_parameters() if p.requires_grad]
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, trainer.data_collator(features), num_items_in_batch=1).backward()
    packed_grads = [p.grad.clone() for p in lora]
    trainer.model.zero_grad()
    for feature in features:
        trainer.compute_loss(trainer.model, trainer.data_collator([feature]), num_items_in_batch=1).backward()
    assert any(float(g.abs().max()) > 1e-4 for g in packed_grads)
    for packed_grad, param in zip(packed_grads, lora, strict=True):
        torch.testing.assert_close(packed_grad, param.grad, atol=1e-5, rtol=1e-4)
    trainer.model.zero_grad()


@pytest.mark.parametrize("layout", ["padded", "padding_free"])
def test_gradient_accumulation_gives_the_one_batch_loss_and_gradients(tiny_trainers, layout):
    trainer = tiny_trainers[layout]
    assert trainer.model_accepts_loss_kwargs  # so Trainer hands compute_loss the accumulated batch's token count
    features = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    micro = [trainer.data_collator(features[:1]), trainer.data_collator(features[1:])]
    whole = trainer.data_collator(features)
    device = trainer.args.device
    accumulated_count = trainer._get_num_items_in_batch(micro, device)  # what Trainer passes every micro-batch
    assert int(accumulated_count) == int(trainer._get_num_items_in_batch([whole], device)) == label_tokens(features)
    lora = [p for name, p in trainer.model.named_parameters() if p.requires_grad]

    trainer.model.zero_grad()
    accumulated_loss = sum(trainer.training_step(trainer.model, dict(b), accumulated_count) for b in micro)
    accumulated_grads = [p.grad.clone() for p in lora]
    trainer.model.zero_grad()
    one_batch_loss = trainer.training_step(trainer.model, dict(whole), accumulated_count)

    torch.testing.assert_close(accumulated_loss, one_batch_loss, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(
            one_batch_loss, by_hand(trainer, features, label_tokens(features)), atol=1e-5, rtol=1e-5
        )
    for grad, param in zip(accumulated_grads, lora, strict=True):
        torch.testing.assert_close(grad, param.grad, atol=1e-6, rtol=1e-4)
    trainer.model.zero_grad()


def test_weights_survive_the_preprocessing_cache(tiny_model, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    first = weighted_trainer(tiny_model, tmp_path / "first", cache=True)
    with caplog.at_level("INFO", logger="ftkit"):
        second = weighted_trainer(tiny_model, tmp_path / "second", cache=True)
    assert "reused from" in caplog.text  # the second trainer's data came from the cache
    assert second.train_dataset[LOSS_WEIGHT] == first.train_dataset[LOSS_WEIGHT] == [w for _, _, w in EXAMPLES]


def test_ftkit_train_with_class_weights(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "data.balance=class_weights"))
    assert result.returncode == 0, result.stderr[-3000:]
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    balanced = train["data_preparation"]["balance"]
    counts = balanced["counts_before"]
    assert balanced["counts_after"] == counts and sum(counts.values()) == 48
    expected = {label: 48 / (len(counts) * count) for label, count in counts.items()}
    assert balanced["class_weights"] == pytest.approx(expected)
    assert train["global_step"] == 6 and train["train_loss"] > 0
    assert "class weights" in (run_dir / "train.log").read_text()
    report = (run_dir / "report.md").read_text()
    assert "## Training data" in report and "- data.balance=class_weights: records per class" in report


def test_the_dry_run_states_what_balancing_and_augmentation_will_do(tmp_path):
    from ftkit.commands.dry_run import training_split_plan

    records = [{"text": f"t{i}", "label": "a" if i < 6 else "b", "source": f"f:{i}"} for i in range(8)]
    cfg = compose(["data.balance=oversample"])
    assert training_split_plan(cfg, records) == [
        "Balancing (data.balance=oversample): training records per class {'a': 6, 'b': 2}; after: {'a': 6, 'b': 6}"
    ]
    weighted = training_split_plan(compose(["data.balance=class_weights"]), records)[0]
    assert "the loss weighted by class {'a': 0.667, 'b': 2.0}" in weighted
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("pump, impeller\n")
    plan = training_split_plan(
        compose(["data.augment=eda", f"data.synonyms={synonyms}", "data.augment_factor=0.5"]), records
    )
    assert plan[0] == f"Synonyms: 2 words with synonyms in {synonyms}"
    assert "about 4; validation and test untouched" in plan[1]
    synonyms.write_text("pump\n")  # a group of one word: the file is read, and refused, before any model loads
    with pytest.raises(FtkitError, match="synonyms"):
        training_split_plan(compose(["data.augment=eda", f"data.synonyms={synonyms}"]), records)
