"""Config schema, composition and checks: everything here runs before torch or a model is imported.

The schema is a set of structured configs registered with Hydra's ConfigStore; the YAML tree in conf/ fills
them. `compose()` composes once with Hydra's compose API so that a bad key, type or value becomes an
FtkitError (exit 2, with the closest valid keys) instead of Hydra's exit 1; `check()` adds the rules that
span fields. Hydra's own run then composes the same overrides again for the real run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ftkit import trainer_fields
from ftkit.errors import FtkitError, closest
from ftkit.overrides import check_trainer_name

CONFIG_MODULE = "ftkit.conf"
PRIMARY = "train"


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in reports
    path: str = MISSING  # local HF folder, hub id, .gguf file, or pkg://<python package> holding gguf_file
    gguf_file: str | None = None  # GGUF file name inside `path` (folder, package or hub repo)
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    attn_implementation: str | None = None  # None lets transformers choose (sdpa where available)
    max_length: int = 512
    trust_remote_code: bool = False


@dataclass
class PeftConfig:
    method: str = "lora"  # lora | qlora (4-bit base + LoRA) | dora | none (full fine-tuning)
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # dropout on every LoRA input costs ~30% of a CPU training step
    target_modules: Any = "all-linear"  # "all-linear" or a list of module names
    # Adapt only the last N transformer layers (None: all). Backward then stops at the lowest adapted layer,
    # so training is cheaper; PEFT's layers_to_transform does the work.
    top_layers: int | None = None
    bias: str = "none"
    # LoRA+ (PEFT's create_loraplus_optimizer): the B matrices learn this many times faster than the A matrices
    # (None: one learning rate for both)
    loraplus_lr_ratio: float | None = None
    # QLoRA only: how bitsandbytes quantizes the frozen base weights
    quant_type: str = "nf4"  # nf4 | fp4
    double_quant: bool = True
    compute_dtype: str = "float32"  # float32 | bfloat16 | float16 (bfloat16 on GPUs that have it)


@dataclass
class LauncherConfig:
    """How `ftkit train` runs: in this process (local), under `accelerate launch`, or as a SLURM job."""

    name: str = "local"  # local | ddp | deepspeed_zero2[_offload] | deepspeed_zero3[_offload] | fsdp | slurm
    num_processes: int = 1  # processes per machine (per node under slurm): GPUs, or CPU ranks
    config_file: str | None = None  # accelerate config; None: launch/accelerate/<name or backend>.yaml
    main_process_port: int | None = None  # None: a free port
    # slurm only
    backend: str = "ddp"  # what runs on each node: ddp | deepspeed_zero2[_offload] | deepspeed_zero3[_offload] | fsdp
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None  # e.g. 64G
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    job_name: str = "ftkit"
    env_setup: list[str] = field(default_factory=list)  # shell lines run first, e.g. "source .venv/bin/activate"
    sbatch_extra: list[str] = field(default_factory=list)  # more #SBATCH options, e.g. "--qos=high"
    submit: bool = True  # false: only write the sbatch script into the run directory


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb | tensorboard (ftkit.tracking)
    project: str = "ftkit"  # wandb only, as the rest
    entity: str | None = None
    group: str | None = None  # None: the sweep directory under -m
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"  # auto | online | offline | disabled


@dataclass
class EvaluateConfig:
    base: bool = True  # also score the base model, for the before/after comparison
    batch_size: int = 16
    max_examples: int | None = None  # cap the test split (quick looks); None scores all of it
    validation: bool | None = None  # also score the validation split (a sweep's objective); None: only in sweeps


@dataclass
class EarlyStoppingConfig:
    """Stop when the recipe's primary metric on the validation split stops improving (checked at each evaluation).

    The best checkpoint is then loaded, evaluated on the test split and saved as the run's adapter.
    """

    patience: int | None = None  # evaluations without improvement before training stops; None: off
    threshold: float = 0.0  # the least improvement of the metric that counts as one


@dataclass
class DataChecksConfig:
    """What to do with training data that is suspect (checked before training; see ftkit.data_checks)."""

    duplicates: str = "refuse"  # identical training examples: refuse | drop (keep the first) | keep
    too_long: str = "refuse"  # training examples over model.max_length tokens: refuse | truncate | drop


@dataclass
class DataConfig:
    train: str = MISSING  # JSONL or CSV path, or bundled:<recipe>/<file>
    validation: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    max_train_examples: int | None = None


@dataclass
class ClassificationRecipeConfig:
    name: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    labels: list[str] = MISSING
    # None: no system turn (the chat template may insert its own default); "": an empty one (fewest tokens)
    system_prompt: str | None = None
    prompt_template: str = "{text}"
    # false: only labels that can win are scored to the end (same prediction, faster); true: all labels' scores
    score_all_labels: bool = False


@dataclass
class FtkitConfig:
    recipe: Any = MISSING  # typed by the recipe's own schema (see conf/recipe/*.yaml defaults)
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    trainer: dict[str, Any] = field(default_factory=dict)  # any TRL SFTConfig field, checked in check()
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    data_checks: DataChecksConfig = field(default_factory=DataChecksConfig)
    cache_preprocessing: bool = True  # reuse TRL's tokenized data across runs (ftkit.preprocess_cache)
    # false: a new run | true: continue the latest unfinished run of this config | <checkpoint or run directory>
    resume: Any = False
    dry_run: bool = False  # print config, launch command, data statistics, parameters and memory; then stop


def register_schemas() -> None:
    if not OmegaConf.has_resolver("ftkit_groups"):
        OmegaConf.register_new_resolver("ftkit_groups", config_groups_help)
    if not OmegaConf.has_resolver("ftkit_log_file"):
        from ftkit.launcher import log_file_name

        OmegaConf.register_new_resolver("ftkit_log_file", log_file_name)
    store = ConfigStore.instance()
    store.store(name="ftkit_schema", node=FtkitConfig)
    store.store(group="schema/recipe", name="classification", node=ClassificationRecipeConfig)
    # A recipe with fields of its own declares SCHEMA in its module; its yaml then starts from
    # /schema/recipe/<name>. Recipe modules import nothing heavy, so this keeps composing fast.
    from ftkit.recipes import schemas

    for name, node in schemas().items():
        store.store(group="schema/recipe", name=name, node=node)


# The options the installed Hydra plugins register (they are not files in conf/).
HYDRA_PLUGIN_OPTIONS = {"hydra/sweeper": ["basic", "optuna"], "hydra/launcher": ["basic", "joblib", "submitit_slurm"]}


def config_groups_help() -> str:
    """The groups of conf/ and their options, for `ftkit train --help` (Hydra's list shows schemas too)."""
    from importlib import resources

    root = resources.files(CONFIG_MODULE)
    lines = []
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_") and p.name != "hydra"]
    folders += [f"hydra/{p.name}" for p in root.joinpath("hydra").iterdir() if p.is_dir()]
    for group in sorted(folders):
        options = sorted(p.name[: -len(".yaml")] for p in root.joinpath(group).iterdir() if p.name.endswith(".yaml"))
        options += HYDRA_PLUGIN_OPTIONS.get(group, [])  # beside ftkit's presets in conf/hydra/<group>
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/train.yaml with overrides through Hydra's compose API; user mistakes -> FtkitError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name=PRIMARY, overrides=overrides)
    except MissingConfigException as error:
        raise _missing_option_error(error) from None
    except ConfigCompositionException as error:
        raise _composition_error(error, overrides) from None
    finally:
        GlobalHydra.instance().clear()


def _missing_option_error(error: Exception) -> FtkitError:
    options = getattr(error, "options", None) or []
    missing = getattr(error, "missing_cfg_file", "") or ""
    group, _, option = missing.rpartition("/")
    if group:
        return FtkitError(
            f"there is no {group} called {option!r}",
            f"pick one of: {', '.join(options)} (e.g. {group}={options[0] if options else '<name>'})",
            where=f"{group}={option}",
        )
    return FtkitError(str(error).splitlines()[0], "check the option names with `ftkit train --help`")


def _composition_error(error: Exception, overrides: list[str]) -> FtkitError:
    from omegaconf.errors import ConfigKeyError, ValidationError

    cause = error.__cause__ or error
    full_key = getattr(cause, "full_key", None) or ""
    first_line = str(cause).splitlines()[0]
    if isinstance(cause, ConfigKeyError) or "not in struct" in str(cause) or " not in '" in str(cause):
        parent, _, name = full_key.rpartition(".")
        candidates = _keys_under(parent, overrides)
        return FtkitError(
            f"unknown config key {full_key!r}",
            f"{closest(name, candidates)} (keys under {parent or 'the top level'}: {', '.join(candidates)})",
            where=full_key,
        )
    if isinstance(cause, ValidationError):
        return FtkitError(
            f"wrong type for {full_key}: {first_line}",
            f"give {full_key} a value of the type its schema declares (see `ftkit train --cfg job`)",
            where=full_key,
        )
    return FtkitError(first_line, "check the override against `ftkit train --cfg job`", where=full_key or None)


def _keys_under(parent: str, overrides: list[str]) -> list[str]:
    """The valid keys of a config node, composed with the user's group choices only."""
    choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and not o.startswith("+")]
    try:
        base = compose(choices)
    except FtkitError:
        base = compose([])
    node = OmegaConf.select(base, parent) if parent else base
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def check(cfg: DictConfig) -> None:
    """Cross-field rules, run before any data or model loads. Raises FtkitError on the first problem."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise FtkitError(
            f"required value {key} is not set (missing: {', '.join(missing)})",
            f"set it on the command line, e.g. {key}=<value>",
            where=key,
        )
    for name, value in cfg.trainer.items():
        check_trainer_name(str(name), where=f"trainer.{name}")
        plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        problem = trainer_fields.check_value(str(name), plain)
        if problem:
            raise FtkitError(
                f"trainer.{name} {problem}", f"pass a valid value, e.g. trainer.{name}=...", where=f"trainer.{name}"
            )
    _positive(cfg, "trainer.learning_rate", "trainer.learning_rate=2e-4")
    _positive(cfg, "trainer.per_device_train_batch_size", "trainer.per_device_train_batch_size=8")
    _positive(cfg, "trainer.per_device_eval_batch_size", "trainer.per_device_eval_batch_size=16")
    _positive(cfg, "trainer.gradient_accumulation_steps", "trainer.gradient_accumulation_steps=1")
    _positive(cfg, "peft.r", "peft.r=16")
    _positive(cfg, "peft.top_layers", "peft.top_layers=15")
    _positive(cfg, "peft.loraplus_lr_ratio", "peft.loraplus_lr_ratio=16")
    _positive(cfg, "model.max_length", "model.max_length=512")
    _positive(cfg, "evaluate.batch_size", "evaluate.batch_size=16")
    _positive(cfg, "evaluate.max_examples", "evaluate.max_examples=100 (or null for the whole test split)")
    _positive(cfg, "recipe.data.max_train_examples", "recipe.data.max_train_examples=500 (or null for all)")
    _choice(cfg, "model.dtype", ["auto", "float32", "bfloat16", "float16"])
    _choice(cfg, "peft.method", ["lora", "qlora", "dora", "none"])
    _choice(cfg, "peft.quant_type", ["nf4", "fp4"])
    _choice(cfg, "peft.compute_dtype", ["float32", "bfloat16", "float16"])
    from ftkit.tracking import LOGGERS, WANDB_MODES

    _choice(cfg, "logger.name", LOGGERS)
    _choice(cfg, "logger.mode", WANDB_MODES)
    _choice(cfg, "data_checks.duplicates", ["refuse", "drop", "keep"])
    _choice(cfg, "data_checks.too_long", ["refuse", "truncate", "drop"])
    _positive(cfg, "early_stopping.patience", "early_stopping.patience=3 (or null to train every epoch)")
    _check_padding_free(cfg)
    _check_early_stopping(cfg)
    if cfg.resume is not None and not isinstance(cfg.resume, (bool, str)) or cfg.resume == "":
        raise FtkitError(
            f"resume={cfg.resume!r} is neither true/false nor a directory",
            "use resume=true (the latest unfinished run of this config) or resume=<run or checkpoint directory>",
            where="resume",
        )
    if not 0 <= cfg.peft.dropout < 1:
        raise FtkitError(
            f"peft.dropout is {cfg.peft.dropout}, outside [0, 1)", "use e.g. peft.dropout=0.05", where="peft.dropout"
        )
    from ftkit.launcher import check_launcher
    from ftkit.peft_checks import check_peft
    from ftkit.recipes import get_recipe_class

    check_peft(cfg)
    check_launcher(cfg)
    get_recipe_class(cfg.recipe.name).check_config(cfg.recipe)


def _check_padding_free(cfg: DictConfig) -> None:
    """Padding-free batches (trainer.padding_free, or packing with a bfd strategy) flatten a batch into one row.

    Each example in it must attend only to itself: FlashAttention does so from the sequence boundaries; under sdpa
    and eager, transformers finds them from the restarting position_ids and builds a block-diagonal causal mask
    (masking_utils.find_packed_sequence_indices) when there is no attention mask and no KV cache, which is TRL's
    training path (no mask from its collator, no cache); sdpa runs each example's slice alone (packed_attention.py).
    tests/test_padding_free.py: each example's loss in a packed row equals its loss alone within 1e-4. Without it the
    examples attend to each other (logits ~20 apart): only FlashAttention then; other kernels are not verified.
    """
    trainer = cfg.trainer
    padding_free = bool(trainer.get("padding_free", False))
    packing = bool(trainer.get("packing", False))
    packing_bfd = packing and trainer.get("packing_strategy", "bfd") in ("bfd", "bfd_split")
    if not (padding_free or packing_bfd):
        return
    where = "trainer.padding_free" if padding_free else "trainer.packing"
    setting = f"{where}=true" + ("" if padding_free else " (bfd)")
    attention = cfg.model.attn_implementation
    kept_apart = ["flash"] + (["sdpa", "eager"] if _transformers_finds_packed_sequences() else [])
    # None lets transformers choose: sdpa, or eager for a model without sdpa support.
    if not ((attention is None and "sdpa" in kept_apart) or any(name in str(attention) for name in kept_apart)):
        raise FtkitError(
            f"{setting} flattens each batch into one row; that its examples stay apart (do not attend to each other) "
            f"is verified under {', '.join(kept_apart)} attention with this transformers, not {attention}",
            f"set model.attn_implementation={'sdpa' if 'sdpa' in kept_apart else 'flash_attention_2'}, or turn "
            "it off: trainer.padding_free=false trainer.packing=false",
            where=where,
        )
    if padding_free and not packing and cfg.data_checks.too_long == "truncate":
        raise FtkitError(
            "trainer.padding_free=true without packing does not truncate (TRL refuses max_length there), so "
            "data_checks.too_long=truncate would train on examples longer than model.max_length",
            "set data_checks.too_long=refuse or =drop, or raise model.max_length, or pack: trainer.packing=true",
            where="data_checks.too_long",
        )


def _transformers_finds_packed_sequences() -> bool:
    """Whether the installed transformers masks packed sequences apart under sdpa/eager (without importing it)."""
    from importlib.util import find_spec

    spec = find_spec("transformers")  # a top-level spec: transformers itself (and torch) stay unimported
    source = Path(next(iter(spec.submodule_search_locations or [""])) if spec else "", "masking_utils.py")
    return source.is_file() and "def find_packed_sequence_indices(" in source.read_text()


def _check_early_stopping(cfg: DictConfig) -> None:
    """Early stopping compares evaluations and keeps the best checkpoint: both must happen, at the same points."""
    if not cfg.early_stopping.patience:
        return
    evaluation, saving = cfg.trainer.get("eval_strategy", "no"), cfg.trainer.get("save_strategy", "steps")
    if evaluation == "no":
        raise FtkitError(
            "early_stopping.patience is set, but trainer.eval_strategy=no never evaluates, so nothing could stall",
            "set trainer.eval_strategy=epoch (or steps with trainer.eval_steps=N) and a validation split",
            where="early_stopping.patience",
        )
    if saving not in (evaluation, "best"):
        raise FtkitError(
            f"early stopping keeps the best evaluated checkpoint, but trainer.save_strategy={saving} does not save "
            f"where trainer.eval_strategy={evaluation} evaluates",
            f"set trainer.save_strategy={evaluation} (and, for steps, trainer.save_steps a multiple of eval_steps)",
            where="trainer.save_strategy",
        )


def _positive(cfg: DictConfig, key: str, example: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise FtkitError(f"{key} must be a positive number, got {value!r}", f"use e.g. {example}", where=key)


def _choice(cfg: DictConfig, key: str, choices: list[str]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise FtkitError(
            f"{key}={value!r} is not supported",
            f"use one of {', '.join(choices)}; {closest(str(value), choices)}",
            where=key,
        )
