"""One evaluation: a recipe's predictions on records, its metrics, and how long the predictions took.

`ftkit train` evaluates the base and the fine-tuned model with it, `ftkit eval` a run's model, and the trainer the
validation split during training (early stopping).
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("ftkit")


def evaluate(
    recipe: Any, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int, which: str
) -> dict[str, Any]:
    """The recipe's predictions and metrics on records, timed."""
    started = time.perf_counter()
    predictions = recipe.predict(model, tokenizer, records, batch_size)
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
