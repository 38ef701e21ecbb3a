"""One training run, top to bottom: data -> model -> trainer -> train -> save -> evaluate -> report.

ftkit.commands.train composed and checked the config and chose the run directory; Hydra then calls main() as its
task function, in this process or in every launched rank. main() reads as the list above, one banner per step;
each step is a plain function here or in the module named beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import signal
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from transformers import EarlyStoppingCallback
from trl import SFTConfig

from ftkit.commands.resume import step_of
from ftkit.commands.sweep import in_sweep, sweep_group
from ftkit.config import trainer_fields
from ftkit.config.checks import check
from ftkit.data.augment import augment, read_synonyms
from ftkit.data.balance import balance
from ftkit.data.splits import load_splits, write_record
from ftkit.errors import FtkitError
from ftkit.launch.cpu_threads import follows_load, set_threads
from ftkit.launch.ranks import is_main_rank
from ftkit.recipes import Recipe, get_recipe_class
from ftkit.reporting import tracking
from ftkit.reporting.baselines import run_baselines
from ftkit.reporting.run_report import write_config, write_report
from ftkit.run_dir import CHECKPOINT_PREFIX, RunDir
from ftkit.tasks.classification import with_labels_read
from ftkit.tasks.evaluation import evaluate
from ftkit.training import patches
from ftkit.training.callbacks import FollowCpuLoad, LogToFile, StopOnSignal, resume_command
from ftkit.training.chat_template import end_of_turn_check
from ftkit.training.data_checks import check_lengths
from ftkit.training.models import (
    adapter_config,
    check_adapter_targets,
    load_model_and_tokenizer,
    merge_init_runs,
    whole_model_on_each_rank,
)
from ftkit.training.trainer import LOSS_WEIGHT, FtkitSFTTrainer

log = logging.getLogger("ftkit")


def main(cfg: DictConfig) -> None:
    # ---- data: the recipe reads and validates each split; ftkit.training.data_checks checks them together -----
    check(cfg)  # again: a launched rank, or a sweep job, starts here
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    run_dir = RunDir(HydraConfig.get().runtime.output_dir)
    main_rank = is_main_rank()  # under a multi-process launch only rank 0 writes into the run directory
    resume_from = Path(cfg.resume) if isinstance(cfg.resume, str) else None  # a checkpoint, by ftkit.commands.resume
    data_findings: dict[str, Any] = {}  # what the data checks found and did, for metrics.json
    # A resumed run trains on the records it started with: its splits.json is compared with the split made now.
    recorded = (run_dir.saved_splits(), run_dir.splits_file) if resume_from is not None else (None, None)
    splits = load_splits(recipe, cfg, data_findings, *recorded)
    log.info("Data: %s", ", ".join(f"{name} {len(records)}" for name, records in splits.items()))
    # read with the data, so a bad synonyms file is refused before the model loads
    synonyms = read_synonyms(cfg.data.synonyms) if cfg.data.augment == "eda" and cfg.data.synonyms else None

    # ---- run directory: splits.json, config.yaml and overrides.yaml, once the data is known to be sound ------
    # recipe.labels=auto: the labels read from the training split go into the config and overrides kept
    overrides = with_labels_read(cfg, recipe, list(HydraConfig.get().overrides.task))
    if main_rank and resume_from is None:  # a resumed run keeps the config.yaml it was started with
        write_record(recipe, run_dir.splits_file)  # before config.yaml, which marks the run as started
        write_config(run_dir.path, cfg, overrides)
    if resume_from is not None:
        log.info("Resuming from %s (step %d)", resume_from, step_of(resume_from))

    # ---- trainer arguments, then the model ----------------------------------------------------------------
    # Arguments first: TRL refuses bad settings before anything big loads, and they set up the process group
    # that a multi-process launch trains in.
    args = training_arguments(cfg, recipe, run_dir.path)
    set_threads(cfg)  # the CPU threads (launch/cpu_threads.py chose them and the wait policy) and a log line
    check_adapter_targets(cfg)  # a layer name the architecture lacks, refused before the weights load
    with whole_model_on_each_rank(args):
        model, tokenizer = load_model_and_tokenizer(
            cfg.model,
            cfg.peft,
            trainer_fields.activation_checkpointing(cfg.trainer),
            end_of_turn_check(cfg, recipe, splits["train"]),  # the answer's end is trained, or refused here
        )
        model = merge_init_runs(model, cfg)  # recipe.init_from (preference): the SFT run this one starts from
    splits["train"] = check_lengths(recipe, cfg, tokenizer, splits["train"])
    # Baselines (classification) learn from the training split as read and checked, before any balancing or
    # augmentation: the plain data a simple model would get. Seconds, on the rank that writes the report.
    baselines = {}
    if main_rank:
        baselines = run_baselines(recipe, list(cfg.evaluate.baselines), splits["train"], splits["test"], args.seed)

    # ---- data preparation: augmentation, then balancing, of the training split only (ftkit.data) --------------
    write_augmented = main_rank and resume_from is None  # a resumed run makes the same records again
    preparation = prepare_training_split(cfg, recipe, splits, model, tokenizer, synonyms, run_dir, write_augmented)

    # ---- the base model's score, for the before/after comparison ----------------------------------------------
    batch_size = cfg.evaluate.batch_size
    base = None
    if cfg.evaluate.base:
        base = evaluate(recipe, model, tokenizer, splits["test"], batch_size, "base model, test")

    # ---- trainer: TRL's SFTTrainer + ftkit's additions (ftkit.training.trainer), patches, tracking ------------
    tracker = tracking.start(cfg, run_dir.path, sweep_group()) if main_rank else None  # Trainer's callback logs into it
    stop_on_signal = StopOnSignal()  # SIGINT / SIGTERM: checkpoint, then exit 130 / 143
    class_weights = preparation.get("balance", {}).get("class_weights")
    trainer = build_trainer(cfg, args, recipe, model, tokenizer, splits, stop_on_signal, class_weights)
    patches.install(trainer)
    if follows_load(cfg):  # CPU training without launcher.cpu_threads: fewer threads while other processes run
        trainer.add_callback(FollowCpuLoad(torch.get_num_threads()))

    # ---- train ----------------------------------------------------------------------------------------------
    train_stats = train(trainer, resume_from)
    # run_report writes train_stats into metrics.json: the leakage counts travel there as "train.data_checks"
    train_stats["data_checks"] = data_findings
    train_stats["data_preparation"] = preparation  # data.augment and data.balance: counts, weights, seconds
    if stop_on_signal.signum is not None:
        exit_after_signal(trainer, stop_on_signal.signum, tracker)
    log_rank_summary(trainer, train_stats)

    # ---- save: LoRA/DoRA weights + adapter_config.json, or the whole model for peft=none (rank 0 writes) ------
    saved = run_dir.weights_dir(full_fine_tuning=cfg.peft.method == "none")
    trainer.save_model(str(saved))
    if main_rank:
        tokenizer.save_pretrained(str(saved))

    # ---- evaluate the fine-tuned model ----------------------------------------------------------------------
    # Every rank evaluates (ZeRO-3 shards need all ranks in each forward); rank 0 writes the results.
    finetuned = evaluate(recipe, trainer.model, tokenizer, splits["test"], batch_size, "fine-tuned model, test")
    # A sweep's objective is the validation metric (choosing by the test split would over-fit it); a Hydra sweep
    # sets evaluate.validation=true itself, a W&B sweep agent's run is recognised here.
    score_validation = cfg.evaluate.validation if cfg.evaluate.validation is not None else in_sweep()
    validation = None
    if score_validation and "validation" in splits:
        validation = evaluate(
            recipe, trainer.model, tokenizer, splits["validation"], batch_size, "fine-tuned, validation"
        )

    # ---- report: metrics.json (last), predictions, plots, report.md; the tracker's summary -------------------
    if main_rank:
        metrics = write_report(
            run_dir.path,
            cfg,
            recipe,
            base,
            finetuned,
            train_stats,
            trainer.state.log_history,
            validation,
            baselines=baselines,
            test=splits["test"],
            seed=args.seed,
        )
        tracking.finish(cfg, tracker, run_dir.path, metrics, recipe.primary_metric)


def prepare_training_split(
    cfg: DictConfig,
    recipe: Recipe,
    splits: dict[str, list[dict[str, Any]]],
    model: Any,
    tokenizer: Any,
    synonyms: dict[str, list[str]] | None,
    run_dir: RunDir,
    write: bool,
) -> dict[str, Any]:
    """data.augment, then data.balance, on splits["train"] (replaced; validation and test are only read, so that no
    new record repeats one of their inputs): what was done, for metrics.json. Augmenting first lets balancing count
    the records trained on; the new records are listed in RunDir.augmented_file when `write`."""
    findings: dict[str, Any] = {}
    if cfg.data.augment != "none":
        added, findings["augment"] = augment(recipe, cfg, splits, model, tokenizer, synonyms)
        log.info(
            "Augmentation (data.augment=%s): %d new training records of %d asked for, in %.1f s",
            cfg.data.augment,
            len(added),
            findings["augment"]["requested"],
            findings["augment"]["seconds"],
        )
        splits["train"] = splits["train"] + added
        if write:
            with run_dir.augmented_file.open("w", encoding="utf-8") as listing:
                listing.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in added)
    if cfg.data.balance != "none":
        splits["train"], findings["balance"] = balance(splits["train"], cfg.data.balance, cfg.data.seed)
        log.info(
            "Balancing (data.balance=%s): training records per class %s -> %s%s",
            cfg.data.balance,
            findings["balance"]["counts_before"],
            findings["balance"]["counts_after"],
            f"; class weights {findings['balance']['class_weights']}" if "class_weights" in findings["balance"] else "",
        )
    return findings


def training_arguments(cfg: DictConfig, recipe: Recipe, run_dir: Path) -> Any:
    """SFTConfig, or DPOConfig for a recipe that trains with DPO (ftkit.training.preference_trainer)."""
    trainer_settings = trainer_fields.current_names(OmegaConf.to_container(cfg.trainer, resolve=True))
    run_settings = {
        "output_dir": str(RunDir(run_dir).checkpoints_dir),
        "report_to": tracking.report_to(cfg),
        # accelerate only forms a CPU process group (gloo) for ranks that say they are on the CPU
        "use_cpu": not torch.cuda.is_available(),
    }
    try:
        if recipe.trains_with == "dpo":
            from ftkit.training.preference_trainer import dpo_arguments

            settings = {**run_settings, **early_stopping_arguments(cfg, recipe), **trainer_settings}
            return dpo_arguments(cfg.recipe, cfg.model.max_length, settings)
        # The recipe's needs first (e.g. loss on assistant turns only), then the user's trainer.* settings.
        return SFTConfig(
            **run_settings,
            max_length=trl_max_length(cfg),
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
    ftkit.config.checks refuses too_long=truncate with padding-free batches, since nothing would truncate.
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
    args: Any,
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    splits: dict[str, list],
    stop_on_signal: StopOnSignal,
    class_weights: dict[str, float] | None = None,
) -> Any:
    """The trainer (FtkitSFTTrainer, or FtkitDPOTrainer for a DPO recipe); with class_weights (label -> weight) each
    training example carries its class's loss weight."""
    validation = splits.get("validation")

    def training_example(record: dict[str, Any]) -> dict[str, Any]:
        example = recipe.to_example(record)
        return {**example, LOSS_WEIGHT: class_weights[record["label"]]} if class_weights else example

    callbacks = [LogToFile(), stop_on_signal]

    def score_validation(model: Any) -> dict[str, Any]:
        return evaluate(recipe, model, tokenizer, validation, cfg.evaluate.batch_size, "validation")["metrics"]

    if cfg.early_stopping.patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping.patience, cfg.early_stopping.threshold))
    common = {
        "model": model,
        "args": args,
        "train_dataset": Dataset.from_list([training_example(r) for r in splits["train"]]),
        "eval_dataset": Dataset.from_list([recipe.to_example(r) for r in validation]) if validation else None,
        "processing_class": tokenizer,
        "peft_config": adapter_config(cfg.peft, model),  # None for peft=none: every weight trains
        "callbacks": callbacks,
        "loraplus_lr_ratio": cfg.peft.get("loraplus_lr_ratio"),
        "validation_scorer": score_validation if cfg.early_stopping.patience else None,
    }
    if recipe.trains_with == "dpo":
        from ftkit.training.preference_trainer import FtkitDPOTrainer

        return FtkitDPOTrainer(**common)
    # a later run on the same data skips tokenizing
    return FtkitSFTTrainer(**common, cache_preprocessing=cfg.cache_preprocessing)


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
    checkpoint = Path(trainer.args.output_dir) / f"{CHECKPOINT_PREFIX}{trainer.state.global_step}"
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
