"""Batched, cached label scoring must equal scoring every (prompt, label) pair on its own."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.tasks import scoring
from ftkit.tasks.scoring import label_logprobs, label_token_ids

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
    assert completions[1][: len(completions[0]) - 1] == completions[0][:-1]  # "Pump" tokens prefix "Pump/Seal"
    assert all(completion[-1] == tokenizer.eos_token_id for completion in completions)  # scored up to end-of-turn


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


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_tree_scoring_equals_exhaustive_under_each_attention(tiny_model, attention):
    """One pass per batch (shared prefix from a cache, every label in the row under a 4D mask), eager and sdpa."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert scoring.takes_tree_masks(model, longest=100)
    prompts = [messages(text) for text in PROMPTS]
    reference = exhaustive(model, tokenizer, prompts, LABELS)
    fast = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=3)
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-5)


def test_two_pass_path_for_attention_without_4d_masks(model_and_tokenizer, monkeypatch):
    """FlashAttention takes no 4D mask: those models go through the prompt cache and one row per (prompt, label)."""
    model, tokenizer = model_and_tokenizer
    monkeypatch.setattr(scoring, "TREE_MASK_ATTENTION", ())
    assert not scoring.takes_tree_masks(model, longest=100)
    prompts = [messages(text) for text in PROMPTS]
    torch.testing.assert_close(
        label_logprobs(model, tokenizer, prompts, LABELS, batch_size=2),
        exhaustive(model, tokenizer, prompts, LABELS),
        atol=1e-4,
        rtol=1e-5,
    )


def test_the_shared_prefix_runs_once_and_every_prompt_keeps_a_token():
    assert scoring.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]]) == 2
    assert scoring.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last token stays
    assert scoring.shared_prefix_length([[1, 2, 3], [9, 2, 3]]) == 0


def test_the_prompt_prefix_is_computed_once_per_call(model_and_tokenizer, monkeypatch):
    """The system prompt and template head go through the model once, not once per batch."""
    model, tokenizer = model_and_tokenizer
    calls = []
    original = scoring._run_prefix
    monkeypatch.setattr(scoring, "_run_prefix", lambda m, ids: calls.append(len(ids)) or original(m, ids))
    label_logprobs(model, tokenizer, [messages(text) for text in PROMPTS], LABELS, batch_size=2)
    shared = len(scoring.chat_ids(tokenizer, [{"role": "system", "content": "Route the ticket."}], False))
    assert len(calls) == 1 and calls[0] >= shared  # three batches, one prefix pass covering the system turn


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_only_winners_gives_the_exhaustive_argmax_and_exact_scores_where_it_scores(
    model_and_tokenizer, batch_size, monkeypatch
):
    model, tokenizer = model_and_tokenizer
    monkeypatch.setattr(scoring, "EXTRA_PASS_COLUMNS", -1)  # prune even where one pass would be cheaper
    prompts = [messages(text) for text in PROMPTS]
    reference = exhaustive(model, tokenizer, prompts, LABELS)
    fast = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=batch_size, only_winners=True)
    assert torch.equal(fast.argmax(1), reference.argmax(1))
    scored = torch.isfinite(fast)
    torch.testing.assert_close(fast[scored], reference[scored], atol=1e-4, rtol=1e-5)
    # A label left out cannot win: even its first token alone is below the winner's whole sum.
    for row, label in (~scored).nonzero().tolist():
        assert reference[row, label] <= fast[row].max()


def bigram_model(tiny_model, tokenizer, prompt_end: int, winner: int):
    """The tiny Llama with its attention and MLP outputs zeroed: logits depend on the input token only. After the
    prompt's last token `winner` gets logit 20, after `winner` the end-of-turn token does; every other logit is 0."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, tie_word_embeddings=False)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for previous, following in ((prompt_end, winner), (winner, tokenizer.eos_token_id)):
            hidden = model.model.norm(model.model.embed_tokens.weight[previous][None])[0]
            model.lm_head.weight[following] = 20 * hidden / hidden.dot(hidden)
    return model.eval()


def test_only_winners_skips_labels_that_cannot_win(tiny_model, monkeypatch):
    monkeypatch.setattr(scoring, "EXTRA_PASS_COLUMNS", -1)  # these short labels would otherwise all run in one pass
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    labels = ["negative", "neutral", "positive"]
    prompts = [messages(text) for text in PROMPTS]
    prompt_ids, completions = label_token_ids(tokenizer, prompts[0], labels)
    assert all(len(completion) == 2 for completion in completions)  # one label token, then end-of-turn
    model = bigram_model(tiny_model, tokenizer, prompt_ids[-1], completions[2][0])
    full = label_logprobs(model, tokenizer, prompts, labels, only_winners=False)
    assert (full[:, 2] > -0.01).all() and (full[:, :2] < -19).all()  # "positive" holds nearly all the mass
    fast = label_logprobs(model, tokenizer, prompts, labels, only_winners=True)
    assert torch.isneginf(fast[:, :2]).all()  # their end-of-turn tokens never ran
    torch.testing.assert_close(fast[:, 2], full[:, 2], atol=1e-5, rtol=1e-5)


def test_few_short_labels_are_all_scored_in_one_pass(model_and_tokenizer):
    """Pruning needs a second pass; with three one-token labels the one-pass tree is cheaper and scores them all."""
    model, tokenizer = model_and_tokenizer
    prompts = [messages(text) for text in PROMPTS]
    scores = label_logprobs(model, tokenizer, prompts, ["negative", "neutral", "positive"], only_winners=True)
    assert torch.isfinite(scores).all()
