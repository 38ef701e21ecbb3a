"""NER benchmark: fine-tune with `ftkit train recipe=ner` on a CoNLL data set and report base vs fine-tuned scores.

Takes a folder of CoNLL/BIO files (token<TAB>tag or token tag, a blank line between sentences) whose names start
with train, dev/devel/valid/validation and test, or the three files given one by one. Seeded subsets of each split
are written to the output folder, then the real CLI trains SmolLM2-135M (the default model) with the entity types
found in the full files, and one Markdown row is printed and appended to the results file: data set,
training sentences, training minutes, and entity-level micro precision / recall / F1 of the base and the
fine-tuned model (seqeval, exact match), with the share of unparseable answers.

    python benchmarks/ner.py ../shared/datasets/ncbi_disease_ner/NCBI-disease-IOB --train-examples 1500
    python benchmarks/ner.py ../shared/datasets/mwo2kg_maintenance_ner/bio --train-examples 1300
    python benchmarks/ner.py DATA --model-path /path/to/hf-folder --train-examples 16 ...   # a quick check

Sizes: an NCBI-disease example is ~75 tokens with the prompt and a maintenance one ~86 (its prompt lists 12 types),
so 1500 and 1300 sentences are ~110k training tokens each: 11-19 minutes at the 100-170 tokens/s SmolLM2-135M
trains at on two CPU cores. Evaluation (generation, base and fine-tuned, 400 test sentences) comes on top.
Anything after `--` is passed to `ftkit train` as extra overrides (e.g. -- trainer.num_train_epochs=2).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ftkit.tasks.bio import Sentence, read_conll

SPLIT_PREFIXES = {
    "train": ("train",),
    "validation": ("validation", "valid", "devel", "dev"),
    "test": ("test",),
}
DATA_SUFFIXES = (".tsv", ".txt", ".conll", ".bio", ".iob", ".iob2")
HEADER = (
    "| data set | model | train sentences | test sentences | training minutes | base P | base R | base F1 "
    "| fine-tuned P | fine-tuned R | fine-tuned F1 | unparseable (base / fine-tuned) | date |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def find_splits(folder: Path) -> dict[str, Path]:
    """train / validation / test files in a folder, by the start of their names."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    found: dict[str, Path] = {}
    for split, prefixes in SPLIT_PREFIXES.items():
        matches = [p for p in files if p.stem.lower().startswith(prefixes)]
        if len(matches) > 1:
            sys.exit(f"error: several {split} files in {folder}: {', '.join(p.name for p in matches)}; use --{split}")
        if matches:
            found[split] = matches[0]
    return found


def dataset_name(path: Path) -> str:
    """The folder that documents the data set (holds SOURCE.txt), else the data folder's name."""
    for folder in (path, *path.parents[:2]):
        if (folder / "SOURCE.txt").is_file():
            return folder.name
    return path.name


def subset(sentences: list[Sentence], size: int | None, seed: int) -> list[Sentence]:
    """A seeded random sample of `size` sentences, in their original order (all of them when size is None)."""
    if size is None or size >= len(sentences):
        return sentences
    keep = sorted(random.Random(seed).sample(range(len(sentences)), size))
    return [sentences[i] for i in keep]


def write_conll(sentences: list[Sentence], path: Path) -> None:
    blocks = ["\n".join(f"{t}\t{g}" for t, g in zip(s.tokens, s.tags, strict=True)) for s in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def score_cells(metrics: dict | None) -> list[str]:
    if not metrics:
        return ["-", "-", "-"]
    return [f"{metrics[k]:.3f}" for k in ("micro_precision", "micro_recall", "micro_f1")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="extra ftkit overrides: -- k=v ...")
    parser.add_argument("data", type=Path, help="folder with train*/dev*/test* CoNLL files")
    parser.add_argument("--train", type=Path, help="training file (default: found in the folder)")
    parser.add_argument("--validation", type=Path, help="validation file (default: found in the folder)")
    parser.add_argument("--test", type=Path, help="test file (default: found in the folder)")
    parser.add_argument("--train-examples", type=int, help="seeded sample of training sentences (default: all)")
    parser.add_argument("--validation-examples", type=int, default=200, help="validation loss on this many")
    parser.add_argument("--test-examples", type=int, default=400, help="seeded test sample (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--model-path", help="a Hugging Face model folder instead of the default SmolLM2-135M")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: longest train answer + 8)")
    parser.add_argument("--name", help="data set name in the results row (default: the folder with SOURCE.txt)")
    parser.add_argument("--out", type=Path, help="work folder (default: outputs/benchmarks/ner/<name>/<time>)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/ner_results.md"), help="table to append to")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    found = find_splits(args.data) if args.data.is_dir() else {}
    paths = {split: getattr(args, split) or found.get(split) for split in SPLIT_PREFIXES}
    missing = [split for split in ("train", "test") if paths[split] is None]
    if missing:
        sys.exit(f"error: no {' or '.join(missing)} file in {args.data}; give it with --{missing[0]}")
    name = args.name or dataset_name(args.data if args.data.is_dir() else args.data.parent)
    out = args.out or Path("outputs/benchmarks/ner") / name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)

    sizes = {"train": args.train_examples, "validation": args.validation_examples, "test": args.test_examples or None}
    overrides = ["recipe=ner", f"hydra.run.dir={(out / 'run').resolve()}"]
    counts, types = {}, set()
    for split, path in paths.items():
        if path is None:
            overrides.append(f"recipe.data.{split}=null")
            continue
        everything = read_conll(path)
        # The types of every full split: a rare type can be missing from a sample, and the recipe refuses types
        # outside its set.
        types |= {tag[2:] for sentence in everything for tag in sentence.tags if tag != "O"}
        sentences = subset(everything, sizes[split], args.seed)
        counts[split] = len(sentences)
        write_conll(sentences, out / f"{split}.conll")
        overrides.append(f"recipe.data.{split}={(out / f'{split}.conll').resolve()}")
    overrides.append("recipe.entity_types=[" + ",".join(repr(t) for t in sorted(types)) + "]")
    if paths["validation"] is None:
        overrides.append("trainer.eval_strategy=no")
    # NCBI sentences run to ~240 tokens with the prompt; examples of similar length batched together pad less.
    overrides += ["model.max_length=512", "trainer.train_sampling_strategy=group_by_length"]
    model = "smollm2-135m-instruct"
    if args.model_path:
        model = Path(args.model_path).name
        overrides += [f"model.path={Path(args.model_path).resolve()}", "model.gguf_file=null", f"model.name={model}"]
    if args.max_new_tokens:
        overrides.append(f"recipe.max_new_tokens={args.max_new_tokens}")
    overrides += extra

    command = [str(Path(sys.executable).with_name("ftkit")), "train", *overrides]
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    with (out / "ftkit.log").open("w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(f"ftkit train failed (exit {result.returncode}); see {out / 'ftkit.log'}", file=sys.stderr)
        return result.returncode
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    base, tuned = metrics["base"], metrics["finetuned"]
    unparseable = " / ".join(f"{m['unparseable_rate']:.0%}" if m else "-" for m in (base, tuned))
    row = (
        f"| {name} | {model} | {counts['train']} | {counts['test']} | {metrics['train']['train_minutes']:.1f} | "
        + " | ".join(score_cells(base) + score_cells(tuned))
        + f" | {unparseable} | {datetime.now():%Y-%m-%d} |\n"
    )
    new = not args.results.is_file()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as table:
        table.write((HEADER if new else "") + row)
    print(f"\n{HEADER}{row}")
    minutes = (time.perf_counter() - started) / 60
    print(f"Whole run {minutes:.1f} min; run directory {out / 'run'}; row added to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
