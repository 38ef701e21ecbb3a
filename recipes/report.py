"""report: write maintenance reports and answer questions about maintenance logs (instruction/input/output data).

The sft_instruct recipe with manufacturing data and one more metric: everything below it supports, this does.

Supports
  - Records in the alpaca instruction/input/output format (e.g. instruction "Generate a maintenance report for
    motor failure", input "Motor ID: M-123, Failure type: Bearing wear"), and every other sft_instruct format
    (sharegpt, messages, prompt_completion; recipe.format). Bundled data: bundled:report/{train,validation,test}.jsonl.
  - Loss on the answer only (end-of-turn token included); the model's chat template; recipe.system_prompt.
  - Metrics on the test split: ROUGE-L (primary), BLEU, perplexity of the reference answers, and field_accuracy:
    the share of the reference's "Key: value" lines (Asset, Failure, Downtime, ...) that the generated report
    reproduces, over the examples whose reference has such lines (None when none has).

Raises FtkitError (exit 2) for
  - the same config and record mistakes as sft_instruct (bad recipe.format, unknown or malformed records, with
    file:line).
"""

from __future__ import annotations

from typing import Any

from ftkit.tasks.instruct import InstructRecipeConfig, InstructTask

SCHEMA = InstructRecipeConfig


class ReportRecipe(InstructTask):
    def score(self, predictions: list[dict], records: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit.tasks.text_metrics import field_accuracy

        metrics = super().score(predictions, records)
        metrics["field_accuracy"] = field_accuracy([p["generation"] for p in predictions], self.references(records))
        return metrics


RECIPE = ReportRecipe
