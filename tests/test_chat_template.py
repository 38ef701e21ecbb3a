"""ftkit.training.chat_template: a template without a system role is adapted; one that leaves the end of the
assistant's turn out of the loss is refused before the weights load."""

from __future__ import annotations

import shutil

import pytest
from transformers import AutoTokenizer

from ftkit.errors import FtkitError
from ftkit.training.chat_template import check_end_of_turn, loss_mask
from tests.conftest import SMOLLM2_GGUF, smollm2_folder, tiny_overrides

EXAMPLE = {
    "prompt": [{"role": "system", "content": "Route this ticket."}, {"role": "user", "content": "Printer jammed."}],
    "completion": [{"role": "assistant", "content": "Hardware"}],
}
# The end of a turn written before the next turn instead of after each message: the last answer is never closed.
CLOSED_LATE = (
    "{% for m in messages %}{% if not loop.first %}<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|im_end|>\n<|im_start|>assistant\n{% endif %}"
)
# Under assistant_only_loss: the generation block holds the answer but not the <|im_end|> after it.
GENERATION_WITHOUT_END = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GENERATION_WITH_END = GENERATION_WITHOUT_END.replace(
    "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}<|im_end|>",
    "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}",
)


def smollm2_tokenizer(template: str | None = None):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def test_smollm2_template_trains_the_end_of_turn():
    tokenizer = smollm2_tokenizer()
    ids, trained = loss_mask(tokenizer, EXAMPLE, assistant_only_loss=False)
    assert tokenizer.decode([token for token, on in zip(ids, trained, strict=True) if on]) == "Hardware<|im_end|>\n"
    assert trained == sorted(trained)  # the trained tokens are the end of the sequence
    check_end_of_turn(tokenizer, EXAMPLE, False, {tokenizer.eos_token_id}, where="model.path")


def test_template_that_never_closes_the_answer_is_refused():
    tokenizer = smollm2_tokenizer(CLOSED_LATE)
    with pytest.raises(FtkitError, match="writes no end-of-turn token .*'<\\|im_end\\|>'.* would not learn to stop"):
        check_end_of_turn(tokenizer, EXAMPLE, False, {tokenizer.eos_token_id}, where="model.path")


def test_end_of_turn_outside_the_generation_block_is_refused_under_assistant_only_loss():
    tokenizer = smollm2_tokenizer(GENERATION_WITHOUT_END)
    messages = {"messages": EXAMPLE["prompt"] + EXAMPLE["completion"]}
    ids, trained = loss_mask(tokenizer, messages, assistant_only_loss=True)
    assert tokenizer.decode([token for token, on in zip(ids, trained, strict=True) if on]) == "Hardware"
    with pytest.raises(FtkitError, match="outside the tokens the loss is computed on .*generation") as refused:
        check_end_of_turn(tokenizer, messages, True, {tokenizer.eos_token_id}, where="model.path")
    assert "{% endgeneration %}" in str(refused.value)
    # The same template with <|im_end|> inside the block passes; so does the first one without assistant_only_loss.
    check_end_of_turn(smollm2_tokenizer(GENERATION_WITH_END), messages, True, {tokenizer.eos_token_id}, "model.path")
    check_end_of_turn(tokenizer, messages, False, {tokenizer.eos_token_id}, where="model.path")


def test_train_refuses_the_template_before_the_weights_load(run_ftkit, tiny_model, tmp_path):
    folder = tmp_path / "late-end"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CLOSED_LATE
    tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not weights")  # loading them would fail differently
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(folder, run_dir, "evaluate.base=false"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "writes no end-of-turn token" in result.stderr and "Fix:" in result.stderr
    assert not (run_dir / "adapter").exists()


def test_chat_template_without_system_role_gets_the_system_prompt_in_the_first_user_turn(tmp_path):
    """Gemma's template raises on a system turn: ftkit folds the system prompt into the first user turn."""
    from transformers import AutoTokenizer

    from ftkit.training.chat_template import fold_system_role

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<turn>{{ m['role'] }}\n{{ m['content'] }}<end>\n{% endfor %}"
    )
    turns = [
        {"role": "system", "content": "Route this ticket."},
        {"role": "user", "content": "Printer jammed."},
        {"role": "assistant", "content": "Hardware"},
    ]
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template(turns, tokenize=False)
    fold_system_role(tokenizer)
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    assert text == "<turn>user\nRoute this ticket.\n\nPrinter jammed.<end>\n<turn>assistant\nHardware<end>\n"
    # A template that takes system turns is left as it was.
    plain = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    template = plain.chat_template
    fold_system_role(plain)
    assert plain.chat_template == template
