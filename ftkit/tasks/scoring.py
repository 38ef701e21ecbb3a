"""Label scoring: log P(label | prompt) for every allowed label, batched, as whole label sequences.

Classification is predicted by comparing these log-likelihoods, never by parsing free generation. Each label's
tokens are taken the way TRL builds the training completion (chat template of prompt + answer, minus the
prompt's tokens) up to the end-of-turn token, which is scored too: that is what separates a label from a longer
label it is a prefix of.

Where the time goes is prefill, so the work is cut:
- the prompt prefix every prompt shares (the system prompt and the template's head, about a third of a short
  prompt) runs once per call, and its keys/values are reused by every batch (sdpa and eager attention);
- every label's score: each row holds one prompt's remaining tokens followed by every label's tokens, laid out as a
  tree: a 4D attention mask lets each label see the prompt and its own earlier tokens only, so one forward pass
  scores all labels of a batch (sdpa and eager);
- only_winners (what evaluation uses), with many or long labels: the prompts run once with a KV cache, whose
  last position gives every label's first token; then only the labels that can still win run their remaining
  tokens against that cache (usually one per prompt), which gives the same argmax as scoring every label;
- logits are computed only at the positions that predict a label token, and prompts are sorted by length.
Attention kernels that take no 4D mask (FlashAttention) score every label with the two passes.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

# Attention kernels that take an arbitrary 4D mask next to a KV cache.
TREE_MASK_ATTENTION = ("sdpa", "eager")
# A second forward pass over a batch costs about as much as this many more label columns in the first one
# (SmolLM2-135M + LoRA on CPU, batches of 16: ~0.3 s against ~0.03 s per column). only_winners runs its second
# pass only when it saves more label columns than that; otherwise the one-pass tree scores every label.
EXTRA_PASS_COLUMNS = 8


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def label_token_ids(
    tokenizer: Any, prompt: list[dict[str, str]], labels: list[str]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's ids and, per label, the ids the chat template appends for that answer, up to its end-of-turn.

    Generation stops at the end-of-turn (eos) token, so P(label) is P(label's tokens, then eos); what a template
    writes after it (SmolLM2's newline) is the same for every label and is not scored.
    """
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    completions = []
    for label in labels:
        full = chat_ids(tokenizer, [*prompt, {"role": "assistant", "content": label}], add_generation_prompt=False)
        completion = full[len(prompt_ids) :]
        if tokenizer.eos_token_id in completion:
            completion = completion[: completion.index(tokenizer.eos_token_id) + 1]
        completions.append(completion)
    return prompt_ids, completions


@torch.inference_mode()
def label_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    labels: list[str],
    batch_size: int = 16,
    only_winners: bool = False,
) -> torch.Tensor:
    """Sum of log-probabilities of each label's tokens given each prompt: a [len(prompts), len(labels)] tensor.

    only_winners: the caller needs the argmax only. With long or many labels, only the labels that can still have
    the highest sum are scored to the end: a label's sum is at most its first token's log-probability, so once some
    label's whole sum beats the first-token score of every label not yet scored, those cannot win and are left at
    -inf. The argmax is exactly that of the full scores. With few short labels every label is scored anyway
    (one pass is cheaper than two).
    """
    was_training = model.training
    model.eval()
    encoded = [label_token_ids(tokenizer, prompt, labels) for prompt in prompts]
    # Sorting by prompt length keeps batches of similar length, so little of each batch is padding.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]))
    scores = torch.empty(len(prompts), len(labels), dtype=torch.float32)
    tree = takes_tree_masks(model, max(len(ids) + sum(map(len, labels_ids)) for ids, labels_ids in encoded))
    prefix = shared_prefix_length([ids for ids, _ in encoded]) if tree else 0
    prefix_cache = _run_prefix(model, encoded[0][0][:prefix]) if prefix else None
    # The tree feeds every label's tokens after the first; pruning feeds about one label's, in a second pass.
    fed = [max(len(completions[label]) - 1 for _, completions in encoded) for label in range(len(labels))]
    prune = only_winners and (not tree or sum(fed) - max(fed) > EXTRA_PASS_COLUMNS)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = [encoded[i] for i in index]
        if tree and not prune:
            scores[index] = _score_batch_tree(model, pad_id, batch, prefix, prefix_cache)
        else:
            scores[index] = _score_batch(model, pad_id, batch, prefix, prefix_cache, prune)
    model.train(was_training)
    return scores


def takes_tree_masks(model: Any, longest: int) -> bool:
    """Whether the model's attention takes a custom 4D mask with a cache, and no sliding window cuts the rows."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    fits = window is None or longest <= window
    return getattr(config, "_attn_implementation", None) in TREE_MASK_ATTENTION and fits


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own (its last position is scored)."""
    limit = min(len(ids) for ids in sequences) - 1
    first = sequences[0]
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in sequences):
        length += 1
    return length


def _run_prefix(model: Any, prefix_ids: list[int]) -> Any:
    out = model(input_ids=torch.tensor([prefix_ids], device=model.device), use_cache=True, logits_to_keep=1)
    return _cache_of(out)


def _score_batch_tree(
    model: Any, pad_id: int, batch: list[tuple[list[int], list[list[int]]]], prefix: int, prefix_cache: Any
) -> torch.Tensor:
    """One forward pass: each row is [left padding, prompt after the prefix, label 1 tokens, label 2 tokens, ...]."""
    device = model.device
    n_rows, n_labels = len(batch), len(batch[0][1])
    width = max(len(ids) for ids, _ in batch) - prefix
    # Label l is fed its tokens but the last (each predicts the next), in columns segment[l]..segment[l+1].
    fed = [max(len(completions[label]) - 1 for _, completions in batch) for label in range(n_labels)]
    segment = [width + sum(fed[:label]) for label in range(n_labels + 1)]
    columns = segment[-1]

    input_ids = torch.full((n_rows, columns), pad_id, dtype=torch.long)
    positions = torch.zeros((n_rows, columns), dtype=torch.long)
    sees = torch.zeros((n_rows, columns, prefix + columns), dtype=torch.bool)  # query column -> key column
    sees[:, :, :prefix] = True  # the shared prefix, from the cache
    targets = torch.zeros((n_rows, columns), dtype=torch.long)  # the token each label column predicts
    scored = torch.zeros((n_rows, columns))
    first_ids = torch.tensor([[completion[0] for completion in completions] for _, completions in batch])
    for row, (ids, completions) in enumerate(batch):
        own = ids[prefix:]
        left = width - len(own)
        input_ids[row, left:width] = torch.tensor(own)
        positions[row, left:width] = prefix + torch.arange(len(own))
        sees[row, left:width, prefix + left : prefix + width] = torch.ones(len(own), len(own)).tril().bool()
        for label, completion in enumerate(completions):
            start, count = segment[label], len(completion) - 1
            if count == 0:
                continue
            input_ids[row, start : start + count] = torch.tensor(completion[:-1])
            positions[row, start : start + count] = len(ids) + torch.arange(count)
            sees[row, start : start + count, prefix + left : prefix + width] = True
            sees[row, start : start + count, prefix + start : prefix + start + count] = (
                torch.ones(count, count).tril().bool()
            )
            targets[row, start : start + count] = torch.tensor(completion[1:])
            scored[row, start : start + count] = 1.0
    # Every query sees itself, so a padding column is never fully masked (softmax over nothing is NaN).
    sees[:, torch.arange(columns), prefix + torch.arange(columns)] = True

    cache = None
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)  # the forward appends to it
        cache.batch_repeat_interleave(n_rows)
    keep = torch.arange(width - 1, columns)  # the prompt's last position, then every label column
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=_attention_mask(model, sees).to(device),
        position_ids=positions.to(device),
        use_cache=cache is not None,
        **{_cache_argument(model): cache},
        logits_to_keep=keep.to(device),
    ).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()  # [rows, 1 + label columns, vocab]
    scores = logprobs[:, 0].gather(-1, first_ids)  # every label's first token, from the prompt's last position
    rest = logprobs[:, 1:].gather(-1, targets[:, width:, None])[..., 0] * scored[:, width:]
    owner = torch.zeros((columns - width, n_labels))  # which label each label column belongs to
    for label in range(n_labels):
        owner[segment[label] - width : segment[label + 1] - width, label] = 1.0
    return scores + rest @ owner


def _cache_argument(model: Any) -> str:
    """transformers 5.x renames the forward's past_key_values to cache (the old name warns, then goes in 5.40)."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    """The output's KV cache: `cache` since transformers renamed it (reading past_key_values then warns)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _attention_mask(model: Any, sees: torch.Tensor) -> torch.Tensor:
    """sdpa takes a boolean mask (True = attend); eager adds the mask to the scores."""
    mask = sees[:, None]
    if model.config._attn_implementation == "eager":
        return torch.zeros(mask.shape, dtype=model.dtype).masked_fill(~mask, torch.finfo(model.dtype).min)
    return mask


def _score_batch(
    model: Any,
    pad_id: int,
    batch: list[tuple[list[int], list[list[int]]]],
    prefix: int,
    prefix_cache: Any,
    only_winners: bool,
) -> torch.Tensor:
    """Two passes: the prompts (after the cached prefix) once with a cache, whose last position gives every
    label's first token; then labels' remaining tokens against that cache, one row per (prompt, label): every
    label, or with only_winners just those that can still win, in rounds."""
    device = model.device
    n_rows, n_labels = len(batch), len(batch[0][1])

    # 1. Prompts, left-padded so every prompt ends at the last position; explicit positions skip the padding.
    own = [ids[prefix:] for ids, _ in batch]
    width = max(len(ids) for ids in own)
    prompt_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in own], device=device)
    own_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in own], device=device)
    positions = prefix + (own_mask.cumsum(-1) - 1).clamp(min=0)
    prompt_mask = torch.cat([torch.ones((n_rows, prefix), dtype=own_mask.dtype, device=device), own_mask], dim=1)
    cache = None
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(n_rows)
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_argument(model): cache},
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()  # [rows, vocab]
    first_ids = torch.tensor([[completion[0] for completion in completions] for _, completions in batch])
    first_scores = first.gather(-1, first_ids)
    scores = torch.full((n_rows, n_labels), float("-inf"))
    done = torch.zeros((n_rows, n_labels), dtype=torch.bool)
    pairs = [(row, label) for row in range(n_rows) for label in range(n_labels)]
    if only_winners:
        pairs = [(row, int(first_scores[row].argmax())) for row in range(n_rows)]

    # 2. The rest of the labels, in rounds until no label left out can beat a finished one.
    while pairs:
        rest = _rest_of_labels(model, _cache_of(out), prompt_mask, batch, pairs, pad_id)
        for (row, label), value in zip(pairs, rest.tolist(), strict=True):
            scores[row, label] = first_scores[row, label] + value
            done[row, label] = True
        if not only_winners:
            break
        best = scores.max(dim=-1, keepdim=True).values
        pairs = [tuple(pair) for pair in ((~done) & (first_scores >= best)).nonzero().tolist()]
    return scores


def _rest_of_labels(
    model: Any,
    prompt_cache: Any,
    prompt_mask: torch.Tensor,
    batch: list[tuple[list[int], list[list[int]]]],
    pairs: list[tuple[int, int]],
    pad_id: int,
) -> torch.Tensor:
    """Sum of log-probabilities of tokens 1.. of label l after prompt row r, for each (r, l) in pairs."""
    device = model.device
    completions = [batch[row][1][label] for row, label in pairs]
    longest = max(len(completion) - 1 for completion in completions)
    if longest == 0:
        return torch.zeros(len(pairs))
    rows = torch.tensor([row for row, _ in pairs], device=device)
    cache = copy.deepcopy(prompt_cache)  # the forward appends to it; the next round needs the prompt's alone
    cache.batch_select_indices(rows)
    # Row i feeds label tokens 0..T-2 and is scored on tokens 1..T-1.
    inputs, targets, mask = [], [], []
    for completion in completions:
        fed, wanted = completion[:-1], completion[1:]
        pad = longest - len(fed)
        inputs.append(fed + [pad_id] * pad)
        targets.append(wanted + [pad_id] * pad)
        mask.append([1] * len(fed) + [0] * pad)
    label_mask = torch.tensor(mask, device=device)
    prompt_lengths = torch.tensor([len(batch[row][0]) for row, _ in pairs], device=device)
    logits = model(
        input_ids=torch.tensor(inputs, device=device),
        attention_mask=torch.cat([prompt_mask[rows], label_mask], dim=1),
        position_ids=prompt_lengths[:, None] + torch.arange(longest, device=device)[None, :],
        **{_cache_argument(model): cache},
    ).logits
    targets_t = torch.tensor(targets, device=device)
    token_logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets_t[..., None])[..., 0]
    return (token_logprobs * label_mask).sum(-1).cpu()
