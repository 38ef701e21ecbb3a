"""preference: DPO after SFT on preference pairs, scored by how the tuned model ranks held-out pairs.

Supports
  - TRL's DPOTrainer (ftkit.training.preference_trainer) with LoRA, QLoRA or DoRA (peft=lora | qlora | dora) on
    records {"prompt", "chosen", "rejected"}: three texts, or TRL's conversational form (prompt messages, one
    assistant message each), or whole conversations without a prompt (ftkit.tasks.preference). Bundled data:
    bundled:preference/{train,validation,test}.jsonl, maintenance reports with one flaw in the rejected one.
  - recipe.loss_type: sigmoid (DPO, the default), ipo, hinge, robust and every other TRL DPO loss, or a list of
    them with recipe.loss_weights; recipe.beta.
  - recipe.init_from=<run dir>: start from a finished run (an SFT run of the same base model): its adapter is
    merged into the base weights, and a new adapter trains on top. The reference is that merged model, i.e. the
    tuned model with its adapter switched off (TRL's adapter-disabled reference): no second copy in memory.
    `ftkit eval`, `export` and `serve` merge the same run in again when they load a preference run.
  - Metrics on the test split, starting point ("base") vs tuned: preference_accuracy (primary; the implicit
    reward ranks chosen above rejected, ties one half), reward_margin, likelihood_accuracy, and from greedy
    answers ROUGE-L and field_accuracy against the chosen answer; bootstrap intervals and the paired bootstrap of
    the accuracy difference in report.md.
  - Launchers, sweeps, W&B, resume and early stopping (on validation preference_accuracy) as for SFT recipes.

Raises FtkitError (exit 2) for
  - a record without chosen or rejected, an empty field, a prompt that does not end on a user turn, or a pair whose
    answers are the same text (file:line given);
  - recipe.beta <= 0, a loss_type TRL does not have, loss_weights that do not match loss_type;
  - recipe.init_from that is not a finished run, or a run of another base model or recipe family than model.*;
    peft=none (the reference is the model with its adapter off, so DPO here needs an adapter);
  - trainer.* settings only SFT has (packing, completion_only_loss, ...), train_sampling_strategy=group_by_length,
    and data.balance / data.augment (labels only).
"""

from __future__ import annotations

from ftkit.tasks.preference import PreferenceRecipeConfig, PreferenceTask


class PreferenceRecipe(PreferenceTask):
    """DPO on the bundled maintenance-report pairs by default (conf/recipe/preference.yaml)."""


SCHEMA = PreferenceRecipeConfig
RECIPE = PreferenceRecipe
