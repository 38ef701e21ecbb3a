"""`ftkit train` end to end on a tiny random Llama: run directory, metrics, and an adapter that reloads."""

from __future__ import annotations

import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from ftkit.tasks.scoring import label_logprobs
from tests.conftest import tiny_overrides


def test_train_evaluate_and_reload(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "trainer.learning_rate=5e-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    # No deprecation warning about gradient checkpointing's old name, from ftkit or from PEFT (issue 22).
    assert "checkpointing` is deprecated" not in result.stderr

    # The run directory a person reads.
    for name in (
        "config.yaml",
        "overrides.yaml",
        "train.log",
        "metrics.json",
        "report.md",
        "log_history.json",
        "plots/loss.png",
        "plots/confusion_matrix.png",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/tokenizer_config.json",
        "predictions/base.jsonl",
        "predictions/finetuned.jsonl",
        "predictions/majority.jsonl",
        "predictions/tfidf.jsonl",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for which in ("base", "finetuned"):
        assert metrics[which]["examples"] == 24
        assert 0 <= metrics[which]["accuracy"] <= 1 and 0 <= metrics[which]["macro_f1"] <= 1
        assert sum(map(sum, metrics[which]["confusion_matrix"]["matrix"])) == 24
        assert set(metrics[which]["per_class"]) == set(metrics[which]["confusion_matrix"]["labels"])
    # The default baselines and intervals (tests/test_baselines.py and test_statistics.py check their values).
    assert set(metrics["baselines"]) == {"majority", "tfidf"}
    assert all(scores["examples"] == 24 for scores in metrics["baselines"].values())
    uncertainty = metrics["uncertainty"]
    assert uncertainty["samples"] == 1000 and uncertainty["examples"] == 24
    assert set(uncertainty["intervals"]) == {"finetuned", "base", "majority", "tfidf"}
    assert set(uncertainty["paired_tests"]) == {"base", "majority", "tfidf"}
    report = (run_dir / "report.md").read_text()
    assert "| metric" in report and "| majority" in report and "McNemar" in report
    assert "One test example moves accuracy by 4.2 points (24 test examples)." in report
    assert "One test example moves accuracy by 4.2 points" in result.stdout
    train = metrics["train"]
    assert train["global_step"] == 6 and train["train_tokens"] > 0 and train["tokens_per_second"] > 0
    assert "step 6" in (run_dir / "train.log").read_text()
    assert "trainer.learning_rate=5e-3" in (run_dir / "overrides.yaml").read_text()
    assert "| accuracy" in result.stdout and "training tokens/s" in result.stdout
    assert "![confusion_matrix](plots/confusion_matrix.png)" in (run_dir / "report.md").read_text()
    # Evaluation runs on the test split and never on training data; checkpoints keep the Trainer's layout.
    assert any(run_dir.glob("checkpoints/checkpoint-*"))

    # Reloading the adapter onto the base model reproduces the fine-tuned label scores.
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run_dir / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    recipe = get_recipe_class("tickets")(compose([]).recipe)
    records = recipe.load_split("test")[:24]
    scores = label_logprobs(model, tokenizer, [recipe.prompt(r["text"]) for r in records], recipe.labels)
    saved = [json.loads(line) for line in (run_dir / "predictions/finetuned.jsonl").read_text().splitlines()]
    expected = torch.tensor([[row["scores"][label] for label in recipe.labels] for row in saved])
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-5)
    # ... and the adapter really changed the model: base scores differ.
    base_saved = [json.loads(line) for line in (run_dir / "predictions/base.jsonl").read_text().splitlines()]
    assert base_saved[0]["scores"] != saved[0]["scores"]
