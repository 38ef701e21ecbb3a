"""What ftkit needs from a model's chat template, checked or adapted before the weights load.

- fold_system_role: a template that refuses a system turn (Gemma's) gets one that opens the first user turn with it.
- check_end_of_turn: the token that ends the assistant's turn must be trained. TRL trains on the completion (or the
  assistant masks under assistant_only_loss) as the template renders it; a template that closes the assistant's
  turn outside that part, or not at all, gives a model that was never taught to stop: it runs on to
  max_new_tokens at every answer, and nothing in the training loss shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ftkit.errors import FtkitError

log = logging.getLogger(__name__)

# Put before a chat template that refuses a system turn (Gemma's raises "System role not supported"): the system
# text then opens the first user turn, the way Gemma's model card shows a system prompt.
SYSTEM_INTO_USER = (
    "{%- if messages and messages[0]['role'] == 'system' and messages|length > 1 and messages[1]['role'] == 'user' "
    "and messages[0]['content'] is string and messages[1]['content'] is string -%}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content'] + '\\n\\n' + messages[1]['content']}] "
    "+ messages[2:] -%}"
    "{%- endif -%}"
)


def fold_system_role(tokenizer: Any) -> None:
    """Give a tokenizer whose chat template refuses system turns one that folds the system turn into the first user
    turn, so that every recipe's system prompt works with it (and the saved tokenizer serves the same way)."""
    from jinja2.exceptions import TemplateError

    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(turns, tokenize=False)
    except TemplateError:
        tokenizer.chat_template = SYSTEM_INTO_USER + tokenizer.chat_template
        log.info(
            "%s's chat template has no system role: the system prompt opens the first user turn", tokenizer.name_or_path
        )


def stop_token_ids(tokenizer: Any, source: dict[str, Any] | None = None) -> set[int]:
    """The tokens generation stops at: the tokenizer's eos and the model's generation_config.json eos ids (read
    without the weights, when `source` — from_pretrained arguments — has one)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if source is not None:
        from transformers import GenerationConfig

        try:
            configured = GenerationConfig.from_pretrained(**source).eos_token_id
        except (
            OSError,
            ValueError,
            TypeError,
        ):  # no generation_config.json: the tokenizer's eos is what generation uses
            configured = None
        ids |= set(configured if isinstance(configured, list) else [configured]) - {None}
    return ids


def loss_mask(tokenizer: Any, example: dict[str, Any], assistant_only_loss: bool) -> tuple[list[int], list[bool]]:
    """(the example's token ids, whether the loss is computed on each), as TRL 1.x's SFTTrainer tokenizes a
    conversational example: for prompt + completion, the tokens after the longest common prefix of the prompt
    rendered with the generation prompt and of prompt + completion; under assistant_only_loss, only the template's
    {% generation %} tokens."""
    conversation = example["prompt"] + example["completion"] if "prompt" in example else example["messages"]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only_loss
    )
    ids = list(rendered["input_ids"])
    trained = [True] * len(ids)
    if "prompt" in example:
        prompt = tokenizer.apply_chat_template(
            example["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        start = 0
        while start < min(len(prompt), len(ids)) and prompt[start] == ids[start]:
            start += 1
        trained = [index >= start for index in range(len(ids))]
    if assistant_only_loss:
        trained = [t and bool(m) for t, m in zip(trained, rendered["assistant_masks"], strict=True)]
    return ids, trained


def check_end_of_turn(
    tokenizer: Any, example: dict[str, Any], assistant_only_loss: bool, stop_ids: set[int], where: str
) -> None:
    """Refuse a chat template whose rendering of `example` (one training example) leaves every token generation
    stops at (stop_ids) out of the loss: the fine-tuned model would not learn to end its answers."""
    if not stop_ids:
        return
    ids, trained = loss_mask(tokenizer, example, assistant_only_loss)
    if any(on and token in stop_ids for token, on in zip(ids, trained, strict=True)):
        return
    names = ", ".join(sorted(repr(tokenizer.convert_ids_to_tokens(token)) for token in stop_ids))
    answer = trained.index(True) if True in trained else len(ids)
    if any(token in stop_ids for token in ids[answer:]):  # the turn is closed, but that token is not trained
        problem = (
            f"the chat template ends the assistant's turn with {names}, but outside the tokens the loss is computed "
            "on" + (" (its {% generation %} block)" if assistant_only_loss else " (the completion)")
        )
        fix = (
            "move the end-of-turn token inside {% generation %} ... {% endgeneration %} in the template, or train "
            "without trainer.assistant_only_loss"
            if assistant_only_loss
            else "use a chat template that writes the end-of-turn token right after each assistant message "
            "(trainer.chat_template_path=<file>), or a model whose template does"
        )
    else:
        problem = f"the chat template writes no end-of-turn token ({names}) after the assistant's answer"
        fix = (
            "use a chat template that closes each assistant message with the eos token (trainer.chat_template_path="
            "<file>), or a model whose template does"
        )
    raise FtkitError(
        f"{problem}, so the fine-tuned model would not learn to stop: it would generate until max_new_tokens "
        f"every time",
        fix,
        where=where,
    )


def end_of_turn_check(cfg: Any, recipe: Any, records: list[dict[str, Any]]) -> Callable[[Any, set[int]], None]:
    """check_end_of_turn on the first training record with the run's loss settings, as load_model_and_tokenizer's
    check_tokenizer (before the weights load)."""
    assistant_only = bool(cfg.trainer.get("assistant_only_loss") or recipe.sft_config.get("assistant_only_loss"))

    def check(tokenizer: Any, stop_ids: set[int]) -> None:
        if not records:
            return
        if cfg.trainer.get("chat_template_path"):
            # TRL puts that template on the tokenizer only inside SFTTrainer, after this point
            log.info("End-of-turn check skipped: trainer.chat_template_path replaces the template later")
            return
        example = recipe.to_example(records[0])
        if "chosen" in example:  # DPO trains the chosen answer after the prompt, as SFT trains a completion
            example = {"prompt": example["prompt"], "completion": example["chosen"]}
        if not isinstance(example.get("prompt", example.get("messages")), list):
            return  # plain text, no chat template
        check_end_of_turn(tokenizer, example, assistant_only, stop_ids, where="model.path")

    return check
