"""ftkit's SFTTrainer: TRL's, plus LoRA+, the recipe's own metric at each evaluation, cached data preparation and
seeded length-grouped batches in random order.

Trainer's evaluation knows only the loss. Early stopping on a task metric (accuracy, entity F1, ROUGE-L) needs
the recipe's predictions on the validation split, so evaluation_loop adds them to the metrics; Trainer's own
machinery then does the rest (best checkpoint, EarlyStoppingCallback, load_best_model_at_end).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import SFTTrainer

from ftkit.launch.ranks import is_main_rank
from ftkit.training.preprocess_cache import cache_folder, every_rank_has, load, preparation_key, store

log = logging.getLogger("ftkit")


class FtkitSFTTrainer(SFTTrainer):
    """SFTTrainer with these additions.

    loraplus_lr_ratio: the optimizer gives LoRA's B matrices a larger learning rate (LoRA+, PEFT's optimizer);
        built in create_optimizer, as Trainer builds its own, so DeepSpeed and FSDP still wrap it the usual way.
    validation_scorer: model -> the recipe's metrics on the validation split; they join each evaluation's
        metrics as eval_<name> (e.g. eval_accuracy) for metric_for_best_model and early stopping.
    cache_preprocessing: TRL's dataset preparation is read from / written to the preprocessing cache
        (ftkit.training.preprocess_cache); False: TRL prepares every time.
    Length-grouped batches come from EpochSeededLengthGroupedSampler (below).
    """

    def __init__(
        self,
        *args: Any,
        loraplus_lr_ratio: float | None = None,
        validation_scorer: Callable[[Any], dict[str, Any]] | None = None,
        cache_preprocessing: bool = True,
        **kwargs: Any,
    ) -> None:
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.validation_scorer = validation_scorer
        self.cache_preprocessing = cache_preprocessing  # set before SFTTrainer.__init__ prepares the datasets
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is None and self.loraplus_lr_ratio:
            from peft.optimizers import create_loraplus_optimizer

            optimizer_class, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = create_loraplus_optimizer(
                self.model,
                optimizer_class,
                loraplus_lr_ratio=self.loraplus_lr_ratio,
                loraplus_weight_decay=self.args.weight_decay,
                **kwargs,
            )
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler

    def evaluation_loop(self, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.validation_scorer is not None and metric_key_prefix == "eval":
            scores = self.validation_scorer(self.model)
            # Numbers only: per-class tables and confusion matrices stay in the final report.
            output.metrics.update(
                {
                    f"{metric_key_prefix}_{name}": value
                    for name, value in scores.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)
                }
            )
        return output

    def _prepare_dataset(
        self,
        dataset: Any,
        processing_class: Any,
        args: Any,
        packing: bool,
        formatting_func: Any,
        dataset_name: str,
    ) -> Any:
        from datasets import Dataset

        prepare = super()._prepare_dataset
        # ftkit passes neither a formatting function nor a streamed dataset; anything else is not cached.
        if not self.cache_preprocessing or formatting_func is not None or type(dataset) is not Dataset:
            return prepare(dataset, processing_class, args, packing, formatting_func, dataset_name)
        key = preparation_key(
            dataset, self._tokenizer, args, packing, self.completion_only_loss, getattr(self, "chat_template", None)
        )
        folder = cache_folder() / key
        cached = load(folder)
        if every_rank_has(cached is not None):
            log.info(
                "Preprocessed %s data reused from %s (key %s): skipped tokenizing %d examples",
                dataset_name,
                folder,
                key[:12],
                len(dataset),
            )
            return cached
        prepared = prepare(dataset, processing_class, args, packing, formatting_func, dataset_name)
        if is_main_rank() and cached is None and store(prepared, folder):
            log.info(
                "Preprocessed %s data stored in %s (key %s): a run on the same data and settings reuses it",
                dataset_name,
                folder,
                key[:12],
            )
        return prepared


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Batches of similar length, in random order, seeded by (seed, epoch).

    Seeded: Trainer's own sampler draws each epoch's order from torch's global generator, whose state at that
    moment depends on everything that ran before; a resumed run would then see another order than the run it
    continues (measured: the adapter drifted by ~7e-3 within two steps of resuming). Trainer calls set_epoch at
    each epoch's start, on resume too, so the order of every epoch is fixed by the seed alone.

    Random batch order: Trainer's grouping sorts each megabatch (up to 50 batches) by length, so consecutive
    batches run from long to short: a short run's last steps see only the shortest examples, and, where length
    goes with the label, a skewed mix of classes. Measured on 480 twitter headlines, one epoch (docs/
    performance.md): accuracy 0.727 with that order against 0.807 with random batches. Here the same batches (so
    the same padding) come in shuffled order; the batch holding the longest example stays first (an
    out-of-memory shows at once), a short last batch stays last (so later batches do not straddle two groups).
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        self.generator.manual_seed(self.seed + self.epoch)
        grouped = list(super().__iter__())
        batches = [grouped[i : i + self.batch_size] for i in range(0, len(grouped), self.batch_size)]
        short_last = batches.pop() if len(batches) > 1 and len(batches[-1]) < self.batch_size else []
        middle = batches[1:]
        order = torch.randperm(len(middle), generator=self.generator).tolist()
        shuffled = [batches[0], *(middle[i] for i in order), short_last]
        return iter([index for batch in shuffled for index in batch])
