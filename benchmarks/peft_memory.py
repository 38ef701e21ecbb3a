"""Memory benchmark of the PEFT variants: a short `ftkit train` per method, one process each, and a table.

Each method (default: lora and qlora) trains the same short run on the default SmolLM2-135M model in a process of
its own, so each peak RSS is that method's alone; the numbers come from the run's metrics.json. Prints markdown:

  | method | weights MB | peak RSS MB | trainable parameters | tokens/s |

weights MB is `model.get_memory_footprint()` of the trained model (4-bit weights counted packed, adapter included);
peak RSS is the training process's maximum resident memory up to the end of training.

Examples (from the repository root):

  .venv/bin/python benchmarks/peft_memory.py
  .venv/bin/python benchmarks/peft_memory.py --methods lora,qlora,dora,none --results benchmarks/peft_memory.md
  .venv/bin/python benchmarks/peft_memory.py --max-steps 50 peft.r=8     # extra ftkit overrides go last

--model-path swaps the base model for an HF folder (the tests use a tiny random Llama). A failed run passes its exit
code on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ["lora", "qlora", "dora", "none"]
COLUMNS = ["method", "weights MB", "peak RSS MB", "trainable parameters", "tokens/s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,qlora", help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--max-steps", type=int, default=20, help="training steps per method")
    parser.add_argument("--train-examples", type=int, default=40)
    parser.add_argument("--test-examples", type=int, default=20)
    parser.add_argument("--model-path", help="an HF model folder instead of the default SmolLM2-135M")
    parser.add_argument("--work-dir", type=Path, help="default: outputs/benchmarks/peft_memory/<time>")
    parser.add_argument("--results", type=Path, help="append the table to this markdown file")
    parser.add_argument("overrides", nargs="*", help="ftkit overrides for every run, e.g. peft.r=8")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; pick from {', '.join(METHODS)}")
    return args


def train_command(args: argparse.Namespace, method: str, run_dir: Path) -> list[str]:
    model = (
        [f"model.path={args.model_path}", "model.gguf_file=null", f"model.name={Path(args.model_path).name}"]
        if args.model_path
        else []
    )
    return [
        sys.executable,
        "-m",
        "ftkit.cli",
        "train",
        f"peft={method}",
        *model,
        f"trainer.max_steps={args.max_steps}",
        # Only training is measured: no validation passes or checkpoints inside it, no base-model scoring before.
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
        "evaluate.base=false",
        f"recipe.data.max_train_examples={args.train_examples}",
        f"evaluate.max_examples={args.test_examples}",
        *args.overrides,
        f"hydra.run.dir={run_dir}",
    ]


def row(method: str, train: dict) -> str:
    cells = [
        method,
        f"{train['weights_mb']:.1f}",
        f"{train['peak_rss_mb']:.0f}",
        f"{train['trainable_parameters']:,}",
        f"{train['tokens_per_second']:.1f}" if train.get("tokens_per_second") else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path("outputs/benchmarks/peft_memory", time.strftime("%Y-%m-%d_%H-%M-%S"))
    rows = []
    for method in args.methods:
        run_dir = work / method
        command = train_command(args, method, run_dir)
        print("benchmark: " + " ".join(command[2:]), flush=True)
        finished = subprocess.run(command, check=False)
        if finished.returncode != 0:
            print(
                f"benchmark: ftkit train failed for {method} (exit {finished.returncode}); see {run_dir}",
                file=sys.stderr,
            )
            return finished.returncode
        rows.append(row(method, json.loads((run_dir / "metrics.json").read_text())["train"]))
    table = "\n".join(["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *rows])
    print(f"\n{table}\n", flush=True)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as out:
            out.write(table + "\n\n")
        print(f"benchmark: table appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
