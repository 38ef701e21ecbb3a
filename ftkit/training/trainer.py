"""ftkit's trainers' shared additions (TrainerAdditions: LoRA+, the recipe's own metric at each evaluation; the DPO
trainer takes them too, ftkit.training.preference_trainer) and ftkit's SFTTrainer: TRL's, plus those, cached data
preparation, seeded length-grouped batches in random order, and a loss weighted per example
(data.balance=class_weights).

Trainer's evaluation knows only the loss. Early stopping on a task metric (accuracy, entity F1, ROUGE-L) needs
the recipe's predictions on the validation split, so evaluation_loop adds them to the metrics; Trainer's own
machinery then does the rest (best checkpoint, EarlyStoppingCallback, load_best_model_at_end).

The weighted loss: training examples with a "loss_weight" column (ftkit.training.run sets each to its class's
weight, ftkit.data.balance) are trained on

    loss = sum over label tokens t of w(t) * CE(t) / num_items_in_batch

where w(t) is the weight of the example the token belongs to and num_items_in_batch is transformers' count of the
label tokens of the whole accumulated batch (all micro-batches and ranks); without it (evaluation), the count of
this batch's. With every w = 1 this is TRL's loss, so the learning rate keeps its meaning, and since the same
denominator is used by every micro-batch of an accumulated step, the micro-batches' losses add up to the loss of
the same examples in one batch (gradient accumulation stays exact). The weight reaches the loss as a per-token
tensor aligned with the labels (ExampleWeightCollator), so a padding-free row holding several examples weighs each
token by its own example. The column survives TRL's preparation and the preprocessing cache (a column TRL does not
touch); packing, label smoothing, loss_type=dft and a compute_loss_func would lose or change the weighting and
are refused (ValueError here, FtkitError in ftkit.config.checks first). Evaluation batches carry no weights: the
validation loss stays unweighted. Without the column nothing changes: compute_loss is TRL's.
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

LOSS_WEIGHT = "loss_weight"  # the training examples' column: the weight of each example's loss
TOKEN_WEIGHTS = "token_loss_weights"  # the batch's key: each token's weight, shaped like the labels


class TrainerAdditions:
    """What ftkit adds to a TRL trainer, for FtkitSFTTrainer here and ftkit.training.preference_trainer's
    FtkitDPOTrainer alike (a mixin, first in their bases):

    loraplus_lr_ratio: the optimizer gives LoRA's B matrices a larger learning rate (LoRA+, PEFT's optimizer);
        built in create_optimizer, as Trainer builds its own, so DeepSpeed and FSDP still wrap it the usual way.
    validation_scorer: model -> the recipe's metrics on the validation split; they join each evaluation's
        metrics as eval_<name> (e.g. eval_accuracy) for metric_for_best_model and early stopping.
    """

    def __init__(
        self,
        *args: Any,
        loraplus_lr_ratio: float | None = None,
        validation_scorer: Callable[[Any], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.validation_scorer = validation_scorer
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


class FtkitSFTTrainer(TrainerAdditions, SFTTrainer):
    """SFTTrainer with TrainerAdditions (LoRA+, validation metrics) and these.

    cache_preprocessing: TRL's dataset preparation is read from / written to the preprocessing cache
        (ftkit.training.preprocess_cache); False: TRL prepares every time.
    Length-grouped batches come from EpochSeededLengthGroupedSampler (below).
    A "loss_weight" column in train_dataset (given by keyword) weighs each example's loss (the module's docstring).
    """

    def __init__(self, *args: Any, cache_preprocessing: bool = True, **kwargs: Any) -> None:
        self.cache_preprocessing = cache_preprocessing  # set before SFTTrainer.__init__ prepares the datasets
        self.weighs_examples = LOSS_WEIGHT in getattr(kwargs.get("train_dataset"), "column_names", ())
        super().__init__(*args, **kwargs)
        if self.weighs_examples:
            self._check_weighable()
            self.data_collator = ExampleWeightCollator(self.data_collator)

    def _check_weighable(self) -> None:
        """The settings under which the per-example weights would be lost or mean something else are refused."""
        from trl.data_utils import get_dataset_column_names

        args = self.args
        if LOSS_WEIGHT not in get_dataset_column_names(self.train_dataset) or args.packing:
            raise ValueError("per-example loss weights need packing=False: packing drops the loss_weight column")
        if args.label_smoothing_factor or args.loss_type != "nll" or self.compute_loss_func is not None:
            raise ValueError(
                "per-example loss weights weigh the plain token cross-entropy: label_smoothing_factor=0, "
                "loss_type='nll' and no compute_loss_func"
            )

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.weighs_examples and LOSS_WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, LOSS_WEIGHT]  # else Trainer drops the column

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        weights = inputs.pop(TOKEN_WEIGHTS, None)
        if weights is None:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        weighed = []

        # TRL's loss is -sum(outputs.log_probs) / num_items_in_batch over the fused LM head's per-token log-probs;
        # weighing those log-probs leaves the rest of TRL's loss (normalisation, ranks, metrics) as it is.
        def weighted_model(*args: Any, **kwargs: Any) -> Any:
            outputs = model(*args, **kwargs)
            if kwargs.get("fused_lm_head"):
                shifted = weights[:, 1:]  # log_probs[:, t] scores labels[:, t + 1]
                if outputs.log_probs.shape != shifted.shape:
                    raise RuntimeError(f"log-probs {tuple(outputs.log_probs.shape)} vs weights {tuple(shifted.shape)}")
                outputs.log_probs = outputs.log_probs.float() * shifted.to(outputs.log_probs.device)
                weighed.append(True)
            return outputs

        result = super().compute_loss(
            weighted_model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not weighed:
            raise RuntimeError(
                "TRL's compute_loss no longer goes through its fused LM head: the weights were not applied"
            )
        return result

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler

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


class ExampleWeightCollator:
    """TRL's collator, plus each example's loss_weight spread over its tokens as TOKEN_WEIGHTS: a float tensor shaped
    like the labels (one row under padding-free batches, as the labels are), 0 on padding."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from trl.trainer.utils import pad

        batch = self.collator(examples)  # TRL's collator keeps only the columns it knows
        if LOSS_WEIGHT not in examples[0]:  # evaluation: unweighted
            return batch
        rows = [torch.full((len(e["input_ids"]),), float(e[LOSS_WEIGHT])) for e in examples]
        if self.collator.padding_free:
            rows = [torch.cat(rows)]
        batch[TOKEN_WEIGHTS] = pad(
            rows, padding_value=0.0, padding_side="right", pad_to_multiple_of=self.collator.pad_to_multiple_of
        )
        if batch[TOKEN_WEIGHTS].shape != batch["labels"].shape:
            raise RuntimeError(
                f"token weights {tuple(batch[TOKEN_WEIGHTS].shape)} vs labels {tuple(batch['labels'].shape)}"
            )
        return batch
