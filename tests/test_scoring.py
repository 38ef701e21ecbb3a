"""Batched, cached label scoring must equal scoring every (prompt, label) pair on its own."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.scoring import label_logprobs, label_token_ids

PROMPTS = [
    "pump P-101 leaking at seal",
    "PLC on line 3 lost comms with the HMI after a power blip, pls check asap, operators cannot start the line",
    "guard missing",
    "motor trips on overload every morning",
    "brg noisy on CNV-22B drive end, grease nipple broken and vibration up to 7 mm/s",
]
# "Pump" is a prefix of "Pump/Seal" and both share their first token with "Pumping station": only whole
# sequences (with the end-of-turn token) tell them apart.
LABELS = ["Pump", "Pump/Seal", "Pumping station", "Electrical", "Safety/Facilities"]


def exhaustive(model, tokenizer, prompts, labels) -> torch.Tensor:
    """The straightforward reference: one unpadded forward pass per (prompt, label)."""
    scores = torch.zeros(len(prompts), len(labels))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            prompt_ids, completions = label_token_ids(tokenizer, prompt, labels)
            for j, completion in enumerate(completions):
                logits = model(torch.tensor([prompt_ids + completion])).logits[0]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                start = len(prompt_ids) - 1
                scores[i, j] = sum(logprobs[start + k, token] for k, token in enumerate(completion))
    return scores


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), AutoTokenizer.from_pretrained(
        tiny_model
    )


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": text}]


def test_labels_really_share_first_tokens(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    _, completions = label_token_ids(tokenizer, messages("x"), LABELS)
    first = [c[0] for c in completions]
    assert first[0] == first[1] == first[2]
    assert completions[1][: len(completions[0]) - 2] == completions[0][:-2]  # "Pump" tokens prefix "Pump/Seal"


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_batched_scoring_equals_exhaustive(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    prompts = [messages(text) for text in PROMPTS]
    fast = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=batch_size)
    reference = exhaustive(model, tokenizer, prompts, LABELS)
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-5)
    assert torch.equal(fast.argmax(1), reference.argmax(1))


def test_single_token_labels(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [messages(text) for text in PROMPTS]
    labels = ["A", "B"]
    torch.testing.assert_close(
        label_logprobs(model, tokenizer, prompts, labels, batch_size=3),
        exhaustive(model, tokenizer, prompts, labels),
        atol=1e-4,
        rtol=1e-5,
    )


def test_scoring_restores_training_mode(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.train()
    label_logprobs(model, tokenizer, [messages("x")], LABELS)
    assert model.training
    model.eval()
