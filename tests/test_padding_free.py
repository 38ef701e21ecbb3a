"""Padding-free batches keep their examples apart under sdpa and eager attention, through TRL's training path.

TRL's padding-free collator flattens a batch into one row with position_ids restarting at 0 for each example and
no attention_mask; SFTTrainer.compute_loss runs the model with use_cache=False. transformers then finds the
example boundaries from position_ids and builds a block-diagonal causal mask (masking_utils), so each example sees
only itself. ftkit train instead runs sdpa on each example's slice of the row (ftkit/training/packed_attention.py,
"sdpa-per-example" here). These tests compare each example's loss in a packed row with the same example alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from ftkit.training.models import adapter_config
from ftkit.training.packed_attention import attend_within_examples
from ftkit.training.patches import score_only_labelled_positions_on_cpu
from ftkit.training.run import training_arguments
from ftkit.training.trainer import FtkitSFTTrainer
from tests.conftest import randomize_lora_b, tiny_overrides

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
    if attention == "sdpa-per-example":
        attention = "sdpa"
        attend_within_examples()
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
    randomize_lora_b(trainer.model)
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


@pytest.fixture
def sdpa_as_transformers_ships_it(monkeypatch):
    """Whatever a test registers as "sdpa" is undone afterwards, so the other tests see transformers' own."""
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", sdpa_attention_forward)


def without_bounds(packed: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in packed.items() if not name.startswith(("cu_seq_lens", "max_length"))}


@pytest.fixture(params=["sdpa", "sdpa-per-example", "eager"])
def trainer(request, tiny_model, tmp_path, sdpa_as_transformers_ships_it) -> FtkitSFTTrainer:
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
        # The comparison is sensitive: without the boundaries (an all-ones attention mask turns off transformers'
        # packed-sequence detection; no cu_seq_lens, no per-example split) every example but the first attends to
        # the ones before it.
        ones = torch.ones_like(packed["input_ids"])
        unbounded = [{**without_bounds(only_example(packed, i)), "attention_mask": ones} for i in range(len(EXAMPLES))]
        leaking = torch.stack([summed_loss(trainer, inputs) for inputs in unbounded])

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
    assert "sdpa attention runs on each example's slice" in (run_dir / "train.log").read_text()


def test_sdpa_per_example_splits_the_row_only_where_exact(tiny_model, sdpa_as_transformers_ships_it, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").eval()
    layers = model.config.num_hidden_layers
    lengths = [7, 3, 11]
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(0, model.config.vocab_size, (n,), generator=generator) for n in lengths]
    bounds = torch.tensor([0, 7, 10, 21], dtype=torch.int32)
    row = {
        "input_ids": torch.cat(examples)[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "use_cache": False,
    }
    bounded = {**row, "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": 11, "max_length_k": 11}
    query_lengths: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        query_lengths.append(query.shape[2])
        return sdpa(query, *args, **kwargs)

    def logits(**inputs: Any) -> torch.Tensor:
        query_lengths.clear()
        with torch.no_grad():
            return model(**inputs).logits

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    alone = torch.cat([logits(input_ids=example[None]) for example in examples], dim=1)
    block_diagonal = logits(**bounded)  # transformers' own sdpa: the whole row under a block-diagonal mask
    assert query_lengths == [21] * layers
    torch.testing.assert_close(block_diagonal, alone, atol=1e-5, rtol=1e-5)

    attend_within_examples()
    installed = AttentionInterface._global_mapping["sdpa"]
    attend_within_examples()  # a second call leaves the first in place
    assert AttentionInterface._global_mapping["sdpa"] is installed is not sdpa_attention_forward
    split = logits(**bounded)
    assert query_lengths == lengths * layers
    torch.testing.assert_close(split, alone, atol=1e-5, rtol=1e-5)

    # Where a split would not be exact, or there are no bounds, the whole row goes to transformers' sdpa.
    two_rows = {**bounded, "input_ids": row["input_ids"].repeat(2, 1), "position_ids": row["position_ids"].repeat(2, 1)}
    shifted = torch.tensor([0, 7, 10, 20], dtype=torch.int32)  # bounds that do not cover the row
    for inputs in (row, {**bounded, "sliding_window": 8}, two_rows, {**bounded, "cu_seq_lens_k": shifted}):
        whole = logits(**inputs)
        assert query_lengths == [21] * layers, sorted(inputs)
        torch.testing.assert_close(whole[:1], block_diagonal, atol=1e-5, rtol=1e-5)
