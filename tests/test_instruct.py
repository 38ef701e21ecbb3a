"""The generation recipes (sft_instruct, report): CLI end to end on a tiny model, record formats and their errors,
the training loss mask through TRL, the reference perplexity pass, and ROUGE-L / BLEU against the libraries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from tests.conftest import tiny_overrides

TRAIN_RECORDS, TEST_RECORDS = 24, 12


def instruct_overrides(recipe: str, model: Path, run_dir: Path, *extra: str) -> list[str]:
    caps = [
        f"recipe.data.max_train_examples={TRAIN_RECORDS}",
        f"evaluate.max_examples={TEST_RECORDS}",
        "peft.top_layers=null",  # the tiny model has 2 layers
    ]
    keys = {cap.split("=")[0] for cap in caps}
    base = [o for o in tiny_overrides(model, run_dir) if o.split("=")[0] not in keys]
    return [f"recipe={recipe}", *base, *caps, "recipe.max_new_tokens=8", *extra]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_recipe(name: str = "sft_instruct", *overrides: str) -> Any:
    cfg = compose([f"recipe={name}", *overrides])
    check(cfg)
    return get_recipe_class(name)(cfg.recipe)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("recipe_name", ["sft_instruct", "report"])
def test_train_end_to_end(recipe_name, run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = instruct_overrides(recipe_name, tiny_model, run_dir, "trainer.learning_rate=5e-3")
    result = run_ftkit("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]

    recipe = make_recipe(recipe_name, *(o for o in overrides if o.startswith("recipe.")))
    test_records = recipe.load_split("test")[:TEST_RECORDS]
    train_examples = len(recipe.load_split("train"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["primary_metric"] == "rouge_l"
    for which in ("base", "finetuned"):
        scores = metrics[which]
        assert scores["examples"] == TEST_RECORDS
        assert 0 <= scores["rouge_l"] <= 1 and 0 <= scores["bleu"] <= 100
        assert 1 < scores["perplexity"] < 1e6 and scores["reference_tokens"] >= TEST_RECORDS
        predictions = read_jsonl(run_dir / "predictions" / f"{which}.jsonl")
        assert [p["reference"] for p in predictions] == [r["messages"][-1]["content"] for r in test_records]
        assert [p["source"] for p in predictions] == [r["source"] for r in test_records]
        assert all(isinstance(p["generation"], str) for p in predictions)
        nll, tokens = sum(p["nll"] for p in predictions), sum(p["tokens"] for p in predictions)
        assert scores["perplexity"] == pytest.approx(math.exp(nll / tokens))
        if recipe_name == "report":
            assert 0 <= scores["field_accuracy"] <= 1
    # Training on the answers lowers the perplexity of held-out answers of the same kind.
    assert metrics["finetuned"]["perplexity"] < metrics["base"]["perplexity"]
    # Every assistant turn of the capped records was a training example (batch size 8, one epoch).
    assert metrics["train"]["global_step"] == math.ceil(train_examples / 8)
    assert "| rouge_l" in result.stdout
    if recipe_name == "sft_instruct":
        # Both bundled formats are read, and the cap keeps a share of each file.
        log = (run_dir / "train.log").read_text()
        assert "alpaca format" in log and "messages format" in log
        assert train_examples > TRAIN_RECORDS  # multi-turn chats give one example per assistant turn
        assert {Path(r["source"].rsplit(":", 1)[0]).name for r in test_records} == {
            "test_alpaca.jsonl",
            "test_chat.jsonl",
        }


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Spain?"},
    {"role": "assistant", "content": "Madrid."},
]
FORMAT_CASES = {
    "alpaca": (
        [
            {"instruction": "Sort these words.", "input": "pear, apple", "output": "apple, pear"},
            {"instruction": "Say hi.", "output": "Hi!"},
        ],
        [
            [
                {"role": "user", "content": "Sort these words.\n\npear, apple"},
                {"role": "assistant", "content": "apple, pear"},
            ],
            [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
        ],
    ),
    "sharegpt": (
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Capital of France?"},
                    {"from": "gpt", "value": "Paris."},
                    {"from": "human", "value": "And of Spain?"},
                    {"from": "gpt", "value": "Madrid."},
                ]
            }
        ],
        [CONVERSATION],
    ),
    "messages": ([{"messages": CONVERSATION}], [CONVERSATION]),
    "prompt_completion": (
        [
            {"prompt": "Say hi.", "completion": "Hi!"},
            {"prompt": CONVERSATION[:4], "completion": CONVERSATION[4:]},
        ],
        [[{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}], CONVERSATION],
    ),
}


@pytest.mark.parametrize("fmt", FORMAT_CASES)
def test_formats_are_detected_from_the_first_record(fmt, tmp_path):
    records, expected = FORMAT_CASES[fmt]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    recipe = make_recipe("sft_instruct", f"recipe.data.train={path}", f"recipe.data.test={path}")
    test = recipe.load_split("test")
    assert [r["messages"] for r in test] == expected
    assert {r["format"] for r in test} == {fmt}
    assert [r["source"] for r in test] == [f"{path}:{line}" for line in range(1, len(records) + 1)]
    # Training sees one example per assistant turn, each ending on that turn.
    train = recipe.load_split("train")
    assert [r["messages"] for r in train] == [
        messages[: i + 1] for messages in expected for i, m in enumerate(messages) if m["role"] == "assistant"
    ]


def test_format_override(tmp_path):
    both = {"prompt": "P", "completion": "C", "instruction": "I", "input": "", "output": "O"}
    path = write_jsonl(tmp_path / "both.jsonl", [both])
    auto = make_recipe("sft_instruct", f"recipe.data.train={path}").load_split("train")
    forced = make_recipe("sft_instruct", f"recipe.data.train={path}", "recipe.format=alpaca").load_split("train")
    assert auto[0]["format"] == "prompt_completion" and auto[0]["messages"][0]["content"] == "P"
    assert forced[0]["format"] == "alpaca" and forced[0]["messages"][1]["content"] == "O"
    # A forced format that the records do not have is refused at the first record.
    recipe = make_recipe("sft_instruct", f"recipe.data.train={path}", "recipe.format=sharegpt")
    with pytest.raises(FtkitError) as error:
        recipe.load_split("train")
    assert error.value.where == f"{path}:1" and "sharegpt format set by recipe.format" in error.value.problem


ALPACA = {"instruction": "Say hi.", "output": "Hi!"}


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        ([ALPACA, {"instruction": "Say hi."}], "does not fit the alpaca format detected from line 1"),
        ([ALPACA, {"instruction": "Say hi.", "output": "  "}], "must be non-empty text"),
        ([{"text": "hello"}], "cannot tell the record format"),
        ([{"messages": [*CONVERSATION, {"role": "tool", "content": "x"}]}], "role 'tool'"),
        ([{"messages": CONVERSATION[:4]}], "does not end on an assistant turn"),
        ([{"messages": [CONVERSATION[1], CONVERSATION[1], CONVERSATION[2]]}], "turn 1 has role 'user'"),
        ([{"messages": [{"role": "user", "text": "hi"}]}], "messages[0] is not a turn with 'role' and 'content'"),
        ([{"conversations": [{"from": "bot", "value": "hi"}]}], "not a ShareGPT role"),
        ([{"prompt": "Say hi.", "completion": CONVERSATION[2:3]}], "both be text or both be lists"),
    ],
)
def test_malformed_records_name_file_and_line(records, fragment, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    recipe = make_recipe("sft_instruct", f"recipe.data.train={path}")
    with pytest.raises(FtkitError) as error:
        recipe.load_split("train")
    assert error.value.where == f"{path}:{len(records)}"
    assert fragment in error.value.problem and error.value.fix


def test_malformed_record_exits_2_through_the_cli(run_ftkit, tiny_model, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [ALPACA, ALPACA, {"instruction": "Say hi.", "response": "Hi!"}])
    overrides = instruct_overrides("sft_instruct", tiny_model, tmp_path / "run", f"recipe.data.train={path}")
    result = run_ftkit("train", *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{path}:3: the record has no 'output' field" in result.stderr and "Fix:" in result.stderr


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("recipe.format=alpacca", "did you mean 'alpaca'"),
        ("recipe.max_new_tokens=0", "use e.g. recipe.max_new_tokens=64"),
        ("recipe.data.test=[]", "write recipe.data.test=data.jsonl"),
    ],
)
def test_config_mistakes(override, fragment):
    with pytest.raises(FtkitError) as error:
        make_recipe("sft_instruct", override)
    assert fragment in str(error.value)


def test_loss_mask_is_exactly_the_assistant_turns_with_end_of_turn(tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    conversation = [
        *CONVERSATION,
        {"role": "user", "content": "And of Peru?"},
        {"role": "assistant", "content": "Lima."},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    recipe = make_recipe("sft_instruct", f"recipe.data.train={path}", "recipe.system_prompt=null")
    records = recipe.load_split("train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=SFTConfig(
            output_dir=str(tmp_path / "out"), report_to="none", max_length=512, bf16=False, **recipe.sft_config
        ),
        train_dataset=Dataset.from_list([recipe.to_example(r) for r in records]),
        processing_class=tokenizer,
    )
    rows = list(trainer.train_dataset)
    full = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    # Where the template puts each assistant turn: after "<|im_start|>assistant\n", through "<|im_end|>\n".
    start, end, newline = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "Ċ"))
    assistant = tokenizer.encode("assistant", add_special_tokens=False)
    expected_spans = []
    for i, token in enumerate(full):
        if token == start and full[i + 1 : i + 1 + len(assistant)] == assistant:
            first = i + 1 + len(assistant) + 1  # after the role's newline
            last = full.index(end, first) + 1
            assert full[last] == newline
            expected_spans.append((first, last + 1))
    assert len(expected_spans) == len(rows) == 3

    covered = []
    for row, (first, stop) in zip(rows, expected_spans, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        assert ids == full[:stop]  # the whole conversation so far is the context
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert trained == list(range(first, stop))  # this turn only, end-of-turn token and newline included
        assert [labels[i] for i in trained] == ids[first:stop]
        assert tokenizer.convert_ids_to_tokens(ids[stop - 2 : stop]) == ["<|im_end|>", "Ċ"]
        covered += trained
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    assert [tokenizer.decode(full[a:b]) for a, b in expected_spans] == [f"{a}<|im_end|>\n" for a in answers]
    assert sorted(covered) == [i for a, b in expected_spans for i in range(a, b)]


def test_reference_nll_matches_an_unbatched_forward_pass(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftkit.tasks.text_metrics import reference_nll

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [CONVERSATION[:2], CONVERSATION[:4], [{"role": "user", "content": "A much longer question " * 6}]]
    answers = ["Paris.", "Madrid is the capital of Spain.", "Yes."]
    batched = reference_nll(model, tokenizer, prompts, answers, batch_size=2)
    for (nll, count), prompt, answer in zip(batched, prompts, answers, strict=True):
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=True, return_dict=False
        )
        assert full[: len(prompt_ids)] == prompt_ids and count == len(full) - len(prompt_ids)
        labels = torch.tensor([[-100] * len(prompt_ids) + full[len(prompt_ids) :]])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([full]), labels=labels).loss
        assert nll == pytest.approx(float(loss) * count, rel=1e-4)


def test_rouge_l_and_bleu_agree_with_the_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    from ftkit.tasks.text_metrics import bleu, field_accuracy, perplexity, rouge_l

    # LCS of "the cat sat on the mat" and "the cat lay on the mat" is 5 of 6 words each way.
    assert rouge_l(["the cat sat on the mat"], ["the cat lay on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l(["a b c"], ["a b c"]) == 1.0 and rouge_l(["x y"], ["a b"]) == 0.0
    assert rouge_l(["a b c", "x"], ["a b c", "y"]) == pytest.approx(0.5)  # averaged over examples
    assert rouge_l(["Cats running!"], ["cat runs"]) == 1.0  # lowercased, punctuation dropped, stemmed
    predictions = ["The pump seal was replaced.", "Motor M-12 overheated on line 3", ""]
    references = ["The mechanical seal was replaced.", "Motor M-12 overheated on line 4.", "No fault found."]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    direct = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    assert rouge_l(predictions, references) == pytest.approx(sum(direct) / 3)

    assert bleu(references, references) == pytest.approx(100.0)
    assert bleu(["completely unrelated words here"], ["the pump seal was replaced"]) == 0.0
    assert bleu(predictions, references) == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert 0 < bleu(predictions, references) < 100

    assert perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(6 / 4))
    reference = "Asset: P-1\nFailure: seal leak\nDowntime: 3 h"
    assert field_accuracy(["asset: p-1\nFailure:  seal leak\nDowntime: 4 h"], [reference]) == pytest.approx(2 / 3)
    assert field_accuracy(["anything"], ["The downtime was 3 h."]) is None


def test_a_list_of_files_is_read_interleaved_and_a_missing_one_is_named_by_its_place(tmp_path):
    def chats(tag: str, count: int) -> list[dict]:
        return [{"messages": [{"role": "user", "content": f"{tag} {i}"}, {"role": "assistant", "content": "ok"}]}
                for i in range(count)]  # fmt: skip

    first, second = write_jsonl(tmp_path / "a.jsonl", chats("a", 4)), write_jsonl(tmp_path / "b.jsonl", chats("b", 2))
    recipe = make_recipe("sft_instruct", f"recipe.data.test=[{first},{second}]")
    sources = [r["source"].rsplit(":", 1)[0] for r in recipe.read_file("test")]
    assert sorted(sources) == sorted([str(first)] * 4 + [str(second)] * 2)
    assert str(second) in sources[:3]  # interleaved in proportion, not one file after the other
    missing = make_recipe("sft_instruct", f"recipe.data.test=[{first},{tmp_path / 'none.jsonl'}]")
    with pytest.raises(FtkitError) as error:
        missing.read_file("test")
    assert "recipe.data.test[1]" in str(error.value.where) + error.value.problem + error.value.fix
