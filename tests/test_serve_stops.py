"""Chat generation ends where each row of a batch is done (a stop string or its own max_tokens), not after the
batch's largest max_tokens: the server spends no forward passes on text it then cuts away."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ftkit.serve.engine import ChatJob, Engine

MAX = 16


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return Engine(SimpleNamespace(model=model, tokenizer=tokenizer, variants={}))


def forward_calls(engine: Engine) -> list[int]:
    calls: list[int] = []
    engine.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def first_stop(engine: Engine, ids: list[int]) -> tuple[str, int]:
    """A 2-character stop string from the answer, and how many tokens hold it for the first time."""
    decode = lambda n: engine.tokenizer.decode(ids[:n], skip_special_tokens=True)  # noqa: E731
    whole = decode(len(ids))
    for n in range(2, len(ids)):
        piece = decode(n)
        stop = piece[-2:]
        if len(stop) == 2 and whole.startswith(piece) and whole.find(stop) == len(piece) - 2:
            return stop, next(k for k in range(1, n + 1) if stop in decode(k))
    pytest.skip(f"no usable stop string in the tiny model's answer {whole!r}")


def test_a_stop_string_ends_generation_and_a_short_row_does_not_hold_the_batch(engine):
    prompt = engine.prompt_ids([{"role": "user", "content": "Valve V-12 sticks when cold."}])
    other = engine.prompt_ids([{"role": "user", "content": "The pump on line 3 leaks oil."}])
    ids = engine._generate([prompt], MAX, 0.0, 1.0)[0]
    assert len(ids) == MAX and not set(ids) & engine.eos_ids  # the random model runs to max_tokens
    stop, holding = first_stop(engine, ids)
    whole = engine.tokenizer.decode(ids, skip_special_tokens=True)

    calls = forward_calls(engine)
    cut, short = engine.chat(
        SimpleNamespace(adapter=None), 0.0, 1.0, [ChatJob(prompt, MAX, [stop]), ChatJob(other, 2, [])]
    )
    assert cut.text == whole[: whole.find(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens == holding < MAX
    assert short.completion_tokens == 2 and short.finish_reason == "length"
    assert len(calls) == holding  # one forward pass per generated token, none after both rows ended

    calls.clear()
    (alone,) = engine.chat(SimpleNamespace(adapter=None), 0.0, 1.0, [ChatJob(prompt, MAX, [])])
    assert alone.text == whole and alone.completion_tokens == MAX and len(calls) == MAX
