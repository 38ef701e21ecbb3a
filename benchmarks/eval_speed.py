"""Classification evaluation speed: ftkit's label scoring against the generation loops of the common tutorials.

On the same prompts (a seeded sample of a classification test split, read through the recipe, so the prompts are
exactly the ones ftkit scores) and the same model, it times
  - generate-per-example: model.generate for one prompt at a time, greedy, --new-tokens tokens, the answer
    mapped to a label by prefix (what most fine-tuning tutorials do);
  - generate-batched: ftkit.tasks.generation.generate, prompts sorted by length and left-padded, batches of
    --batch-size, greedy, --new-tokens tokens;
  - label-scoring: ftkit.tasks.scoring.label_logprobs with only_winners (what `ftkit train` / `ftkit eval` use): the
    shared prompt prefix once, each prompt batch once with a KV cache and only the last position's logits, then
    the remaining tokens of only the labels that can still win;
  - label-scoring-all: label_logprobs scoring every label (recipe.score_all_labels=true, serve's /v1/classify):
    one pass per batch, every label's tokens in each prompt's row under a tree attention mask;
  - exhaustive: every (prompt, label) pair as its own full forward pass, summing the label tokens' log-probs
    (the reference that label scoring must equal);
and prints a markdown table (appended to --results when given): seconds, examples/s, speed-up over the
per-example loop, and how many predicted labels equal the exhaustive reference's.

  .venv/bin/python benchmarks/eval_speed.py --recipe sentiment \\
      --test ../shared/datasets/twitter_financial_news_sentiment/sent_valid.csv \\
      --label-map '{0: negative, 1: positive, 2: neutral}' --examples 96

--run <run dir> scores that run's adapter on its base (default: the recipe's base model, SmolLM2-135M).
Errors in the arguments exit with code 2 and one paragraph.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import torch

from ftkit.config.compose import run_config
from ftkit.errors import exit_on_user_error
from ftkit.recipes import get_recipe_class
from ftkit.run_dir import RunDir
from ftkit.tasks.generation import generate
from ftkit.tasks.scoring import chat_ids, label_logprobs, label_token_ids
from ftkit.training.models import load_trained


def label_of(answer: str, labels: list[str]) -> str | None:
    """The label a generated answer names: the longest label the answer starts with (case-insensitive)."""
    matches = [label for label in labels if answer.strip().lower().startswith(label.lower())]
    return max(matches, key=len) if matches else None


@torch.inference_mode()
def generate_per_example(model: Any, tokenizer: Any, prompts: list[list[dict]], new_tokens: int) -> list[str]:
    answers = []
    for prompt in prompts:
        ids = torch.tensor([chat_ids(tokenizer, prompt, add_generation_prompt=True)], device=model.device)
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        answers.append(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))
    return answers


@torch.inference_mode()
def exhaustive_scores(model: Any, tokenizer: Any, prompts: list[list[dict]], labels: list[str]) -> torch.Tensor:
    scores = torch.empty(len(prompts), len(labels))
    for i, prompt in enumerate(prompts):
        prompt_ids, completions = label_token_ids(tokenizer, prompt, labels)
        for j, completion in enumerate(completions):
            ids = torch.tensor([prompt_ids + completion], device=model.device)
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, len(prompt_ids) :]
            scores[i, j] = logprobs[len(prompt_ids) - 1 :].gather(-1, targets[:, None]).sum()
    return scores


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="sentiment", help="a classification recipe")
    parser.add_argument("--test", required=True, help="the labelled file whose records are scored")
    parser.add_argument("--label-map", default=None, help="raw label -> label, e.g. '{0: negative, 1: positive}'")
    parser.add_argument("--run", default=None, help="a run directory: score its adapter (default: the base model)")
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=5, help="tokens the generation loops generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None, help="markdown file to append the table to")
    args, extra = parser.parse_known_args()

    overrides = [f"recipe={args.recipe}", f"recipe.data.test={Path(args.test).resolve()}", *extra]
    if args.label_map:
        overrides.append(f"recipe.label_map={args.label_map}")
    run = RunDir.finished(args.run, where="--run", command="eval_speed.py") if args.run else None
    cfg = run_config(run, overrides)
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    records = recipe.load_split("test")
    records = random.Random(args.seed).sample(records, min(args.examples, len(records)))
    prompts, labels = [recipe.prompt(r["text"]) for r in records], list(recipe.labels)
    model, tokenizer = load_trained(cfg, run)
    model.eval()
    label_logprobs(model, tokenizer, prompts[:2], labels)  # warm-up, not timed

    reference, exhaustive_s = timed(exhaustive_scores, model, tokenizer, prompts, labels)
    expected = [labels[i] for i in reference.argmax(-1).tolist()]
    scored, scoring_s = timed(label_logprobs, model, tokenizer, prompts, labels, args.batch_size, True)
    scored_all, scoring_all_s = timed(label_logprobs, model, tokenizer, prompts, labels, args.batch_size)
    batched, batched_s = timed(generate, model, tokenizer, prompts, args.new_tokens, args.batch_size)
    single, single_s = timed(generate_per_example, model, tokenizer, prompts, args.new_tokens)

    rows = [
        ("generate-per-example", single_s, [label_of(a, labels) for a in single]),
        (f"generate-batched ({args.batch_size})", batched_s, [label_of(a, labels) for a in batched]),
        (f"label-scoring ({args.batch_size})", scoring_s, [labels[i] for i in scored.argmax(-1).tolist()]),
        (f"label-scoring-all ({args.batch_size})", scoring_all_s, [labels[i] for i in scored_all.argmax(-1).tolist()]),
        ("exhaustive (reference)", exhaustive_s, expected),
    ]
    model_name = cfg.model.name + (f" + adapter of {args.run}" if args.run else " (base)")
    lines = [
        f"{len(prompts)} {cfg.recipe.name} prompts ({Path(args.test).name}, seed {args.seed}), {model_name}, "
        f"{torch.get_num_threads()} CPU threads, {args.new_tokens} new tokens for the generation loops",
        "",
        "| method | seconds | examples/s | speed-up vs per-example generate | labels equal to exhaustive |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, seconds, predicted in rows:
        same = sum(p == e for p, e in zip(predicted, expected, strict=True))
        lines.append(
            f"| {name} | {seconds:.1f} | {len(prompts) / seconds:.1f} | {single_s / seconds:.1f}x | "
            f"{same}/{len(prompts)} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.results:
        with open(args.results, "a") as out:
            out.write(table + "\n\n")


if __name__ == "__main__":
    main()
