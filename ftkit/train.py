"""ftkit train: compose -> check -> data -> model -> trainer -> evaluate -> report.

Hydra composes the config (ftkit.cli runs this main as the Hydra task function); everything after that is the
linear story below. Each step is a plain function from another ftkit module.
"""

from __future__ import annotations

import hashlib
import logging
import resource
import signal
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from transformers import EarlyStoppingCallback, TrainerCallback
from trl import SFTConfig

from ftkit import tracking
from ftkit.config import check
from ftkit.data_checks import check_lengths, check_splits
from ftkit.errors import FtkitError
from ftkit.evaluate import evaluate
from ftkit.interrupts import StopOnSignal, resume_command
from ftkit.launcher import is_main_rank, whole_model_on_each_rank
from ftkit.models import adapter_config, load_model_and_tokenizer
from ftkit.packed_attention import attend_within_examples
from ftkit.preprocess_cache import CachingSFTTrainer
from ftkit.recipes import Recipe, get_recipe_class
from ftkit.report import write_config, write_report
from ftkit.resume import PREFIX, step_of
from ftkit.sft_trainer import FtkitSFTTrainer
from ftkit.sweep import in_sweep, sweep_group
from ftkit.trl_patches import score_only_labelled_positions_on_cpu

log = logging.getLogger("ftkit")


def main(cfg: DictConfig) -> None:
    check(cfg)
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = load_splits(recipe, cfg)
    log.info("Data: %s", ", ".join(f"{name} {len(records)}" for name, records in splits.items()))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    main_rank = is_main_rank()  # under a multi-process launch only rank 0 writes into the run directory
    resume_from = Path(cfg.resume) if isinstance(cfg.resume, str) else None  # a checkpoint, by ftkit.resume
    if main_rank and resume_from is None:  # a resumed run keeps the config.yaml it was started with
        write_config(run_dir, cfg, list(HydraConfig.get().overrides.task))
    if resume_from is not None:
        log.info("Resuming from %s (step %d)", resume_from, step_of(resume_from))

    # Trainer arguments before the model: TRL refuses bad settings before anything big loads, and they set up
    # the process group that a multi-process launch trains in.
    args = training_arguments(cfg, recipe, run_dir)
    with whole_model_on_each_rank(args):
        model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.peft, args.gradient_checkpointing)
    splits["train"] = check_lengths(recipe, cfg, tokenizer, splits["train"])
    base = evaluate(recipe, model, tokenizer, splits["test"], cfg, "base model, test") if cfg.evaluate.base else None

    tracker = tracking.start(cfg, run_dir, sweep_group()) if main_rank else None  # Trainer's callback logs into it
    stop_on_signal = StopOnSignal()  # SIGINT / SIGTERM: checkpoint, then exit 130 / 143
    trainer = build_trainer(cfg, args, recipe, model, tokenizer, splits, stop_on_signal)
    train_stats = train(trainer, resume_from)
    if stop_on_signal.signum is not None:
        exit_after_signal(trainer, stop_on_signal.signum, tracker)
    log_rank_summary(trainer, train_stats)
    # LoRA/DoRA weights + adapter_config.json, or the whole model for peft=none (save_model: rank 0 writes)
    saved = run_dir / ("model" if cfg.peft.method == "none" else "adapter")
    trainer.save_model(str(saved))
    if main_rank:
        tokenizer.save_pretrained(str(saved))

    # Every rank evaluates (ZeRO-3 shards need all ranks in each forward); rank 0 writes the results.
    finetuned = evaluate(recipe, trainer.model, tokenizer, splits["test"], cfg, "fine-tuned model, test")
    # A sweep's objective is the validation metric (choosing by the test split would over-fit it); a Hydra sweep
    # sets evaluate.validation=true itself, a W&B sweep agent's run is recognised here.
    score_validation = cfg.evaluate.validation if cfg.evaluate.validation is not None else in_sweep()
    validation = None
    if score_validation and "validation" in splits:
        validation = evaluate(recipe, trainer.model, tokenizer, splits["validation"], cfg, "fine-tuned, validation")
    if main_rank:
        metrics = write_report(
            run_dir, cfg, recipe, base, finetuned, train_stats, trainer.state.log_history, validation
        )
        tracking.finish(cfg, tracker, run_dir, metrics, recipe.primary_metric)


def load_splits(recipe: Recipe, cfg: DictConfig) -> dict[str, list[dict[str, Any]]]:
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    if splits["validation"] is None and cfg.trainer.get("eval_strategy", "no") != "no":
        raise FtkitError(
            f"trainer.eval_strategy={cfg.trainer.eval_strategy} needs a validation split, and none is set",
            "set recipe.data.validation=<file>, or turn evaluation during training off: trainer.eval_strategy=no",
            where="recipe.data.validation",
        )
    if splits["test"] is None:
        raise FtkitError(
            "no test split is set, so there is nothing to evaluate on",
            "set recipe.data.test=<file>",
            where="recipe.data.test",
        )
    limit = cfg.evaluate.max_examples
    splits["test"] = splits["test"][:limit] if limit else splits["test"]
    return check_splits(recipe, cfg, {name: records for name, records in splits.items() if records is not None})


class LogToFile(TrainerCallback):
    """Copy Trainer's log lines (loss, learning rate, eval loss) into train.log."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            log.info(
                "step %d: %s",
                state.global_step,
                {k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()},
            )


def training_arguments(cfg: DictConfig, recipe: Recipe, run_dir: Path) -> SFTConfig:
    trainer_settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        # The recipe's needs first (e.g. loss on assistant turns only), then the user's trainer.* settings.
        return SFTConfig(
            output_dir=str(run_dir / "checkpoints"),
            report_to=tracking.report_to(cfg),
            max_length=trl_max_length(cfg),
            # accelerate only forms a CPU process group (gloo) for ranks that say they are on the CPU
            use_cpu=not torch.cuda.is_available(),
            **{**recipe.sft_config, **early_stopping_arguments(cfg, recipe), **trainer_settings},
        )
    except (ValueError, TypeError) as error:
        raise FtkitError(
            f"TRL refused the trainer settings: {str(error).splitlines()[0]}",
            "correct the trainer.* values named above",
            where="trainer",
        ) from None


def trl_max_length(cfg: DictConfig) -> int | None:
    """model.max_length, except None for padding-free batches without packing.

    TRL refuses max_length there ("not enforced": its padding-free path does not truncate). ftkit's length check
    (data_checks.too_long=refuse | drop) already keeps every training example within model.max_length, and
    ftkit.config refuses too_long=truncate with padding-free batches, since nothing would truncate.
    """
    trainer = cfg.trainer
    if trainer.get("padding_free", False) and not trainer.get("packing", False):
        return None
    return cfg.model.max_length


def early_stopping_arguments(cfg: DictConfig, recipe: Recipe) -> dict[str, Any]:
    """With early_stopping.patience: keep the checkpoint best on the recipe's metric and end with it loaded."""
    if not cfg.early_stopping.patience:
        return {}
    return {
        "load_best_model_at_end": True,
        "metric_for_best_model": f"eval_{recipe.primary_metric}",  # FtkitSFTTrainer adds it to each evaluation
        "greater_is_better": recipe.greater_is_better,
    }


def build_trainer(
    cfg: DictConfig,
    args: SFTConfig,
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    splits: dict[str, list],
    stop_on_signal: StopOnSignal,
) -> FtkitSFTTrainer:
    validation = splits.get("validation")
    score_only_labelled_positions_on_cpu()
    callbacks = [LogToFile(), stop_on_signal]

    def score_validation(model: Any) -> dict[str, Any]:
        return evaluate(recipe, model, tokenizer, validation, cfg, "validation")["metrics"]

    if cfg.early_stopping.patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping.patience, cfg.early_stopping.threshold))
    trainer = CachingSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([recipe.to_example(r) for r in splits["train"]]),
        eval_dataset=Dataset.from_list([recipe.to_example(r) for r in validation]) if validation else None,
        processing_class=tokenizer,
        peft_config=adapter_config(cfg.peft, model),  # None for peft=none: every weight trains
        callbacks=callbacks,
        loraplus_lr_ratio=cfg.peft.get("loraplus_lr_ratio"),
        score_validation=score_validation if cfg.early_stopping.patience else None,
        cache_preprocessing=cfg.cache_preprocessing,  # a later run on the same data skips tokenizing
    )
    # TRL's own decision (padding_free, or bfd packing; wrapped packing keeps rows apart and sends no boundaries)
    if trainer.padding_free:
        attend_within_examples()
        if model.config._attn_implementation == "sdpa":
            log.info("Padding-free rows: sdpa attention runs on each example's slice of the row")
    return trainer


def log_rank_summary(trainer: FtkitSFTTrainer, stats: dict[str, Any]) -> None:
    """One line per rank in its own log: steps trained and a digest of its trainable weights (equal under DDP)."""
    digest = hashlib.sha256()
    for name, param in sorted(trainer.model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    log.info(
        "rank %d of %d (%s): trained %d steps; trainable weights sha256 %s",
        trainer.args.process_index,
        trainer.args.world_size,
        trainer.accelerator.distributed_type.value,
        stats["global_step"],
        digest.hexdigest()[:16],
    )


def train(trainer: FtkitSFTTrainer, resume_from: Path | None) -> dict[str, Any]:
    # Trainer restores the weights, optimizer, scheduler, RNG states, step and data position from the checkpoint.
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    history = trainer.state.log_history  # a resumed run's includes the steps before the checkpoint
    start = step_of(resume_from) if resume_from else 0
    tokens = max((entry.get("num_tokens", 0) for entry in history), default=0)
    tokens_before = max((e.get("num_tokens", 0) for e in history if e.get("step", 0) <= start), default=0)
    runtime = result.metrics["train_runtime"]  # this process's training only
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    stats = {
        "train_loss": result.metrics.get("train_loss"),
        "train_minutes": runtime / 60,
        "train_tokens": int(tokens),
        "tokens_per_second": (tokens - tokens_before) / runtime if runtime else None,
        "global_step": trainer.state.global_step,
        "resumed_from_step": start or None,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name
        if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint
        else None,
        "best_metric": trainer.state.best_metric if trainer.args.load_best_model_at_end else None,
        "epochs": trainer.state.epoch,
        "peak_rss_mb": peak_mb,
        "weights_mb": trainer.model.get_memory_footprint() / 2**20,  # parameters + buffers, 4-bit ones packed
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    if torch.cuda.is_available():
        stats["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return stats


def exit_after_signal(trainer: FtkitSFTTrainer, signum: int, tracker: Any) -> None:
    """The step's checkpoint is saved: say how to continue, close the tracker, exit 128 + signum (130 / 143)."""
    checkpoint = Path(trainer.args.output_dir) / f"{PREFIX}{trainer.state.global_step}"
    log.warning(
        "Stopped by %s at step %d of %d; checkpoint saved in %s. Continue this run with:\n  %s",
        signal.Signals(signum).name,
        trainer.state.global_step,
        trainer.state.max_steps,
        checkpoint,
        resume_command(checkpoint),
    )
    tracking.close(tracker, 128 + signum)
    raise SystemExit(128 + signum)
