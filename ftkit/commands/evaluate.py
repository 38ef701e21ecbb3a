"""`ftkit eval` (a recipe's metrics on a test file) and `ftkit predict` (JSONL predictions), without training.

Both start from the same config as `ftkit train`. Given `run=<run directory>`, they first replay that run's
command-line overrides (its overrides.yaml), so the recipe, labels, prompt and base model are the ones the adapter
was trained with, then apply the new ones (e.g. `recipe.data.test=other.jsonl`), and load the run's adapter on
top of the base model (in 4 bits for a peft=qlora run, as it trained), or the whole fine-tuned model a peft=none
run saved in <run>/model. Without `run=` they use the base model alone.

A run whose recipe split one file (recipe.data.split, or a fold of `ftkit cv`) is scored on that same test split:
ftkit.data.splits.read_splits makes it again and compares it with the run's splits.json, refusing (exit 2) when
the data file changed since the run or the overrides ask for another split.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from ftkit.config.compose import run_config
from ftkit.config.overrides import parse_command_options
from ftkit.data.splits import describe_split, read_splits
from ftkit.errors import FtkitError
from ftkit.run_dir import EVAL_PREDICTIONS, METRICS, RunDir

log = logging.getLogger("ftkit")

# What `ftkit eval --help` and `ftkit predict --help` print (ftkit/cli.py asks each command's module for its USAGE).
USAGE = {
    "eval": f"""usage: ftkit eval [run=<run dir>] [out=<dir>] [key=value ...]

Scores a finished run's model on the recipe's test split with the recipe's metrics: its adapter on the base model
(in 4 bits for a peft=qlora run), or the whole model a peft=none run saved; without run=, the base model alone.
The run's own overrides are replayed first, so the recipe, labels, prompt and base model are the ones it trained
with; the overrides given here come after them. Writes {METRICS} and {EVAL_PREDICTIONS}, and prints the metrics.

options:
  run=<run dir>   a finished `ftkit train` run directory (default: none, score the base model)
  out=<dir>       a new or empty folder for the results (default: a new time-stamped folder in the run
                  directory, or outputs/eval/<recipe>/<time> without run=)
  key=value       any config override, as for ftkit train (ftkit train --help), e.g. recipe.data.test=<file>

examples:
  ftkit eval run=outputs/tickets/2026-11-22/10-00-00
  ftkit eval run=outputs/tickets/2026-11-22/10-00-00 recipe.data.test=more_tickets.jsonl out=eval/more
  ftkit eval recipe=sentiment evaluate.max_examples=100      # the base model alone
""",
    "predict": """usage: ftkit predict [run=<run dir>] [input=<file>|-] [output=<file>|-] [key=value ...]

Predicts, for each JSON object (one per line) of the input, the recipe's answer with a finished run's model, or
with the base model alone without run=, and writes one JSON line per record: {"input": <the record>,
"prediction": <the answer>}. The run's own overrides are replayed first, so the recipe, labels and prompt are the
ones it trained with.

options:
  run=<run dir>     a finished `ftkit train` run directory (default: none, the base model)
  input=<file>|-    JSONL records with the recipe's input fields (default: -, standard input)
  output=<file>|-   where the predictions go (default: -, standard output)
  key=value         any config override, as for ftkit train, e.g. evaluate.batch_size=32

examples:
  echo '{"text": "pump P-3 seal leaking"}' | ftkit predict run=outputs/tickets/2026-11-22/10-00-00
  ftkit predict run=outputs/tickets/2026-11-22/10-00-00 input=tickets.jsonl output=answers.jsonl
""",
}


def eval_command(args: list[str]) -> None:
    """ftkit eval [run=<run dir>] [out=<dir>] [overrides]"""
    options, overrides = parse_command_options("eval", args, {"run": None, "out": None})
    if options["out"]:
        check_out_dir(Path(options["out"]).expanduser())  # before the run is read or a model loads
    run = RunDir.finished(options["run"], where="run", command="ftkit eval") if options["run"] else None
    cfg = run_config(run, overrides)
    eval_main(cfg, run, options["out"])


def predict_command(args: list[str]) -> None:
    """ftkit predict [run=<run dir>] [input=<file>|-] [output=<file>|-] [overrides]"""
    options, overrides = parse_command_options("predict", args, {"run": None, "input": "-", "output": "-"})
    check_output(options["output"])  # before the run is read, the input consumed or a model loads
    run = RunDir.finished(options["run"], where="run", command="ftkit predict") if options["run"] else None
    cfg = run_config(run, overrides)
    count = predict_main(cfg, run, options["input"], options["output"])
    log.info("wrote %d predictions to %s", count, options["output"])


def eval_main(cfg: DictConfig, run: RunDir | None, out_dir: str | None) -> Path:
    """`ftkit eval`: score the test split; write metrics.json, predictions.jsonl and a summary to out_dir."""
    from ftkit.recipes import get_recipe_class
    from ftkit.reporting.run_report import uncertainty_of
    from ftkit.tasks.evaluation import evaluate
    from ftkit.training.models import load_trained

    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    # A run's split of one file is made again and compared with its record: the test split it was scored on.
    recorded = (run.saved_splits(), run.splits_file) if run else (None, None)
    splits = read_splits(recipe, *recorded, compare=("test",))
    records = splits.records["test"]
    data = cfg.recipe.get("data")
    if records is None:
        raise FtkitError("no test split is set, so there is nothing to evaluate", "set recipe.data.test=<file>")
    records = records[: cfg.evaluate.max_examples] if cfg.evaluate.max_examples else records
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    default = run.evaluations_dir / stamp if run else Path("outputs") / "eval" / cfg.recipe.name / stamp
    target = Path(out_dir).expanduser() if out_dir else default
    check_out_dir(target)

    model, tokenizer = load_trained(cfg, run)
    weights = run.trained_weights() if run else None
    which = "fine-tuned" if run else "base"
    result = evaluate(recipe, model, tokenizer, records, cfg.evaluate.batch_size, which)
    summary = {
        "model": cfg.model.name,
        "adapter": str(weights) if run and weights == run.adapter_dir else None,
        "finetuned_model": str(weights) if run and weights == run.model_dir else None,  # peft=none runs
        "test": data.get("test") or describe_split(data) if data is not None else None,  # None: multitask
        "test_sha256": splits.record["splits"]["test"]["sha256"] if splits.record else None,  # the split's records
        "primary_metric": recipe.primary_metric,
        "metrics": result["metrics"],
        "seconds": result["seconds"],
        # 95% bootstrap intervals (evaluate.bootstrap_samples, seeded as training is: trainer.seed, else TRL's 42)
        "uncertainty": uncertainty_of(
            recipe,
            records,
            {"finetuned" if run else "base": result},
            cfg.evaluate.bootstrap_samples,
            cfg.trainer.get("seed", 42),
        ),
    }
    target.mkdir(parents=True, exist_ok=True)  # made only now: a failed load leaves no empty folder behind
    with _new_file(target / METRICS, "out") as out:
        out.write(json.dumps(summary, indent=2) + "\n")
    with _new_file(target / EVAL_PREDICTIONS, "out") as out:
        for prediction in result["predictions"]:
            out.write(json.dumps(prediction) + "\n")
    headline = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    print("\n| metric | " + which + " |\n| --- | --- |")
    for name, value in headline.items():
        print(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    print(f"Evaluation written to {target}\n", flush=True)
    return target


def predict_main(cfg: DictConfig, run: RunDir | None, source: str, destination: str) -> int:
    """`ftkit predict`: JSONL records in (file or '-' for stdin), one JSON prediction per line out."""
    from ftkit.recipes import get_recipe_class
    from ftkit.training.models import load_trained

    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    inputs = _read_inputs(recipe, source)
    model, tokenizer = load_trained(cfg, run)
    predictions = recipe.predict(model, tokenizer, [record for _, record in inputs], cfg.evaluate.batch_size)
    out: TextIO = sys.stdout if destination == "-" else _new_file(Path(destination).expanduser(), "output")
    try:
        for (raw, _), prediction in zip(inputs, predictions, strict=True):
            out.write(json.dumps({"input": raw, "prediction": prediction}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return len(predictions)


def check_out_dir(target: Path) -> None:
    """eval writes its results into a new or empty folder, outside any run directory but under a run's eval/."""
    if target.exists() and not target.is_dir():
        raise FtkitError(
            f"{target} is a file, and ftkit eval writes a folder of results",
            "give out=<a new folder>, or drop out= for a new time-stamped one",
            where="out",
        )
    if target.is_dir() and any(target.iterdir()):
        raise FtkitError(
            f"{target} exists and is not empty, and ftkit eval writes nothing over what is there",
            "give out=<a new or empty folder>, or drop out= for a new time-stamped one",
            where="out",
        )
    resolved = target.resolve()
    above = next(folder for folder in resolved.parents if folder.exists())  # the root always exists
    if not above.is_dir():
        raise FtkitError(
            f"{above} is a file, so the folder {target} cannot be made under it",
            "give out=<a new folder> whose parents are folders",
            where="out",
        )
    run = RunDir.containing(resolved)
    if run is not None and run.evaluations_dir not in resolved.parents:
        raise FtkitError(
            f"{target} is inside the run directory {run.path}, where ftkit eval writes only under "
            f"{run.evaluations_dir.name}/",
            f"give out=<a folder outside the run>, or out={run.evaluations_dir}/<name>, or drop out= for a new "
            "time-stamped folder there",
            where="out",
        )


def check_output(destination: str) -> None:
    """predict writes a new file in a folder that exists, outside any run directory; or standard output ('-')."""
    if destination == "-":
        return
    if not destination:
        raise FtkitError(
            "output= is empty", "give output=<a new file>, or output=- for standard output", where="output"
        )
    file = Path(destination).expanduser()
    if file.exists() or file.is_symlink():
        raise FtkitError(
            f"{file} already exists, and ftkit predict does not write over it",
            "give output=<a new file>, or output=- for standard output (redirect that with > to replace a file on "
            "purpose)",
            where="output",
        )
    if not file.parent.is_dir():
        missing = not file.parent.exists()
        raise FtkitError(
            f"the folder {file.parent} that output={destination} goes into "
            + ("does not exist" if missing else "is a file"),
            (f"create it first (mkdir -p {file.parent}), or give " if missing else "give ")
            + "output=<a new file in an existing folder>, or output=- for standard output",
            where="output",
        )
    run = RunDir.containing(file.parent)
    if run is not None:
        raise FtkitError(
            f"{file} is inside the run directory {run.path}, and ftkit predict writes nothing into a run",
            "give output=<a new file outside the run directory>, or output=- for standard output",
            where="output",
        )


def _new_file(file: Path, where: str) -> TextIO:
    """file opened for writing only if it does not exist yet: what another process wrote meanwhile is kept."""
    try:
        return file.open("x", encoding="utf-8")
    except FileExistsError:
        raise FtkitError(
            f"{file} appeared while ftkit was working, and it does not write over it",
            f"run the command again with {where}=<a new path>",
            where=where,
        ) from None


def _read_inputs(recipe: Any, source: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(raw object, recipe input record) per non-empty JSONL line of source."""
    stream: TextIO = sys.stdin if source == "-" else _open_input(source)
    name = "<stdin>" if source == "-" else source
    inputs = []
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{name}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise FtkitError(
                    f"not valid JSON ({error.msg})", "give one JSON object per line", where=where
                ) from None
            if not isinstance(raw, dict):
                raise FtkitError("a line is not a JSON object", "give one JSON object per line", where=where)
            inputs.append((raw, recipe.input_record(raw, where)))
    if not inputs:
        raise FtkitError(f"{name} has no records", "give one JSON object per line", where="input")
    return inputs


def _open_input(path: str) -> TextIO:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FtkitError(f"no input file {file}", "pass input=<JSONL file>, or input=- to read stdin", where="input")
    return file.open(encoding="utf-8")
