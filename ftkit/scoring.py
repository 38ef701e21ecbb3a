"""Label scoring: log P(label | prompt) for every allowed label, batched, as whole label sequences.

Classification is predicted by comparing these log-likelihoods, never by parsing free generation. Each label's
tokens are taken the way TRL builds the training completion (chat template of prompt + answer, minus the
prompt's tokens), so the end-of-turn token is scored too: that is what separates a label from a longer label
it is a prefix of. The prompt batch runs once with a KV cache; its last position gives every label's first
token at once, and only the remaining label tokens run again, against the cached prompt.
"""

from __future__ import annotations

from typing import Any

import torch


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def label_token_ids(
    tokenizer: Any, prompt: list[dict[str, str]], labels: list[str]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's ids and, per label, the ids the chat template appends for that answer."""
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    completions = []
    for label in labels:
        full = chat_ids(tokenizer, [*prompt, {"role": "assistant", "content": label}], add_generation_prompt=False)
        completions.append(full[len(prompt_ids) :])
    return prompt_ids, completions


@torch.inference_mode()
def label_logprobs(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], labels: list[str], batch_size: int = 16
) -> torch.Tensor:
    """Sum of log-probabilities of each label's tokens given each prompt: a [len(prompts), len(labels)] tensor."""
    was_training = model.training
    model.eval()
    encoded = [label_token_ids(tokenizer, prompt, labels) for prompt in prompts]
    # Sorting by prompt length keeps batches of similar length, so little of each batch is padding.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]))
    scores = torch.empty(len(prompts), len(labels), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        scores[index] = _score_batch(model, tokenizer, [encoded[i] for i in index])
    model.train(was_training)
    return scores


def _score_batch(model: Any, tokenizer: Any, batch: list[tuple[list[int], list[list[int]]]]) -> torch.Tensor:
    device = model.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n_labels = len(batch[0][1])

    # 1. Prompts, left-padded so every prompt ends at the last position; explicit positions skip the padding.
    width = max(len(ids) for ids, _ in batch)
    prompt_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids, _ in batch], device=device)
    prompt_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in batch], device=device)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: every label's first token
    scores = torch.stack(
        [
            torch.stack([first[b, completion[0]] for completion in completions])
            for b, (_, completions) in enumerate(batch)
        ]
    )
    rest = [[completion[1:] for completion in completions] for _, completions in batch]
    longest = max(len(r) for per_label in rest for r in per_label)
    if longest == 0:
        return scores.cpu()

    # 2. The rest of each label, fed after its prompt's cached keys/values: one row per (prompt, label).
    # Row b*L+l feeds label l's tokens 0..T-2 and is scored on tokens 1..T-1.
    cache = out.past_key_values
    cache.batch_repeat_interleave(n_labels)
    inputs, targets, mask = [], [], []
    for _, completions in batch:
        for completion in completions:
            fed, wanted = completion[:-1], completion[1:]
            pad = longest - len(fed)
            inputs.append(fed + [pad_id] * pad)
            targets.append(wanted + [pad_id] * pad)
            mask.append([1] * len(fed) + [0] * pad)
    inputs_t = torch.tensor(inputs, device=device)
    targets_t = torch.tensor(targets, device=device)
    label_mask = torch.tensor(mask, device=device)
    prompt_lengths = prompt_mask.sum(-1).repeat_interleave(n_labels)
    label_positions = prompt_lengths[:, None] + torch.arange(longest, device=device)[None, :]
    attention = torch.cat([prompt_mask.repeat_interleave(n_labels, dim=0), label_mask], dim=1)
    logits = model(
        input_ids=inputs_t, attention_mask=attention, position_ids=label_positions, past_key_values=cache
    ).logits
    token_logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets_t[..., None])[..., 0]
    rest_scores = (token_logprobs * label_mask).sum(-1).view(len(batch), n_labels)
    return (scores + rest_scores).cpu()
