"""Training speed: `ftkit train` against a plain hand-written TRL script (benchmarks/plain_trl.py), side by side.

It draws one seeded, stratified train/test subset of a labelled data set through a classification recipe (as
benchmarks/classification.py does), writes it for both (text/label JSONL for ftkit; the very prompt-completion
examples ftkit's recipe builds from it for the plain script), then runs the variants one after another as child
processes, in alternation for --rounds rounds, with the same model, examples, hyperparameters and precision:

  plain           plain_trl.py: TRL's defaults (random batches, every position through the LM head's loss on CPU),
                  gradient checkpointing off and fp32 as in ftkit, so the compute asked for is identical
  plain-defaults  plain_trl.py exactly as TRL ships it, gradient checkpointing on (still fp32)
  ftkit-random    ftkit train with random batches (trainer.train_sampling_strategy=random): batching changes off
  ftkit           ftkit train as configured by default: batches of similar length (group_by_length)
  ftkit-padding-free  ftkit train, random batches flattened into one row (trainer.padding_free=true)

For each run it reports non-pad tokens/s of training (TRL's own count of attention-mask ones over the training
seconds), training and wall seconds, peak RSS of the process (os.wait4) and test accuracy (both scored with
ftkit.tasks.scoring.label_logprobs, so accuracy differs by training only), then each variant's tokens/s ratio to
`plain` (mean over rounds). Markdown goes to stdout and is appended to --results.

  .venv/bin/python benchmarks/train_vs_trl.py --name twitter-financial-news-sentiment \\
      --train ../shared/datasets/twitter_financial_news_sentiment/sent_train.csv \\
      --test ../shared/datasets/twitter_financial_news_sentiment/sent_valid.csv \\
      --recipe sentiment --label-map '{0: negative, 1: positive, 2: neutral}' --train-size 480 --test-size 300

Anything after the options is an extra ftkit override applied to every ftkit variant. Errors in the arguments
or data exit 2 with one paragraph; a failed run stops the benchmark with its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from classification import (
    add_subset_arguments,
    draw_subsets,
    load_records,
    quote,
    shared_overrides,
    subset_overrides,
    write_subset,
)

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.config.overrides import rewrite_trainer_overrides
from ftkit.errors import FtkitError, exit_on_user_error
from ftkit.recipes import get_recipe_class
from ftkit.training.models import gguf_to_folder, resolve_source

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "plain": "plain TRL script (TRL defaults; gradient checkpointing off, fp32)",
    "plain-defaults": "plain TRL script, TRL defaults as shipped (gradient checkpointing on)",
    "ftkit-random": "ftkit train, random batches",
    "ftkit": "ftkit train, length-grouped batches (default)",
    "ftkit-padding-free": "ftkit train, random batches, padding-free",
}
FTKIT_BATCHING = {
    "ftkit-random": ["trainer.train_sampling_strategy=random"],
    "ftkit": ["trainer.train_sampling_strategy=group_by_length"],
    "ftkit-padding-free": ["trainer.train_sampling_strategy=random", "trainer.padding_free=true"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_subset_arguments(parser, train_size=480, test_size=300)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--variants", default="ftkit-random,plain,ftkit", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=1, help="times each variant runs, in alternation")
    parser.add_argument("--seeds", default="42", help="training seeds (comma-separated): each round runs each")
    parser.add_argument("--work-dir", type=Path, help="subsets and runs (default: outputs/benchmarks/...)")
    parser.add_argument("--results", type=Path, help="markdown file to append the tables to")
    parser.add_argument("overrides", nargs="*", help="extra ftkit overrides for the ftkit variants")
    args = parser.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        raise FtkitError(
            f"--variants names {', '.join(unknown) or 'nothing'}",
            f"choose from {', '.join(VARIANTS)}",
            where="--variants",
        )
    try:
        args.seed_list = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise FtkitError(
            f"--seeds {args.seeds!r} is not a list of integers", "e.g. --seeds 42,43,44", where="--seeds"
        ) from None
    for option in ("train_size", "test_size", "rounds", "batch_size"):
        if getattr(args, option) < 1:
            raise FtkitError(f"--{option.replace('_', '-')} must be at least 1", "give a positive number", where=option)
    return args


def training_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """The settings both sides hold equal; plain_trl.py's defaults match ftkit's LoRA (r 16, alpha 32, dropout 0)."""
    return [
        f"trainer.learning_rate={args.learning_rate}",
        f"trainer.num_train_epochs={args.epochs}",
        f"trainer.per_device_train_batch_size={args.batch_size}",
        "trainer.lr_scheduler_type=linear",
        "trainer.warmup_steps=5",
        f"trainer.seed={seed}",
        "trainer.bf16=false",
        "trainer.gradient_checkpointing=false",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
        "peft=lora",
        "peft.r=16",
        "peft.alpha=32",
        "peft.dropout=0.0",
        "peft.target_modules=all-linear",
        "evaluate.base=false",
        "evaluate.max_examples=null",
    ]


def write_plain_examples(shared: list[str], work: Path, has_label_map: bool) -> tuple[list[str], str, int]:
    """Write the examples ftkit's recipe builds from the subsets as TRL JSONL; (labels, model folder, max_length)."""
    cfg = compose(rewrite_trainer_overrides([*shared, *subset_overrides(work, has_label_map)]))
    check(cfg)
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    train = [recipe.to_example(record) for record in recipe.load_split("train") or []]
    test = [{"prompt": recipe.prompt(r["text"]), "label": r["label"]} for r in recipe.load_split("test") or []]
    for name, rows in (("plain_train.jsonl", train), ("plain_test.jsonl", test)):
        (work / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    folder, gguf_file = resolve_source(cfg.model)
    model = str(gguf_to_folder(folder, gguf_file, cfg.model.revision)) if gguf_file else folder
    return list(recipe.labels), model, int(cfg.model.max_length)


def command_for(variant: str, args: argparse.Namespace, context: dict[str, Any], out: Path, seed: int) -> list[str]:
    if variant.startswith("plain"):
        return [
            sys.executable,
            str(HERE / "plain_trl.py"),
            f"--model={context['model']}",
            f"--train={context['work'] / 'plain_train.jsonl'}",
            f"--test={context['work'] / 'plain_test.jsonl'}",
            "--labels=" + ",".join(context["labels"]),
            f"--out={out}",
            f"--learning-rate={args.learning_rate}",
            f"--epochs={args.epochs}",
            f"--batch-size={args.batch_size}",
            f"--max-length={context['max_length']}",
            f"--seed={seed}",
            "--no-bf16",
            "--gradient-checkpointing" if variant == "plain-defaults" else "--no-gradient-checkpointing",
        ]
    return [
        sys.executable,
        "-m",
        "ftkit.cli",
        "train",
        *context["shared"],
        *subset_overrides(context["work"], context["has_label_map"]),
        *training_overrides(args, seed),
        *FTKIT_BATCHING[variant],
        f"hydra.run.dir={quote(str(out))}",
    ]


def run_once(variant: str, command: list[str], out: Path) -> dict[str, Any]:
    """Run one variant as a child process; its wall time, peak RSS (wait4) and its own report."""
    print(f"benchmark: {variant}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"benchmark: {variant} failed (exit {code}); see {out.parent / (out.name + '.log')}")
    if variant.startswith("plain"):
        stats = json.loads((out / "stats.json").read_text())
        seconds, tokens, accuracy = stats["train_seconds"], stats["train_tokens"], stats["accuracy"]
    else:
        metrics = json.loads((out / "metrics.json").read_text())
        seconds, tokens = metrics["train"]["train_minutes"] * 60, metrics["train"]["train_tokens"]
        accuracy = metrics["finetuned"]["accuracy"]
    return {
        "variant": variant,
        "tokens_per_second": tokens / seconds,
        "train_seconds": seconds,
        "tokens": tokens,
        "wall_seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "accuracy": accuracy,
    }


def tables(name: str, runs: list[dict[str, Any]], args: argparse.Namespace, examples: tuple[int, int]) -> str:
    lines = [
        f"{name}: {examples[0]} train / {examples[1]} test examples, {args.epochs:g} epoch(s), batch "
        f"{args.batch_size}, lr {args.learning_rate:g}, LoRA r 16 all-linear, fp32, {os.cpu_count()} CPUs",
        "",
        "| round | seed | variant | non-pad tokens/s | training s | wall s | peak RSS MB | test accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    per_round = len(args.variant_list) * len(args.seed_list)
    for index, run in enumerate(runs):
        lines.append(
            f"| {index // per_round + 1} | {run['seed']} | {VARIANTS[run['variant']]} | "
            f"{run['tokens_per_second']:.1f} | {run['train_seconds']:.0f} | {run['wall_seconds']:.0f} | "
            f"{run['peak_rss_mb']:.0f} | "
            f"{run['accuracy']:.3f} |"
        )

    def mean(variant: str, key: str) -> float:
        values = [run[key] for run in runs if run["variant"] == variant]
        return sum(values) / len(values)

    if "plain" in args.variant_list:
        base = mean("plain", "tokens_per_second")
        runs_each = args.rounds * len(args.seed_list)
        lines += [
            "",
            f"| variant | tokens/s ratio to the plain TRL script | test accuracy (mean of {runs_each}) |",
            "| --- | --- | --- |",
        ]
        for variant in args.variant_list:
            ratio = mean(variant, "tokens_per_second") / base
            lines.append(f"| {VARIANTS[variant]} | {ratio:.2f}x | {mean(variant, 'accuracy'):.3f} |")
    return "\n".join(lines) + "\n"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.name or Path(args.train).stem
    shared = shared_overrides(args, "benchmark-model")
    pool, held_out, _, has_label_map = load_records(args, shared)
    train, test = draw_subsets(args, pool, held_out)
    work = args.work_dir or Path("outputs/benchmarks/train_vs_trl", name, time.strftime("%Y-%m-%d_%H-%M-%S"))
    work.mkdir(parents=True, exist_ok=True)
    write_subset(work / "train.jsonl", train, args.max_words)
    write_subset(work / "test.jsonl", test, args.max_words)
    labels, model, max_length = write_plain_examples(shared, work, has_label_map)
    context = {
        "work": work.resolve(),
        "shared": shared,
        "has_label_map": has_label_map,
        "labels": labels,
        "model": model,
        "max_length": max_length,
    }
    print(f"benchmark: {len(train)} train / {len(test)} test examples in {work}", flush=True)
    runs = []
    for round_index in range(args.rounds):
        for seed in args.seed_list:
            for variant in args.variant_list:
                out = (work / f"{variant}-seed{seed}-{round_index + 1}").resolve()
                runs.append({"seed": seed, **run_once(variant, command_for(variant, args, context, out, seed), out)})
                print(f"benchmark: {json.dumps(runs[-1])}", flush=True)
    report = tables(name, runs, args, (len(train), len(test)))
    print("\n" + report)
    if args.results:
        with args.results.open("a") as handle:
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
