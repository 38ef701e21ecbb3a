"""Classification benchmark: ftkit fine-tuning (base vs fine-tuned) against a TF-IDF + LogisticRegression baseline.

It reads a labelled data set through a classification recipe (so fields, label maps and file:line errors are the
recipe's own), draws a fixed stratified train/test subset (seeded; sizes are arguments), writes the two subsets as
JSONL, runs `ftkit train` on them through the CLI (SmolLM2-135M unless --model-path says otherwise), reads the run's
metrics.json, fits the TF-IDF baseline (ftkit.reporting.baselines, the one in every run's report) on the same train
subset, scores it on the same test subset, and prints one markdown row (appended to --results when given):

  | dataset | model | train examples | test examples | training minutes | base accuracy | base macro-F1 |
  | fine-tuned accuracy | fine-tuned macro-F1 | TF-IDF accuracy | TF-IDF macro-F1 |

Examples (from the repository root):

  # Twitter financial news sentiment: sent_valid.csv is the held-out split; label ids 0 bearish, 1 bullish, 2 neutral
  .venv/bin/python benchmarks/classification.py --name twitter-financial-news-sentiment \\
      --train ../shared/datasets/twitter_financial_news_sentiment/sent_train.csv \\
      --test ../shared/datasets/twitter_financial_news_sentiment/sent_valid.csv \\
      --recipe sentiment --label-map '{0: negative, 1: positive, 2: neutral}' \\
      --train-size 1500 --test-size 600 --results benchmarks/results.md

  # IT service tickets: one CSV, 8 classes; the test subset is carved out of it, long tickets are cut to 120 words
  .venv/bin/python benchmarks/classification.py --name it-service-tickets \\
      --train ../shared/datasets/it_service_tickets/all_tickets_processed_improved_v3.csv \\
      --recipe tickets --text-field Document --label-field Topic_group \\
      --labels 'Hardware,HR Support,Access,Miscellaneous,Storage,Purchase,Internal Project,Administrative rights' \\
      --train-size 1400 --test-size 400 --max-words 120 --results benchmarks/results.md \\
      'recipe.system_prompt=Route this IT support ticket to its category.'

Anything after the options is an ftkit override for the run (e.g. trainer.num_train_epochs=2); --model-path swaps
the base model for an HF folder or hub id (the tests use a tiny random Llama).

Errors in the arguments or the data exit with code 2 and one paragraph (ftkit's FtkitError); a failed `ftkit train`
passes its exit code on.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.config.overrides import rewrite_trainer_overrides
from ftkit.errors import FtkitError, exit_on_user_error
from ftkit.recipes import get_recipe_class
from ftkit.reporting.baselines import tfidf_labels
from ftkit.tasks.classification import classification_metrics

COLUMNS = [
    "dataset",
    "model",
    "train examples",
    "test examples",
    "training minutes",
    "base accuracy",
    "base macro-F1",
    "fine-tuned accuracy",
    "fine-tuned macro-F1",
    "TF-IDF accuracy",
    "TF-IDF macro-F1",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Examples" + __doc__.split("Examples", 1)[1],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_subset_arguments(parser, train_size=1000, test_size=500)
    parser.add_argument("--work-dir", type=Path, help="subsets and run (default: outputs/benchmarks/<name>/<time>)")
    parser.add_argument("--results", type=Path, help="markdown file to append the row to (header added if new)")
    parser.add_argument("overrides", nargs="*", help="ftkit overrides for the run, e.g. trainer.num_train_epochs=2")
    args = parser.parse_args(argv)
    for option in ("train_size", "test_size", "max_words"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    return args


def add_subset_arguments(parser: argparse.ArgumentParser, train_size: int, test_size: int) -> None:
    """The data set, recipe, subset and model options shared with benchmarks/train_vs_trl.py."""
    parser.add_argument("--train", required=True, help="labelled data: JSONL / CSV path, bundled:... or hub:...")
    parser.add_argument("--test", help="held-out data to draw the test subset from (default: carved out of --train)")
    parser.add_argument("--name", help="dataset name in the results (default: the --train file's stem)")
    parser.add_argument("--recipe", default="sentiment", help="classification recipe (default: sentiment)")
    parser.add_argument("--text-field", help="field holding the text (default: the recipe's)")
    parser.add_argument("--label-field", help="field holding the label (default: the recipe's)")
    parser.add_argument("--labels", help="comma-separated label names (default: the recipe's)")
    parser.add_argument("--label-map", help="raw value -> label, as for recipe.label_map: '{0: negative, 1: positive}'")
    parser.add_argument("--train-size", type=int, default=train_size, help=f"train subset size (default: {train_size})")
    parser.add_argument("--test-size", type=int, default=test_size, help=f"test subset size (default: {test_size})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset draw (default: 0)")
    parser.add_argument("--max-words", type=int, help="keep each text's first N words (for every model and baseline)")
    parser.add_argument("--model-path", help="base model folder or hub id instead of the default SmolLM2-135M")


def shared_overrides(args: argparse.Namespace, model_name: str) -> list[str]:
    """ftkit overrides for the recipe, its labels and the base model, then the user's own."""
    shared = [f"recipe={args.recipe}", *args.overrides]
    if args.labels:
        shared.insert(1, "recipe.labels=[" + ",".join(quote(label.strip()) for label in args.labels.split(",")) + "]")
    if args.model_path:
        model = [f"model.path={quote(args.model_path)}", "model.gguf_file=null", f"model.name={quote(model_name)}"]
        shared[1:1] = model
    return shared


def subset_overrides(work: Path, has_label_map: bool) -> list[str]:
    """The subsets written to work/ hold label names under text/label: no field names or label map needed."""
    return [
        f"recipe.data.train={quote(str(work / 'train.jsonl'))}",
        f"recipe.data.test={quote(str(work / 'test.jsonl'))}",
        "recipe.data.validation=null",
        "recipe.data.text_field=text",
        "recipe.data.label_field=label",
        "recipe.data.max_train_examples=null",
        *(["recipe.label_map=null"] if has_label_map else []),
    ]


def quote(value: str) -> str:
    """A value as a single-quoted Hydra override string (spaces, commas, brackets survive)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stratified_sample(records: list[dict[str, Any]], size: int, rng: random.Random) -> tuple[list, list]:
    """(sample, rest): `size` records, each label's share as in `records` (largest remainder), both in random order."""
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_label[record["label"]].append(record)
    labels = sorted(by_label)
    for label in labels:
        rng.shuffle(by_label[label])
    size = min(size, len(records))
    exact = {label: size * len(by_label[label]) / len(records) for label in labels}
    quota = {label: int(exact[label]) for label in labels}
    by_remainder = sorted(labels, key=lambda label: (quota[label] - exact[label], label))
    for label in by_remainder[: size - sum(quota.values())]:
        quota[label] += 1
    sample = [r for label in labels for r in by_label[label][: quota[label]]]
    rest = [r for label in labels for r in by_label[label][quota[label] :]]
    rng.shuffle(sample)
    return sample, rest


def load_records(args: argparse.Namespace, shared: list[str]) -> tuple[list, list, list[str], bool]:
    """The train and test pools through the recipe (mapped labels), its labels, and whether it has a label map."""
    data = [
        f"recipe.data.train={quote(args.train)}",
        f"recipe.data.test={quote(args.test or args.train)}",
        "recipe.data.validation=null",
        "recipe.data.max_train_examples=null",
    ]
    if args.text_field:
        data.append(f"recipe.data.text_field={quote(args.text_field)}")
    if args.label_field:
        data.append(f"recipe.data.label_field={quote(args.label_field)}")
    if args.label_map:
        data.append(f"recipe.label_map={args.label_map}")
    cfg = compose(rewrite_trainer_overrides([*shared, *data]))
    check(cfg)
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    train = recipe.load_split("train") or []
    test = recipe.load_split("test") if args.test else None
    return train, test or [], list(recipe.labels), "label_map" in cfg.recipe


def draw_subsets(args: argparse.Namespace, pool: list, held_out: list) -> tuple[list, list]:
    rng = random.Random(args.seed)
    if held_out:
        test, _ = stratified_sample(held_out, args.test_size, rng)
        train, _ = stratified_sample(pool, args.train_size, rng)
    else:
        if args.test_size >= len(pool):
            raise FtkitError(
                f"--test-size {args.test_size} leaves nothing to train on: {args.train} holds {len(pool)} records",
                "give a smaller --test-size, or a separate --test file",
                where="--test-size",
            )
        test, rest = stratified_sample(pool, args.test_size, rng)
        train, _ = stratified_sample(rest, args.train_size, rng)
    for name, subset, wanted in (("train", train, args.train_size), ("test", test, args.test_size)):
        if len(subset) < wanted:
            print(f"benchmark: only {len(subset)} records for the {name} subset (asked for {wanted})", file=sys.stderr)
    return train, test


def write_subset(path: Path, records: list[dict[str, Any]], max_words: int | None) -> list[dict[str, str]]:
    rows = [
        {"text": " ".join(r["text"].split()[:max_words]) if max_words else r["text"], "label": r["label"]}
        for r in records
    ]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return rows


def tfidf_baseline(train: list[dict[str, str]], test: list[dict[str, str]], labels: list[str]) -> dict[str, Any]:
    """ftkit's own tfidf baseline (the one in every run's report), fitted on train, scored on test."""
    predictions = tfidf_labels(train, test, labels, seed=0)
    return classification_metrics([r["label"] for r in test], predictions, labels)


def results_row(name: str, model: str, train: int, test: int, metrics: dict, baseline: dict) -> str:
    def pair(scores: dict[str, Any] | None) -> list[str]:
        return [f"{scores['accuracy']:.3f}", f"{scores['macro_f1']:.3f}"] if scores else ["n/a", "n/a"]

    minutes = f"{metrics['train']['train_minutes']:.1f}"
    cells = [name, model, str(train), str(test), minutes, *pair(metrics["base"]), *pair(metrics["finetuned"])]
    return "| " + " | ".join([*cells, *pair(baseline)]) + " |"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.name or Path(args.train).stem
    shared = shared_overrides(args, Path(args.model_path).name if args.model_path else "")

    pool, held_out, labels, has_label_map = load_records(args, shared)
    train, test = draw_subsets(args, pool, held_out)
    work = args.work_dir or Path("outputs/benchmarks", name, time.strftime("%Y-%m-%d_%H-%M-%S"))
    work.mkdir(parents=True, exist_ok=True)
    train_rows = write_subset(work / "train.jsonl", train, args.max_words)
    test_rows = write_subset(work / "test.jsonl", test, args.max_words)
    print(f"benchmark: {len(train_rows)} train / {len(test_rows)} test examples in {work}", flush=True)

    run_dir = work / "run"
    command = [
        sys.executable,
        "-m",
        "ftkit.cli",
        "train",
        *shared,
        *subset_overrides(work, has_label_map),
        "trainer.eval_strategy=no",
        "evaluate.max_examples=null",
        f"hydra.run.dir={quote(str(run_dir))}",
    ]
    print("benchmark: " + " ".join(command[2:]), flush=True)
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        print(f"benchmark: ftkit train failed (exit {finished.returncode}); see {run_dir}", file=sys.stderr)
        return finished.returncode

    metrics = json.loads((run_dir / "metrics.json").read_text())
    model_name = str(OmegaConf.load(run_dir / "config.yaml").model.name)
    baseline = tfidf_baseline(train_rows, test_rows, labels)
    row = results_row(name, model_name, len(train_rows), len(test_rows), metrics, baseline)
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    print(f"\n{header}\n{row}\n", flush=True)
    if args.results:
        new = not args.results.is_file() or not args.results.read_text().strip()
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as out:
            out.write((header + "\n" if new else "") + row + "\n")
        print(f"benchmark: row appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
