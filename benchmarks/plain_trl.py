"""The baseline of benchmarks/train_vs_trl.py: a plain, hand-written TRL fine-tuning script, as a user writes one.

SFTTrainer + LoRA with TRL's defaults (random batches padded to their longest example, every position through
the LM head's loss on a CPU) and only the settings the comparison must hold equal passed in: model, data,
learning rate and schedule, epochs, batch size, max_length, seed, LoRA shape, precision and gradient
checkpointing. Nothing of ftkit is used for training. After training, the test prompts are scored with
ftkit.tasks.scoring.label_logprobs, the scorer `ftkit train` uses, so the two runs' accuracies differ by training only.

  .venv/bin/python benchmarks/plain_trl.py --model <HF folder> --train train.jsonl --test test.jsonl \\
      --labels negative,neutral,positive --out <dir>

--train holds {"prompt": [messages], "completion": [messages]} lines (TRL's conversational prompt-completion
format), --test {"prompt": [messages], "label": "<label>"} lines. Writes <out>/stats.json: training seconds,
non-pad tokens, tokens/s, train loss, test accuracy, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--labels", required=True, help="comma-separated")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--scheduler", default="linear")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    train_dataset = load_dataset("json", data_files=args.train, split="train")
    config = SFTConfig(
        output_dir=str(args.out / "checkpoints"),
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup_steps,
        max_length=args.max_length,
        seed=args.seed,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        save_strategy="no",
        report_to="none",
        logging_steps=5,
    )
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=train_dataset, processing_class=tokenizer, peft_config=lora
    )
    result = trainer.train()
    trainer.save_model(str(args.out / "adapter"))

    # TRL counts each batch's attention-mask ones: the non-pad tokens trained on.
    tokens = max(entry.get("num_tokens", 0) for entry in trainer.state.log_history)
    seconds = result.metrics["train_runtime"]
    accuracy = test_accuracy(trainer.model, tokenizer, args.test, args.labels.split(","))
    stats = {
        "train_seconds": seconds,
        "train_tokens": int(tokens),
        "tokens_per_second": tokens / seconds,
        "train_loss": result.metrics["train_loss"],
        "global_step": trainer.state.global_step,
        "accuracy": accuracy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats))


def test_accuracy(model: torch.nn.Module, tokenizer: AutoTokenizer, test_file: str, labels: list[str]) -> float:
    from ftkit.tasks.scoring import label_logprobs  # the same scorer as ftkit's, so accuracy differs by training only

    started = time.perf_counter()
    rows = [json.loads(line) for line in Path(test_file).read_text().splitlines() if line.strip()]
    scores = label_logprobs(model, tokenizer, [row["prompt"] for row in rows], labels)
    predicted = [labels[i] for i in scores.argmax(-1).tolist()]
    accuracy = sum(p == row["label"] for p, row in zip(predicted, rows, strict=True)) / len(rows)
    print(f"plain TRL: test accuracy {accuracy:.3f} on {len(rows)} examples ({time.perf_counter() - started:.0f} s)")
    return accuracy


if __name__ == "__main__":
    main()
