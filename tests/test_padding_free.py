"""Padding-free batches keep their examples apart under sdpa and eager attention, through TRL's training path.

TRL's padding-free collator flattens a batch into one row with position_ids restarting at 0 for each example and
no attention_mask; SFTTrainer.compute_loss runs the model with use_cache=False. transformers then finds the
example boundaries from position_ids and builds a block-diagonal causal mask (masking_utils), so each example sees
only itself. These tests compare each example's loss in a packed row with the same example alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.config import compose
from ftkit.models import adapter_config
from ftkit.recipes import get_recipe_class
from ftkit.sft_trainer import FtkitSFTTrainer
from ftkit.train import training_arguments
from ftkit.trl_patches import score_only_labelled_positions_on_cpu
from tests.conftest import tiny_overrides

# Prompt-completion examples of different lengths, completions of several tokens each.
EXAMPLES = [
    ("Pump P-3 seal leaking at the flange, puddle under the skid", "Mechanical: replace the seal"),
    ("PLC lost its program", "Electrical"),
    ("Conveyor 4 motor trips its breaker every morning at start-up; reset twice", "Electrical: check the motor"),
    ("Valve V-12 sticks", "Hydraulic/Pneumatic: clean and lubricate the valve stem, then test"),
    ("Fan noise", "Mechanical"),
]


def conversation(prompt: str, completion: str) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
    }


def padding_free_trainer(tiny_model: Path, tmp_path: Path, attention: str) -> FtkitSFTTrainer:
    """A FtkitSFTTrainer as `ftkit train trainer.padding_free=true` builds it, with non-zero LoRA weights."""
    settings = ["++trainer.padding_free=true", f"model.attn_implementation={attention}", "trainer.eval_strategy=no"]
    overrides = tiny_overrides(tiny_model, tmp_path, *settings)
    cfg = compose([o for o in overrides if not o.startswith("hydra.")])
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    args = training_arguments(cfg, recipe, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)
    score_only_labelled_positions_on_cpu()
    trainer = FtkitSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([conversation(*pair) for pair in EXAMPLES]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        peft_config=adapter_config(cfg.peft, model),
    )
    # LoRA's B starts at zero; random B makes the adapter part of every forward pass being compared.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return trainer


def summed_loss(trainer: FtkitSFTTrainer, inputs: dict[str, Any]) -> torch.Tensor:
    """Sum of the per-token NLL over the labelled tokens (num_items_in_batch=1 turns compute_loss's mean into a sum)."""
    return trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=1)


def only_example(packed: dict[str, Any], index: int) -> dict[str, Any]:
    """The packed row with labels kept only on example `index`: the loss of that example in its packed context."""
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist() + [packed["position_ids"].size(1)]
    labels = torch.full_like(packed["labels"], -100)
    labels[:, starts[index] : starts[index + 1]] = packed["labels"][:, starts[index] : starts[index + 1]]
    return {**packed, "labels": labels}


@pytest.fixture(params=["sdpa", "eager"])
def trainer(request, tiny_model, tmp_path) -> FtkitSFTTrainer:
    return padding_free_trainer(tiny_model, tmp_path, request.param)


def test_packed_examples_score_as_if_alone(trainer):
    assert trainer.padding_free and trainer.args.max_length is None  # ftkit's length check bounds the examples
    features = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    packed = trainer.data_collator(features)
    # The collator's padding-free layout: one row, positions restarting per example, no attention mask.
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert int((packed["position_ids"][0] == 0).sum()) == len(EXAMPLES)

    with torch.no_grad():
        alone = torch.stack([summed_loss(trainer, trainer.data_collator([f])) for f in features])
        in_row = torch.stack([summed_loss(trainer, only_example(packed, i)) for i in range(len(EXAMPLES))])
        whole_row = summed_loss(trainer, packed)
        # The comparison is sensitive: an all-ones attention mask turns off transformers' packed-sequence
        # detection, and every example but the first then attends to the ones before it.
        ones = torch.ones_like(packed["input_ids"])
        leaking = torch.stack(
            [summed_loss(trainer, {**only_example(packed, i), "attention_mask": ones}) for i in range(len(EXAMPLES))]
        )

    assert bool((alone > 1).all())  # several completion tokens each, on a random model
    torch.testing.assert_close(in_row, alone, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(whole_row, alone.sum(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(leaking[0], alone[0], atol=1e-4, rtol=1e-5)  # the first has nothing before it
    assert float((leaking[1:] - alone[1:]).abs().min()) > 1e-2, (leaking, alone)


def test_packed_gradients_are_the_sum_of_each_examples(trainer):
    features = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    lora = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in name for name in lora)

    summed_loss(trainer, trainer.data_collator(features)).backward()
    packed = {name: p.grad.clone() for name, p in lora.items()}
    trainer.model.zero_grad()
    for feature in features:
        summed_loss(trainer, trainer.data_collator([feature])).backward()  # .grad accumulates the sum

    assert any(float(g.abs().max()) > 1e-3 for g in packed.values())
    for name, param in lora.items():
        torch.testing.assert_close(packed[name], param.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_ftkit_train_padding_free_end_to_end(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "trainer.padding_free=true"))
    assert result.returncode == 0, result.stderr[-3000:]
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert train["global_step"] == 6 and train["train_loss"] > 0 and train["train_tokens"] > 0
    assert "padding_free: true" in (run_dir / "config.yaml").read_text()
