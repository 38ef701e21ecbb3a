"""One evaluation: a recipe's predictions on records, its metrics, and how long the predictions took.

`ftkit train` evaluates the base and the fine-tuned model with it, `ftkit eval` a run's model, and the trainer the
validation split during training (early stopping).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ftkit")


def evaluate(
    recipe: Any, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int, which: str
) -> dict[str, Any]:
    """The recipe's predictions and metrics on records, timed."""
    return timed_score(recipe, lambda: recipe.predict(model, tokenizer, records, batch_size), records, which)


def timed_score(
    recipe: Any, predict: Callable[[], list[Any]], records: list[dict[str, Any]], which: str
) -> dict[str, Any]:
    """predict()'s predictions (timed) scored by the recipe on records, logged as `which`; a model's or a
    baseline's (ftkit.reporting.baselines)."""
    started = time.perf_counter()
    predictions = predict()
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
