"""ftkit's DPOTrainer (recipe=preference): TRL's, with the recipe's metric at each evaluation; and its arguments.

The policy is the loaded model (with recipe.init_from's run merged into it, ftkit.training.models.merge_init_run)
plus a new LoRA / DoRA / QLoRA adapter that TRL attaches from peft_config. TRL then takes the reference
log-probabilities from the same model with the adapter switched off, so the reference is exactly the starting
policy and no second copy of the model is loaded. ftkit.tasks.preference scores evaluations the same way.

DPOConfig is built from the trainer.* settings (TrainingArguments fields; those only SFTConfig has are refused by
ftkit.config.checks for this recipe) and the recipe's DPO settings (beta, loss_type, loss_weights).
"""

from __future__ import annotations

import logging
from typing import Any

from trl import DPOConfig, DPOTrainer

from ftkit.training.trainer import TrainerAdditions

log = logging.getLogger("ftkit")


class FtkitDPOTrainer(TrainerAdditions, DPOTrainer):
    """DPOTrainer with TrainerAdditions: LoRA+ (peft.loraplus_lr_ratio) and the recipe's validation metrics
    (early stopping on validation preference_accuracy)."""


def dpo_arguments(recipe_cfg: Any, max_length: int | None, settings: dict[str, Any]) -> DPOConfig:
    """DPOConfig from the run's settings (output_dir, report_to, trainer.*, early stopping) and the recipe's DPO
    knobs. TRL's DPO has no padding-free batches yet (it warns and pads); ftkit says so once and pads."""
    settings = dict(settings)
    if settings.pop("padding_free", False):
        log.info("trainer.padding_free: TRL's DPOTrainer pads its batches (no padding-free DPO yet); padded here")
    loss_type = recipe_cfg.loss_type
    return DPOConfig(
        max_length=max_length,
        beta=float(recipe_cfg.beta),
        loss_type=[loss_type] if isinstance(loss_type, str) else list(loss_type),
        loss_weights=list(recipe_cfg.loss_weights) if recipe_cfg.loss_weights is not None else None,
        **settings,
    )
