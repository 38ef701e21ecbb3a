"""Every rule that spans config fields, in one place, run before any data or model loads.

`check(cfg)` is the one entry point: it checks values and choices here, then asks the owners of the rules that need
their knowledge (ftkit.training.peft_checks, ftkit.launch.checks, the recipe's check_config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ftkit.config import trainer_fields
from ftkit.config.overrides import check_trainer_name
from ftkit.errors import FtkitError, closest


def check(cfg: DictConfig) -> None:
    """Cross-field rules, run before any data or model loads. Raises FtkitError on the first problem."""
    _check_resolves(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise FtkitError(
            f"required value {key} is not set (missing: {', '.join(missing)})",
            f"set it on the command line, e.g. {key}=<value>",
            where=key,
        )
    _check_finite(cfg)
    for name, value in cfg.trainer.items():
        check_trainer_name(str(name), where=f"trainer.{name}")
        plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        problem = trainer_fields.check_value(str(name), plain)
        if problem:
            raise FtkitError(
                f"trainer.{name} {problem}", trainer_fields.example(str(name), plain), where=f"trainer.{name}"
            )
    for old_name, new_name in trainer_fields.RENAMED.items():
        if cfg.trainer.get(old_name) is not None and cfg.trainer.get(new_name) is not None:
            raise FtkitError(
                f"trainer.{old_name} and trainer.{new_name} are one setting under two names (transformers renamed "
                f"it), and both are given",
                f"keep one: trainer.{new_name}=... (the current name)",
                where=f"trainer.{old_name}",
            )
    _positive(cfg, "trainer.learning_rate", "trainer.learning_rate=2e-4")
    _positive(cfg, "trainer.per_device_train_batch_size", "trainer.per_device_train_batch_size=8")
    _positive(cfg, "trainer.per_device_eval_batch_size", "trainer.per_device_eval_batch_size=16")
    _positive(cfg, "trainer.gradient_accumulation_steps", "trainer.gradient_accumulation_steps=1")
    _positive(cfg, "peft.r", "peft.r=16")
    _positive(cfg, "peft.alpha", "peft.alpha=32 (the update is scaled by alpha / r)")
    _positive(cfg, "peft.top_layers", "peft.top_layers=15")
    _positive(cfg, "peft.loraplus_lr_ratio", "peft.loraplus_lr_ratio=16")
    _positive(cfg, "model.max_length", "model.max_length=512")
    _positive(cfg, "evaluate.batch_size", "evaluate.batch_size=16")
    _positive(cfg, "evaluate.max_examples", "evaluate.max_examples=100 (or null for the whole test split)")
    _positive(cfg, "recipe.data.max_train_examples", "recipe.data.max_train_examples=500 (or null for all)")
    _choice(cfg, "model.dtype", ["auto", "float32", "bfloat16", "float16"])
    _check_architecture(cfg.model.architecture)
    _choice(cfg, "peft.method", ["lora", "qlora", "dora", "none"])
    _choice(cfg, "peft.quant_type", ["nf4", "fp4"])
    _choice(cfg, "peft.compute_dtype", ["float32", "bfloat16", "float16"])
    from ftkit.reporting.tracking import LOGGERS, WANDB_MODES

    _choice(cfg, "logger.name", LOGGERS)
    _choice(cfg, "logger.mode", WANDB_MODES)
    _choice(cfg, "data_checks.duplicates", ["refuse", "drop", "keep"])
    _choice(cfg, "data_checks.too_long", ["refuse", "truncate", "drop"])
    _choice(cfg, "data_checks.leakage", ["refuse", "drop", "keep"])
    _positive(cfg, "early_stopping.patience", "early_stopping.patience=3 (or null to train every epoch)")
    if cfg.early_stopping.threshold < 0:
        raise FtkitError(
            f"early_stopping.threshold is {cfg.early_stopping.threshold}: a negative least improvement would count a "
            "worse evaluation as an improvement",
            "use early_stopping.threshold=0 (any improvement counts) or a small positive number, e.g. 0.001",
            where="early_stopping.threshold",
        )
    _check_data_preparation(cfg)
    _check_evaluate(cfg)
    _check_attention(cfg)
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
    from ftkit.launch.checks import check_launcher
    from ftkit.recipes import get_recipe_class
    from ftkit.training.peft_checks import check_peft

    check_peft(cfg)
    check_launcher(cfg)
    recipe_class = get_recipe_class(cfg.recipe.name)
    recipe_class.check_config(cfg.recipe)
    if hasattr(recipe_class, "check_run"):  # a recipe's rules on the rest of the config (preference: DPO's needs)
        recipe_class.check_run(cfg)


def _check_resolves(cfg: DictConfig) -> None:
    """Every ${...} must resolve now: a bad one would otherwise surface wherever the value is first read."""
    from omegaconf.errors import GrammarParseError, InterpolationResolutionError

    # Hydra resolves its own node (${hydra:...} only resolves inside its run)
    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
    except (InterpolationResolutionError, GrammarParseError) as error:
        raise interpolation_error(error) from None


def interpolation_error(error: Exception) -> FtkitError:
    """A ${...} that does not resolve: an unknown key, a loop, an unset environment variable, an unknown resolver."""
    full_key = getattr(error, "full_key", None) or "the config"
    detail = " ".join(str(error).split("\n")[0].split())
    return FtkitError(
        f"the interpolation in its value does not resolve ({detail})",
        "point ${...} at an existing key (ftkit train --cfg job lists them), set the environment variable it "
        "reads (${oc.env:NAME} or ${oc.env:NAME,default}), or give a plain value",
        where=full_key,
    )


def _check_finite(cfg: DictConfig, prefix: str = "") -> None:
    """No setting means inf or nan: a learning rate, a weight or a threshold that is one silently ruins a run."""
    import math

    items = cfg.items() if isinstance(cfg, DictConfig) else enumerate(cfg)
    for name, value in items:
        key = f"{prefix}{name}" if isinstance(cfg, DictConfig) else f"{prefix.rstrip('.')}[{name}]"
        if key == "hydra":
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            _check_finite(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise FtkitError(f"{key} is {value}, which no run can use", f"give {key} a finite number", where=key)


# transformers' attention kernels by name; a hub kernel ("kernels-community/flash-attn") is named by its repo id.
ATTENTION = {
    "eager": None,
    "sdpa": None,
    "flex_attention": None,
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
}


def _check_architecture(architecture: Any) -> None:
    """model.architecture is read only by a dry run without the model at hand: check its shape now."""
    if not architecture:  # not given (empty or null)
        return
    fix = "give model_type and config.json sizes as in conf/model/qwen2_5_7b.yaml, or model.architecture=null"
    if not isinstance(architecture, DictConfig) or not isinstance(architecture.get("model_type"), str):
        raise FtkitError(
            f"model.architecture must be a mapping with a model_type (e.g. llama), got {architecture!r}",
            fix,
            where="model.architecture",
        )
    for key, value in architecture.items():
        if str(key).startswith(("num_", "hidden_size", "intermediate_size", "vocab_size", "head_dim")) and not (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            raise FtkitError(
                f"model.architecture.{key} must be a positive whole number, got {value!r}",
                fix,
                where="model.architecture",
            )


def _check_attention(cfg: DictConfig) -> None:
    """model.attn_implementation is read only when the model loads; a typo would fail there."""
    given = cfg.model.attn_implementation
    if given is None or given == "auto" or "/" in str(given):
        return
    name = str(given).removeprefix("paged|")  # transformers' paged variants, for continuous batching
    if name not in ATTENTION:
        raise FtkitError(
            f"model.attn_implementation={given!r} is not an attention kernel transformers knows",
            f"use one of {', '.join(ATTENTION)}, auto (flash_attention_2 where installed on a GPU, else sdpa) or null "
            f"(transformers chooses); {closest(name, [*ATTENTION, 'auto'])}",
            where="model.attn_implementation",
        )


def check_machine(cfg: DictConfig) -> None:
    """What this machine must have for the run to start (a run or a dry run asks; printing a config does not)."""
    from importlib.util import find_spec

    from ftkit.cache import check_cache_dir
    from ftkit.launch.checks import check_machine as check_launch_machine

    check_launch_machine(cfg)
    check_cache_dir()
    name = str(cfg.model.attn_implementation).removeprefix("paged|")
    package = ATTENTION.get(name)
    if package is not None and find_spec(package) is None:
        raise FtkitError(
            f"model.attn_implementation={name} needs the {package} package, which is not installed",
            f"install it on a CUDA machine (pip install {package.replace('_', '-')}), or use "
            "model.attn_implementation=sdpa",
            where="model.attn_implementation",
        )


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
    # None lets transformers choose: sdpa, or eager for a model without sdpa support; auto is flash or sdpa.
    chosen_by_default = attention is None or (attention == "auto" and "sdpa" in kept_apart)
    if not ((chosen_by_default and "sdpa" in kept_apart) or any(name in str(attention) for name in kept_apart)):
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


BALANCE = ["none", "oversample", "undersample", "class_weights"]
AUGMENT = ["none", "eda", "paraphrase"]
BASELINES = ["majority", "tfidf"]


def _check_data_preparation(cfg: DictConfig) -> None:
    """recipe.data.split / folds (one file split here) and data.* (what is done to the training split)."""
    data = cfg.recipe.get("data")
    split = data.get("split") if data is not None else None
    if split is not None:
        fractions = list(split)
        example = "recipe.data.split=[0.8,0.1,0.1]"
        if len(fractions) != 3 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
            raise FtkitError(
                f"recipe.data.split must be three fractions (train, validation, test), got {fractions}",
                f"use e.g. {example}, or [0.9,0,0.1] for no validation split",
                where="recipe.data.split",
            )
        if any(f < 0 for f in fractions) or fractions[0] <= 0 or fractions[2] <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise FtkitError(
                f"recipe.data.split is {fractions}: the train and test fractions must be above 0, none below 0, and "
                f"the three must add up to 1 (they add up to {sum(fractions):g})",
                f"use e.g. {example}",
                where="recipe.data.split",
            )
    folds, fold = (data.get("folds"), data.get("fold")) if data is not None else (None, None)
    if folds is not None or fold is not None:
        if not (isinstance(folds, int) and folds >= 2) or not (isinstance(fold, int) and 0 <= fold < folds):
            raise FtkitError(
                f"recipe.data.folds={folds} with recipe.data.fold={fold}: folds must be 2 or more and fold one of "
                "0 .. folds-1",
                "run cross-validation with `ftkit cv folds=5 <overrides>`, which sets both for each fold's run",
                where="recipe.data.folds",
            )
        if split is not None:
            raise FtkitError(
                "recipe.data.split and recipe.data.folds are both set: a record would belong to a holdout split and to "
                "a fold",
                "set one of them: recipe.data.split=null for cross-validation",
                where="recipe.data.split",
            )
    if split is not None or folds is not None:
        given = [name for name in ("validation", "test") if data.get(name) is not None]
        if given:
            how = "recipe.data.split" if split is not None else "recipe.data.folds"
            raise FtkitError(
                f"{how} makes every split from recipe.data.train, and recipe.data.{given[0]} is set too "
                f"({data.get(given[0])})",
                " ".join(f"recipe.data.{name}=null" for name in given)
                + f" (add to the command line), or drop {how} to use the files as they are",
                where=f"recipe.data.{given[0]}",
            )
    _choice(cfg, "data.balance", BALANCE)
    _choice(cfg, "data.augment", AUGMENT)
    _positive(cfg, "data.augment_factor", "data.augment_factor=1 (one new record per training record)")
    if cfg.data.synonyms is not None and cfg.data.augment != "eda":
        raise FtkitError(
            f"data.synonyms={cfg.data.synonyms} is only read by data.augment=eda, and data.augment={cfg.data.augment}",
            "set data.augment=eda, or data.synonyms=null",
            where="data.synonyms",
        )
    if cfg.data.balance == "class_weights":  # ftkit.training.trainer weighs the plain token cross-entropy
        trainer = cfg.trainer
        clashes = {
            "trainer.packing": ("packs examples into rows without their weights", trainer.get("packing", False)),
            "trainer.label_smoothing_factor": ("changes the loss", trainer.get("label_smoothing_factor", 0)),
            "trainer.loss_type": ("changes the loss", trainer.get("loss_type", "nll") != "nll"),
        }
        for key, (why, clash) in clashes.items():
            if clash:
                value = OmegaConf.select(cfg, key)
                raise FtkitError(
                    f"data.balance=class_weights weighs each example's token cross-entropy, and "
                    f"{key}={str(value).lower() if isinstance(value, bool) else value} {why}",
                    f"drop {key} (back to its default), or balance by repeating records: data.balance=oversample",
                    where="data.balance",
                )
    if cfg.data.balance != "none" or cfg.data.augment != "none":
        from ftkit.recipes import get_recipe_class
        from ftkit.tasks.classification import ClassificationTask

        if not issubclass(get_recipe_class(cfg.recipe.name), ClassificationTask):
            key = "data.balance" if cfg.data.balance != "none" else "data.augment"
            raise FtkitError(
                f"{key}={cfg.data[key.split('.')[1]]} needs a label per record, and recipe {cfg.recipe.name} is not "
                "a classification recipe",
                f"set {key}=none, or use a classification recipe (tickets, sentiment)",
                where=key,
            )


def _check_evaluate(cfg: DictConfig) -> None:
    baselines = cfg.evaluate.baselines
    if not isinstance(baselines, ListConfig) or any(name not in BASELINES for name in baselines):
        wrong = next((name for name in baselines if name not in BASELINES), baselines) if baselines else baselines
        raise FtkitError(
            f"evaluate.baselines has {wrong!r}, which is not a baseline ftkit trains",
            f"list some of {', '.join(BASELINES)}, e.g. evaluate.baselines=[majority,tfidf], or evaluate.baselines=[] "
            f"for none; {closest(str(wrong), BASELINES)}",
            where="evaluate.baselines",
        )
    if len(set(baselines)) != len(baselines):
        raise FtkitError(
            f"evaluate.baselines lists a baseline twice: {list(baselines)}",
            "list each once, e.g. evaluate.baselines=[majority,tfidf]",
            where="evaluate.baselines",
        )
    samples = cfg.evaluate.bootstrap_samples
    if not isinstance(samples, int) or samples < 0 or 0 < samples < 100:
        raise FtkitError(
            f"evaluate.bootstrap_samples is {samples!r}: intervals need at least 100 resamples of the test split",
            "use e.g. evaluate.bootstrap_samples=1000, or 0 for no intervals",
            where="evaluate.bootstrap_samples",
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
