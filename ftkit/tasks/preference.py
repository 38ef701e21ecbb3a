"""Preference pairs: a prompt, a chosen answer and a rejected one, for DPO (recipes/preference.py).

Records, one per JSONL line (or CSV row for the standard form), in either of TRL's two preference forms:

| form | keys of a record |
| --- | --- |
| standard | `prompt`, `chosen`, `rejected`: three texts |
| conversational | `prompt`: messages ending on a user turn; `chosen`, `rejected`: one assistant message each |

(TRL's implicit-prompt form, with whole conversations as `chosen` and `rejected` and no `prompt`, is read too: the
turns both share are the prompt.) Each becomes {"prompt": messages, "chosen": text, "rejected": text, "source":
file:line}. A pair whose answers are the same text teaches nothing and is refused, as are missing or empty fields.

Evaluation scores each pair with the model (the policy) and with its reference: the model with its adapter
switched off, which for a DPO run is the model it started from (the base, or the base with an SFT run merged in,
recipe.init_from). A pair's implicit reward for an answer is beta x (log p_policy - log p_reference) of that answer
after the prompt, summed over its tokens (end of turn included), as DPO defines it. Metrics:

- preference_accuracy: share of pairs whose chosen answer gets the higher reward; a tie counts one half, so the
  starting point, whose rewards are all 0, scores 0.5 (it cannot rank: chance);
- reward_margin: mean reward of chosen minus rejected (0 at the starting point);
- likelihood_accuracy: share of pairs where the model itself gives the chosen answer the higher log-probability
  (ties one half): a ranking the starting point has too, without a reference;
- with recipe.generate: the greedy answer to each prompt against the chosen one: rouge_l and field_accuracy
  (the share of the chosen answer's "Key: value" lines reproduced, None when it has none).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig

from ftkit.data.splits import SplitReader
from ftkit.errors import FtkitError, closest
from ftkit.run_dir import RunDir
from ftkit.tasks.chat_formats import Message, check_conversation, with_system_prompt
from ftkit.tasks.instruct import InstructDataConfig, interleave
from ftkit.tasks.readers import check_split_specs, configured_paths, read_records

log = logging.getLogger("ftkit")

# TRL DPOTrainer's loss types (DPOConfig.loss_type); tests/test_preference.py checks them against the installed TRL.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# The per-pair outcomes the report's bootstrap intervals resample (each metric is their mean over the test pairs);
# the margin is in reward units, not a share of pairs.
PAIR_OUTCOMES = ("preference_accuracy", "reward_margin", "likelihood_accuracy")
NOT_SHARES = ("reward_margin",)


@dataclass
class PreferenceRecipeConfig:
    name: str = MISSING
    data: InstructDataConfig = field(default_factory=InstructDataConfig)
    # None: no system turn added (the chat template may insert its own default); "": an empty one
    system_prompt: str | None = None
    beta: float = 0.1  # how far the tuned model may move from its reference: higher keeps it closer
    loss_type: Any = "sigmoid"  # one of TRL's DPO loss types (sigmoid: DPO; ipo; ...), or a list of them combined
    loss_weights: list[float] | None = None  # one weight per loss_type in a list (None: 1 each)
    # A finished ftkit train run (usually SFT) to start from: its adapter is merged into the base model, which is
    # then both the starting policy and the reference. None: start from model.* as it is.
    init_from: str | None = None
    generate: bool = True  # also generate an answer per test prompt (ROUGE-L, field accuracy); costs evaluation time
    max_new_tokens: int = 80  # generation length at evaluation
    # prompts per generation batch: each decoding step reads every weight once, so on a CPU larger batches write
    # more tokens per second (docs/performance.md); lower it if GPU memory runs out
    generate_batch_size: int = 64


class PreferenceTask:
    """Preference pairs -> DPO examples, and the pairs' implicit rewards under a model and its reference."""

    primary_metric = "preference_accuracy"
    greater_is_better = True
    trains_with = "dpo"  # ftkit.training.run builds TRL's DPOTrainer (ftkit.training.preference_trainer)
    trainer_profile = "preference"  # conf/trainer/preference.yaml unless the command line picks trainer=<option>
    sft_config: dict[str, Any] = {}
    serves: tuple[str, ...] = ()  # ftkit serve: chat only

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        if not cfg.beta > 0:
            raise FtkitError(
                f"recipe.beta must be above 0, got {cfg.beta}",
                "use e.g. recipe.beta=0.1 (higher keeps the model closer to where it started)",
                where="recipe.beta",
            )
        types = list(cfg.loss_type) if isinstance(cfg.loss_type, ListConfig) else [cfg.loss_type]
        for name in types:
            if name not in LOSS_TYPES:
                raise FtkitError(
                    f"recipe.loss_type {name!r} is not one of TRL's DPO losses",
                    f"use one of {', '.join(LOSS_TYPES)}; {closest(str(name), list(LOSS_TYPES))}",
                    where="recipe.loss_type",
                )
        if not types:
            raise FtkitError("recipe.loss_type is an empty list", "use recipe.loss_type=sigmoid", "recipe.loss_type")
        weights = cfg.loss_weights
        if weights is not None and (len(weights) != len(types) or any(not w >= 0 for w in weights)):
            raise FtkitError(
                f"recipe.loss_weights {list(weights)} must give one weight of 0 or more per loss in recipe.loss_type "
                f"({len(types)})",
                "e.g. recipe.loss_type=[sigmoid,sft] recipe.loss_weights=[1.0,0.2], or recipe.loss_weights=null",
                where="recipe.loss_weights",
            )
        for key, example in (("max_new_tokens", 80), ("generate_batch_size", 64)):
            if cfg[key] < 1:
                raise FtkitError(
                    f"recipe.{key} must be at least 1, got {cfg[key]}",
                    f"use e.g. recipe.{key}={example}",
                    where=f"recipe.{key}",
                )
        check_split_specs(cfg.data, "pairs.jsonl")

    @classmethod
    def check_run(cls, cfg: DictConfig) -> None:
        """Rules on the whole config: DPO needs an adapter (its reference is the model with the adapter off),
        trainer.* may hold only what DPOConfig has, and recipe.init_from must be a finished run of this base model."""
        from ftkit.config.trainer_fields import SFT_ONLY

        if cfg.peft.method == "none":
            raise FtkitError(
                "recipe=preference with peft=none: the DPO reference is the model with its adapter switched off, and "
                "full fine-tuning has no adapter",
                "use peft=lora (the default), peft=dora or peft=qlora",
                where="peft",
            )
        given = [name for name in SFT_ONLY if cfg.trainer.get(name) not in (None, False)]
        if given:
            raise FtkitError(
                f"trainer.{given[0]} is an SFT setting; recipe=preference trains with TRL's DPOTrainer, which has no "
                "such field",
                f"drop trainer.{given[0]} (SFT-only fields: {', '.join(SFT_ONLY)})",
                where=f"trainer.{given[0]}",
            )
        if cfg.trainer.get("train_sampling_strategy") == "group_by_length":
            raise FtkitError(
                "trainer.train_sampling_strategy=group_by_length needs one length per example, and a preference "
                "pair is two sequences",
                "use trainer.train_sampling_strategy=random (trainer=preference's default)",
                where="trainer.train_sampling_strategy",
            )
        for run in RunDir.init_chain(cfg.recipe.init_from):
            saved = run.saved_config()
            if run.trained_weights() != run.adapter_dir:
                raise FtkitError(
                    f"recipe.init_from run {run.path} trained every weight (peft=none): there is no adapter to merge",
                    f"start from its model instead: model.path={run.model_dir} recipe.init_from=null",
                    where="recipe.init_from",
                )
            theirs = {key: saved.get("model", {}).get(key) for key in ("path", "gguf_file", "revision")}
            ours = {key: cfg.model.get(key) for key in theirs}
            if theirs != ours:
                raise FtkitError(
                    f"recipe.init_from run {run.path} trained an adapter for model.path={theirs['path']!r} "
                    f"(gguf_file {theirs['gguf_file']!r}, revision {theirs['revision']!r}), and this run loads "
                    f"{ours['path']!r} (gguf_file {ours['gguf_file']!r}, revision {ours['revision']!r})",
                    "train on the model that run used (the same model=<preset> or model.path=...), or start from a "
                    "run of this model",
                    where="recipe.init_from",
                )

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.split_reader = SplitReader(cfg.data, self.read_file, self.stratum)
        # the starting model's (chosen, rejected) log-probs by the records scored: the tuned model's reference
        self.starting_logps: dict[str, tuple[list[float], list[float]]] = {}

    def stratum(self, record: dict[str, Any]) -> str:
        """A split of one file is not stratified: pairs have no class to keep in proportion."""
        return ""

    def load_split(self, split: str) -> list[dict[str, Any]] | None:
        return self.split_reader.read(split)

    def read_file(self, split: str) -> list[dict[str, Any]] | None:
        """Every pair of the file(s) configured for split, interleaved in proportion; None when none is."""
        paths = configured_paths(self.cfg.data, split)
        if paths is None:
            return None
        files = []
        for path in paths:
            pairs = [read_pair(record, f"{path}:{line}") for line, record in read_records(path)]
            log.info("%s: %d preference pairs", path, len(pairs))
            files.append(pairs)
        return interleave(files)

    # ---- examples -------------------------------------------------------------------------------------------
    def conversation(self, record: dict[str, Any]) -> list[Message]:
        """The prompt's messages, with recipe.system_prompt first when set and the record has no system turn."""
        return with_system_prompt(record["prompt"], self.cfg.system_prompt)

    def to_example(self, record: dict[str, Any]) -> dict[str, Any]:
        """TRL's conversational preference example."""
        return {
            "prompt": self.conversation(record),
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
        }

    def input_record(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """An input for `ftkit predict`: a pair to score (prompt, chosen, rejected), as in the training data."""
        return read_pair(raw, where)

    # ---- prediction and scoring -----------------------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, records: list[dict[str, Any]], batch_size: int) -> list[dict]:
        from ftkit.tasks.generation import generate
        from ftkit.tasks.text_metrics import reference_nll

        prompts = [self.conversation(record) for record in records]

        def log_probs() -> tuple[list[float], list[float]]:
            chosen = reference_nll(model, tokenizer, prompts, [r["chosen"] for r in records], batch_size)
            rejected = reference_nll(model, tokenizer, prompts, [r["rejected"] for r in records], batch_size)
            return [-nll for nll, _ in chosen], [-nll for nll, _ in rejected]

        chosen, rejected = log_probs()
        key = _records_key(prompts, records)
        with reference_of(model) as has_reference:
            if not has_reference:
                # Without an adapter the model is its own reference: the same numbers, so every reward is exactly 0.
                # They are also the reference numbers of the adapter trained on it, kept for its evaluation.
                ref_chosen, ref_rejected = self.starting_logps[key] = (chosen, rejected)
            elif key in self.starting_logps:
                # The adapter switched off computes exactly what the starting model computed on these records: the
                # same weights, batches and order (train evaluates the starting point first, then the tuned model).
                ref_chosen, ref_rejected = self.starting_logps[key]
            else:
                ref_chosen, ref_rejected = log_probs()
        generations = (
            generate(model, tokenizer, prompts, self.cfg.max_new_tokens, self.cfg.generate_batch_size)
            if self.cfg.generate
            else [None] * len(records)
        )
        beta = float(self.cfg.beta)
        predictions = []
        for record, c, r, rc, rr, generation in zip(
            records, chosen, rejected, ref_chosen, ref_rejected, generations, strict=True
        ):
            reward_chosen, reward_rejected = beta * (c - rc), beta * (r - rr)
            predictions.append(
                {
                    "source": record["source"],
                    "chosen_logp": c,
                    "rejected_logp": r,
                    "reference_chosen_logp": rc,
                    "reference_rejected_logp": rr,
                    "reward_chosen": reward_chosen,
                    "reward_rejected": reward_rejected,
                    "reward_margin": reward_chosen - reward_rejected,
                    "generation": generation.strip() if generation is not None else None,
                }
            )
        return predictions

    def parse_output(self, text: str) -> str:
        return text.strip()

    def outcomes(self, predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per pair, what each of PAIR_OUTCOMES averages: 1 / 0.5 / 0 for the rankings, the margin itself."""

        def ranked(first: float, second: float) -> float:
            return 1.0 if first > second else 0.5 if first == second else 0.0

        return {
            "preference_accuracy": [ranked(p["reward_chosen"], p["reward_rejected"]) for p in predictions],
            "reward_margin": [p["reward_margin"] for p in predictions],
            "likelihood_accuracy": [ranked(p["chosen_logp"], p["rejected_logp"]) for p in predictions],
        }

    def score(self, predictions: list[dict], records: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit.tasks.text_metrics import field_accuracy, rouge_l

        if len(predictions) != len(records) or not records:
            raise ValueError(f"{len(predictions)} predictions for {len(records)} pairs")
        per_pair = self.outcomes(predictions)
        metrics: dict[str, Any] = {"examples": len(records)}
        metrics.update({name: sum(values) / len(values) for name, values in per_pair.items()})
        metrics["reward_chosen"] = sum(p["reward_chosen"] for p in predictions) / len(predictions)
        metrics["reward_rejected"] = sum(p["reward_rejected"] for p in predictions) / len(predictions)
        if predictions[0]["generation"] is not None:
            generations, references = [p["generation"] for p in predictions], [r["chosen"] for r in records]
            metrics["rouge_l"] = rouge_l(generations, references)
            metrics["field_accuracy"] = field_accuracy(generations, references)
        return metrics


def _records_key(prompts: list[list[Message]], records: list[dict[str, Any]]) -> str:
    """A digest of what predict scores: every rendered prompt and both answers, in order."""
    import hashlib
    import json

    payload = [[prompt, r["chosen"], r["rejected"]] for prompt, r in zip(prompts, records, strict=True)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def reference_of(model: Any) -> Iterator[bool]:
    """The model's reference inside the block: its adapter switched off (True), or, without an adapter, the
    model itself (False: nothing to switch). Inference mode spans the switch back: under ZeRO-3 the scoring gathers
    the adapter's weights in inference mode, and peft's switching back marks them trainable, which torch allows
    only inside it."""
    import torch
    from peft import PeftModel

    if isinstance(model, PeftModel):
        with torch.inference_mode(), model.disable_adapter():
            yield True
    else:
        yield False


def read_pair(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One preference record, standard or conversational, as {"prompt", "chosen", "rejected", "source"}."""
    for key in ("chosen", "rejected"):
        if key not in record:
            raise FtkitError(
                f"the record has no {key!r} field (it has: {', '.join(map(repr, record)) or 'none'}), so it is "
                "not a preference pair",
                'give every record "prompt", "chosen" and "rejected" (texts, or TRL\'s conversational lists)',
                where=where,
            )
    if "prompt" in record:
        prompt = _prompt_messages(record["prompt"], where)
        chosen, rejected = _answer(record["chosen"], "chosen", where), _answer(record["rejected"], "rejected", where)
    else:  # implicit prompt: two whole conversations that share everything before their last turn
        prompt, chosen, rejected = _split_implicit(record, where)
    if chosen == rejected:
        raise FtkitError(
            "the chosen and rejected answers are the same text, so the pair prefers nothing",
            "drop the pair, or give it a rejected answer that differs from the chosen one",
            where=where,
        )
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": where}


def _prompt_messages(value: Any, where: str) -> list[Message]:
    if isinstance(value, str):
        if not value.strip():
            raise FtkitError("field 'prompt' is empty", "give the pair the prompt its answers reply to", where=where)
        return [{"role": "user", "content": value.strip()}]
    messages = _messages(value, "prompt", where)
    if messages[-1]["role"] != "user":
        raise FtkitError(
            f"the prompt ends on a {messages[-1]['role']!r} turn, so there is nothing for the answers to reply to",
            "end the prompt's messages with the user turn that chosen and rejected answer",
            where=where,
        )
    check_conversation([*messages, {"role": "assistant", "content": "-"}], where)
    return messages


def _answer(value: Any, key: str, where: str) -> str:
    """The answer text: a string, or a list of exactly one assistant message."""
    if isinstance(value, str):
        if not value.strip():
            raise FtkitError(f"field {key!r} is empty", f"give the pair a {key} answer, or drop it", where=where)
        return value.strip()
    messages = _messages(value, key, where)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise FtkitError(
            f"field {key!r} must be one assistant message, got roles {[m['role'] for m in messages]}",
            f'write {key} as [{{"role": "assistant", "content": ...}}] (the prompt holds the turns before it)',
            where=where,
        )
    return messages[0]["content"]


def _messages(value: Any, key: str, where: str) -> list[Message]:
    from ftkit.tasks.chat_formats import _message_list

    if not isinstance(value, list) or not value:
        raise FtkitError(
            f"field {key!r} must be text or a non-empty list of messages, got {type(value).__name__}",
            f'write {key} as a string or as [{{"role": ..., "content": ...}}, ...]',
            where=where,
        )
    return _message_list(value, key, where)


def _split_implicit(record: dict[str, Any], where: str) -> tuple[list[Message], str, str]:
    chosen, rejected = _messages(record["chosen"], "chosen", where), _messages(record["rejected"], "rejected", where)
    if chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise FtkitError(
            "without a 'prompt' field, chosen and rejected must be conversations that share every turn but their "
            "last, an assistant turn",
            'give the pair a "prompt" (the shared turns) and one assistant message each as chosen and rejected',
            where=where,
        )
    return _prompt_messages(chosen[:-1] or [], where), chosen[-1]["content"], rejected[-1]["content"]
