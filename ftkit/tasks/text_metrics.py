"""Metrics of generated text against references, shared by the generation recipes (sft_instruct, report).

- ROUGE-L: rouge-score's LCS F-measure per example (its default tokenizer: lowercased ASCII letters and digits;
  Porter stemming on), averaged over examples. 0..1.
- BLEU: sacrebleu's corpus BLEU (13a tokenization, one reference per example), on sacrebleu's 0..100 scale.
- Perplexity: exp of the mean negative log-likelihood per token over the reference answers' tokens, from one
  teacher-forced forward pass (`reference_nll`); the tokens are exactly those TRL trains on for that turn: what
  the chat template appends for the assistant message, its end-of-turn token included.
- Field accuracy (structured outputs such as reports): the share of the reference's "Key: value" lines that
  the generation reproduces.

Nothing heavy is imported at module level: rouge-score, sacrebleu and torch load inside the functions.
"""

from __future__ import annotations

import math
import re
from typing import Any

FIELD_LINE = re.compile(r"^\s*([A-Za-z][\w /()-]{0,40}):\s*(\S.*?)\s*$")


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure of each prediction against its reference."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults), 0..100."""
    import sacrebleu

    _same_length(predictions, references)
    return float(sacrebleu.corpus_bleu(predictions, [references]).score) if predictions else 0.0


def perplexity(nll_sums: list[float], token_counts: list[int]) -> float:
    """exp(total NLL / total tokens): every reference token weighs the same, whatever its example's length."""
    tokens = sum(token_counts)
    return math.exp(sum(nll_sums) / tokens) if tokens else float("nan")


def fields(text: str) -> dict[str, str]:
    """The "Key: value" lines of a structured text, keys lowercased, values with whitespace collapsed."""
    found = {}
    for line in text.splitlines():
        match = FIELD_LINE.match(line)
        if match:
            found[match.group(1).strip().lower()] = " ".join(match.group(2).split()).lower()
    return found


def field_accuracy(predictions: list[str], references: list[str]) -> float | None:
    """Share of the references' "Key: value" lines whose key the prediction gives the same value (case-blind).

    Only references with at least one such line count; None when no reference has any.
    """
    _same_length(predictions, references)
    hits = total = 0
    for prediction, reference in zip(predictions, references, strict=True):
        wanted, given = fields(reference), fields(prediction)
        total += len(wanted)
        hits += sum(given.get(key) == value for key, value in wanted.items())
    return hits / total if total else None


def generation_metrics(predictions: list[dict[str, Any]], references: list[str]) -> dict[str, Any]:
    """rouge_l, bleu and perplexity of predictions ({"generation", "nll", "tokens"} dicts) against references."""
    generations = [p["generation"] for p in predictions]
    return {
        "examples": len(predictions),
        "rouge_l": rouge_l(generations, references),
        "bleu": bleu(generations, references),
        "perplexity": perplexity([p["nll"] for p in predictions], [p["tokens"] for p in predictions]),
        "reference_tokens": sum(p["tokens"] for p in predictions),
        "mean_generation_words": sum(len(g.split()) for g in generations) / max(len(generations), 1),
        "mean_reference_words": sum(len(r.split()) for r in references) / max(len(references), 1),
    }


def reference_nll(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], answers: list[str], batch_size: int = 16
) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each answer as the assistant turn after its chat prompt.

    The answer's tokens are where the chat-templated prompt + answer departs from the templated prompt with the
    generation prompt (TRL's rule), so they include the end-of-turn token. Rows are left-padded so every answer
    ends at the last position, and only the last positions' logits are computed.
    """
    import torch

    from ftkit.tasks.scoring import chat_ids

    encoded = []
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
        full = chat_ids(tokenizer, [*prompt, {"role": "assistant", "content": answer}], add_generation_prompt=False)
        start = next((i for i, (a, b) in enumerate(zip(prompt_ids, full, strict=False)) if a != b), len(prompt_ids))
        if start >= len(full):
            raise ValueError(f"the chat template renders no tokens for the answer {answer!r}")
        encoded.append((full, len(full) - start))
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            index = order[begin : begin + batch_size]
            width = max(len(encoded[i][0]) for i in index)
            answer_width = max(encoded[i][1] for i in index)
            ids = torch.tensor([[pad_id] * (width - len(encoded[i][0])) + encoded[i][0] for i in index])
            mask = torch.tensor([[0] * (width - len(encoded[i][0])) + [1] * len(encoded[i][0]) for i in index])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            device = model.device
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=answer_width + 1,
            ).logits[:, :-1]
            targets = ids[:, width - answer_width :].to(device)
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view(len(index), answer_width)
            for row, i in enumerate(index):
                count = encoded[i][1]
                results[i] = (float(nll[row, answer_width - count :].sum()), count)
    model.train(was_training)
    return results


def _same_length(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
