"""Greedy generation from chat prompts, batched: the shared mechanics for recipes that predict by generating.

Prompts go through the tokenizer's chat template with the generation prompt, are sorted by length (little
padding per batch) and left-padded (so every row's new tokens start at the same position), and decoded without
special tokens. Greedy decoding keeps evaluation deterministic: base and fine-tuned differ only by the weights.
"""

from __future__ import annotations

from typing import Any

import torch


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """The model's greedy answer to each chat prompt, in order."""
    was_training = model.training
    model.eval()
    encoded = [
        list(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=False))
        for p in prompts
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in index)
        input_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
        for row, i in enumerate(index):
            answers[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True).strip()
    model.train(was_training)
    return answers
