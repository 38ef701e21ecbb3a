"""Evaluation without training: `ftkit eval` (a recipe's metrics on a test file) and `ftkit predict` (JSONL out).

Both start from the same config as `ftkit train`. Given `run=<run directory>`, they first replay that run's
command-line overrides (its overrides.yaml), so the recipe, labels, prompt and base model are the ones the adapter
was trained with, then apply the new ones (e.g. `recipe.data.test=other.jsonl`), and load the run's adapter on
top of the base model (in 4 bits for a peft=qlora run, as it trained), or the whole fine-tuned model a peft=none
run saved in <run>/model. Without `run=` they use the base model alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from omegaconf import DictConfig

from ftkit.errors import FtkitError

log = logging.getLogger("ftkit")


def run_overrides(run_dir: str | None) -> list[str]:
    """The overrides a run was trained with, so eval/predict compose the same config; [] without a run."""
    if run_dir is None:
        return []
    folder = Path(run_dir).expanduser()
    if trained_weights(folder) is None or not (folder / "overrides.yaml").is_file():
        raise FtkitError(
            f"{folder} is not an ftkit run directory (it has no adapter/adapter_config.json or model/config.json, "
            "and overrides.yaml)",
            "pass the directory `ftkit train` printed at the end (outputs/<recipe>/<date>/<time>), or leave run= "
            "out to use the base model",
            where="run",
        )
    saved = yaml.safe_load((folder / "overrides.yaml").read_text()) or []
    # The old run's own output location is not part of what the model is.
    return [o for o in saved if not o.startswith(("hydra.", "+hydra.", "++hydra."))]


def trained_weights(run_dir: Path) -> Path | None:
    """What a run saved: adapter/ (LoRA, QLoRA, DoRA) or model/ (peft=none, the whole model); None if neither."""
    if (run_dir / "adapter" / "adapter_config.json").is_file():
        return run_dir / "adapter"
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    return None


def load_for_eval(cfg: DictConfig, run_dir: str | None) -> tuple[Any, Any]:
    """The model a run produced (base + adapter, or its whole saved model) and its tokenizer; the base without run."""
    from omegaconf import OmegaConf

    from ftkit.models import load_model_and_tokenizer

    weights = trained_weights(Path(run_dir).expanduser()) if run_dir is not None else None
    if weights is not None and weights.name == "model":
        # peft=none saved every weight (and the tokenizer): load that folder in place of the base model.
        saved = OmegaConf.merge(cfg.model, {"path": str(weights), "gguf_file": None, "revision": None})
        return load_model_and_tokenizer(saved)
    # cfg.peft is the run's (its overrides were replayed): a qlora run's base loads in 4 bits, as it trained.
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.peft)
    if weights is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights))
        _adapter_dtype_as_saved(model, weights)
        model.eval()
    return model, tokenizer


def _adapter_dtype_as_saved(model: Any, folder: Path) -> None:
    """Give each adapter weight the dtype it trained and was saved in.

    TRL trains a QLoRA adapter in bfloat16, while PEFT loads adapters into parameters of the base's dtype (float32
    on CPU): computed in float32, the reloaded adapter scored up to ~5e-4 apart from the run's own evaluation.
    """
    from safetensors import safe_open

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        return
    with safe_open(str(file), "pt") as saved:
        dtypes = {key: saved.get_tensor(key).dtype for key in saved.keys()}  # noqa: SIM118 (not a dict)
    for name, param in model.named_parameters():
        dtype = dtypes.get(name.replace(".default", ""))  # PEFT names the adapter ("default") in parameter names
        if dtype is not None and param.dtype != dtype:
            param.data = param.data.to(dtype)


def evaluate(
    recipe: Any, model: Any, tokenizer: Any, records: list[dict[str, Any]], cfg: DictConfig, which: str
) -> dict[str, Any]:
    """The recipe's predictions and metrics on records, timed."""
    started = time.perf_counter()
    predictions = recipe.predict(model, tokenizer, records, cfg.evaluate.batch_size)
    seconds = time.perf_counter() - started
    metrics = recipe.score(predictions, records)
    log.info(
        "%s: %s=%.4f on %d examples (%.1f s)",
        which,
        recipe.primary_metric,
        metrics[recipe.primary_metric],
        len(records),
        seconds,
    )
    return {"metrics": metrics, "predictions": predictions, "seconds": seconds}


def eval_main(cfg: DictConfig, run_dir: str | None, out_dir: str | None) -> Path:
    """`ftkit eval`: score the test split; write metrics.json, predictions.jsonl and a summary to out_dir."""
    from ftkit.recipes import get_recipe_class

    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    records = recipe.load_split("test")
    if records is None:
        raise FtkitError("no test split is set, so there is nothing to evaluate", "set recipe.data.test=<file>")
    records = records[: cfg.evaluate.max_examples] if cfg.evaluate.max_examples else records
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    default = Path(run_dir) / "eval" / stamp if run_dir else Path("outputs") / "eval" / cfg.recipe.name / stamp
    target = Path(out_dir) if out_dir else default
    if target.exists() and any(target.iterdir()):
        raise FtkitError(f"{target} exists and is not empty", "pick a new out=<directory>", where="out")
    target.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_for_eval(cfg, run_dir)
    weights = trained_weights(Path(run_dir)) if run_dir else None
    which = "fine-tuned" if run_dir else "base"
    result = evaluate(recipe, model, tokenizer, records, cfg, which)
    summary = {
        "model": cfg.model.name,
        "adapter": str(weights) if weights and weights.name == "adapter" else None,
        "finetuned_model": str(weights) if weights and weights.name == "model" else None,  # peft=none runs
        "test": cfg.recipe.data.test,
        "primary_metric": recipe.primary_metric,
        "metrics": result["metrics"],
        "seconds": result["seconds"],
    }
    (target / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (target / "predictions.jsonl").open("w") as out:
        for prediction in result["predictions"]:
            out.write(json.dumps(prediction) + "\n")
    headline = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    print("\n| metric | " + which + " |\n| --- | --- |")
    for name, value in headline.items():
        print(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    print(f"Evaluation written to {target}\n", flush=True)
    return target


def predict_main(cfg: DictConfig, run_dir: str | None, source: str, destination: str) -> int:
    """`ftkit predict`: JSONL records in (file or '-' for stdin), one JSON prediction per line out."""
    from ftkit.recipes import get_recipe_class

    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    inputs = _read_inputs(recipe, source)
    model, tokenizer = load_for_eval(cfg, run_dir)
    predictions = recipe.predict(model, tokenizer, [record for _, record in inputs], cfg.evaluate.batch_size)
    out: TextIO = sys.stdout if destination == "-" else open(destination, "w")  # noqa: SIM115
    try:
        for (raw, _), prediction in zip(inputs, predictions, strict=True):
            out.write(json.dumps({"input": raw, "prediction": prediction}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return len(predictions)


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
