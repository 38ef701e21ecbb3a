"""The names and value kinds of TRL's SFTConfig fields, read without importing TRL.

`trainer.<field>=...` must reach every SFTConfig option and refuse a misspelt one, yet composing and checking a
config must not import torch or TRL (that costs seconds). So the field list is generated from the installed TRL
into `sftconfig_fields.json`, checked in, and a test fails when it drifts from the installed version.

Regenerate after upgrading TRL:  python -m ftkit.config.trainer_fields
"""

from __future__ import annotations

import enum
import json
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

FIELDS_FILE = Path(__file__).with_name("sftconfig_fields.json")

# SFTConfig fields that another config group owns: setting them under trainer would be silently overwritten.
OWNED_ELSEWHERE = {
    "output_dir": "ftkit writes checkpoints into the run directory; choose it with hydra.run.dir=<dir>",
    "report_to": "choose the logger group instead, e.g. logger=none",
    "max_length": "set model.max_length instead",
    "model_init_kwargs": "set model.dtype / model.attn_implementation instead",
    "completion_only_loss": "ftkit always trains on the completion only for recipes with a target",
    "use_cpu": "ftkit trains on the CPU exactly when no CUDA GPU is present (hide GPUs with CUDA_VISIBLE_DEVICES=)",
    "deepspeed": "choose a DeepSpeed launcher instead, e.g. launcher=deepspeed_zero2 launcher.num_processes=2",
    "fsdp": "choose launcher=fsdp instead (its settings: ftkit/launch/configs/accelerate/fsdp.yaml or "
    "launcher.config_file=)",
    "fsdp_config": "choose launcher=fsdp instead (its settings: ftkit/launch/configs/accelerate/fsdp.yaml or "
    "launcher.config_file=)",
}


# The range of numeric SFTConfig fields (the type alone accepts -3 epochs): what each must be, and the test.
# (learning rate, batch sizes and accumulation steps are checked as positive in ftkit.config.checks.)
RANGES: dict[str, tuple[str, Any]] = {
    "num_train_epochs": ("> 0", lambda v: v > 0),
    "max_steps": ("-1 (no limit) or > 0", lambda v: v == -1 or v > 0),
    "eval_accumulation_steps": (">= 1", lambda v: v >= 1),
    "warmup_steps": (">= 0 (below 1: a fraction of the steps)", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "adam_beta1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_epsilon": ("> 0", lambda v: v > 0),
    "max_grad_norm": (">= 0 (0: no clipping)", lambda v: v >= 0),
    "label_smoothing_factor": ("in [0, 1)", lambda v: 0 <= v < 1),
    "neftune_noise_alpha": (">= 0", lambda v: v >= 0),
    "logging_steps": ("> 0", lambda v: v > 0),
    "eval_steps": ("> 0", lambda v: v > 0),
    "save_steps": ("> 0", lambda v: v > 0),
    "eval_delay": (">= 0", lambda v: v >= 0),
    "save_total_limit": (">= 1", lambda v: v >= 1),
    "seed": (">= 0", lambda v: v >= 0),
    "data_seed": (">= 0", lambda v: v >= 0),
    "dataloader_num_workers": (">= 0", lambda v: v >= 0),
    "dataloader_prefetch_factor": (">= 1", lambda v: v >= 1),
    "dataset_num_proc": (">= 1", lambda v: v >= 1),
    "ddp_timeout": ("> 0 (seconds)", lambda v: v > 0),
    "torch_empty_cache_steps": (">= 1", lambda v: v >= 1),
}


# SFTConfig fields that TRL's DPOConfig lacks: refused for recipe=preference (DPO); tests/test_preference.py checks the
# list against the installed TRL.
SFT_ONLY = (
    "assistant_only_loss",
    "chat_template_path",
    "completion_only_loss",
    "dataset_kwargs",
    "dataset_text_field",
    "eos_token",
    "eval_packing",
    "packing",
    "packing_strategy",
    "shuffle_dataset",
)


# Fields transformers 5 renamed (the old name warns on every run and goes in v6): trainer.<old name> still works, and
# is passed on under the new name where the installed version has it.
RENAMED = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def current_names(settings: dict[str, Any]) -> dict[str, Any]:
    """trainer.* settings with each old name of RENAMED under its new name, where the installed TRL has the new one.

    ftkit.config.checks refuses a setting given under both names, so nothing is overwritten here.
    """
    renamed = dict(settings)
    for old in RENAMED:
        if old in renamed and current_name(old) != old:
            renamed[current_name(old)] = renamed.pop(old)
    return renamed


def current_name(name: str) -> str:
    """The name the installed TRL reads for SFTConfig field `name` (its new name where RENAMED has one)."""
    new = RENAMED.get(name)
    return new if new is not None and new in load() else name


def activation_checkpointing(trainer: Any) -> bool:
    """Whether trainer.* turns activation (gradient) checkpointing on, under either name."""
    return bool(trainer.get("activation_checkpointing") or trainer.get("gradient_checkpointing"))


def _kinds(annotation: Any) -> tuple[list[str], list[Any] | None]:
    """Map a type annotation to JSON-ish kinds (bool/int/float/str/list/dict/null/any) and allowed choices."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds: list[str] = []
        choices: list[Any] | None = None
        for arg in typing.get_args(annotation):
            sub, sub_choices = _kinds(arg)
            kinds += [k for k in sub if k not in kinds]
            if sub_choices is not None:
                choices = (choices or []) + sub_choices
        # A Literal next to a plain str means "any string". An enum next to str does not: transformers converts
        # the string to the enum in __post_init__ (SchedulerType("nope") raises), so its values are the choices.
        args = typing.get_args(annotation)
        has_enum = any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args)
        if choices is not None and not has_enum and any(a is str for a in args if typing.get_origin(a) is None):
            choices = None
        return kinds, choices
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        return sorted({_kind_of_value(v) for v in values}), values
    if annotation is type(None):
        return ["null"], None
    if annotation is bool:
        return ["bool"], None
    if annotation is int:
        return ["int"], None
    if annotation is float:
        return ["float"], None
    if annotation is str:
        return ["str"], None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ["str"], [m.value for m in annotation]
    if annotation is list or origin is list:
        return ["list"], None
    if annotation is dict or origin is dict:
        return ["dict"], None
    return ["any"], None


def _kind_of_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def generate() -> dict[str, Any]:
    """Read SFTConfig's fields from the installed TRL (imports TRL: only for regeneration and the drift test)."""
    import dataclasses

    import trl
    from trl import SFTConfig

    hints = typing.get_type_hints(SFTConfig)
    fields = {}
    for f in dataclasses.fields(SFTConfig):
        if not f.init:
            continue
        kinds, choices = _kinds(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, enum.Enum):
            default = default.value
        entry: dict[str, Any] = {"kinds": kinds}
        if choices is not None:
            entry["choices"] = choices
        if _kind_of_value(default) in ("null", "bool", "int", "float", "str"):
            entry["default"] = default
        fields[f.name] = entry
    return {"trl_version": trl.__version__, "fields": fields}


@cache
def load() -> dict[str, dict[str, Any]]:
    return json.loads(FIELDS_FILE.read_text())["fields"]


def check_value(name: str, value: Any) -> str | None:
    """Return why `value` does not fit SFTConfig field `name`, or None when it fits."""
    spec = load()[name]
    kinds = spec["kinds"]
    kind = _kind_of_value(value)
    fits = (
        "any" in kinds
        or kind in kinds
        or (kind == "int" and "float" in kinds)  # 1 is a fine learning rate
        or (kind == "str" and value.lower() in ("true", "false") and "bool" in kinds)
    )
    if not fits:
        return f"expects {' or '.join(kinds)}, got {kind} {value!r}"
    choices = spec.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
    if kind in ("int", "float") and name in RANGES:
        said, fits_range = RANGES[name]
        if not fits_range(value):
            return f"must be {said}, got {value!r}"
    return None


def example(name: str, value: Any) -> str:
    """The fix for a value check_value refused: the nearest choice, or the field's default as an example."""
    spec = load()[name]
    if spec.get("choices"):
        from ftkit.errors import closest

        return f"{closest(str(value), [str(c) for c in spec['choices']])} (e.g. trainer.{name}={spec['choices'][0]})"
    if spec.get("default") is not None:
        return f"pass a valid value, e.g. trainer.{name}={spec['default']} (TRL's default)"
    return f"pass a valid value, or leave trainer.{name} out for TRL's default"


if __name__ == "__main__":
    FIELDS_FILE.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIELDS_FILE} ({len(load.__wrapped__())} fields)")
