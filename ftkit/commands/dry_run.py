"""`ftkit train ... dry_run=true`: what a run would do, without loading weights, training or writing anything.

Prints the resolved config, the exact launch command, data statistics (examples, tokens, longest record, how many
records model.max_length would truncate), the parameter counts of the model with its PEFT method, and a memory
estimate per process. The model is built on the meta device from its config, so nothing big is read or allocated.
The data checks of a real run (ftkit.training.data_checks: duplicates, leakage, too-long examples) run here too,
so a dry run refuses what the run would.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.config import trainer_fields
from ftkit.launch.accelerate import accelerate_command, accelerate_preset
from ftkit.launch.ranks import world_size
from ftkit.run_dir import SBATCH_SCRIPT

# Bytes per parameter of the frozen base weights, by model.dtype (fp32 on CPU when "auto").
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}
# bitsandbytes 4-bit: half a byte per weight plus one absmax per 64 weights (fp32, or 8-bit when double-quantized).
QLORA_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}
# Trained parameters carry fp32 master weights, gradients and two AdamW moments.
TRAINED_BYTES = 4 + 4 + 8


def dry_run(cfg: DictConfig, overrides: list[str]) -> None:
    from transformers import AutoTokenizer

    from ftkit.data.splits import describe_split, load_splits
    from ftkit.recipes import get_recipe_class
    from ftkit.training.data_checks import check_lengths

    section("Config")
    print(OmegaConf.to_yaml(cfg, resolve=True))

    section("Launch")
    print(planned_launch(cfg, overrides))

    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = load_splits(recipe, cfg)
    from ftkit.training.chat_template import end_of_turn_check, fold_system_role, stop_token_ids
    from ftkit.training.models import model_source_and_config, preset_config

    try:
        source, config = model_source_and_config(cfg)
        tokenizer = AutoTokenizer.from_pretrained(**source)
        fold_system_role(tokenizer)
        end_of_turn_check(cfg, recipe, splits["train"])(tokenizer, stop_token_ids(tokenizer, source))
    except OSError as error:  # e.g. a hub id on a machine without network, not in the HF cache
        if not cfg.model.architecture:
            raise
        config, tokenizer = preset_config(cfg.model), None
        print(
            f"\n{cfg.model.path} cannot be read here ({str(error).splitlines()[0][:160]}): planned from "
            "model.architecture, without its tokenizer, so the data table counts records only and the memory "
            "estimate assumes examples of model.max_length tokens."
        )
    if tokenizer is None:
        section(f"Data (model.max_length={cfg.model.max_length}; lengths are checked when the run starts)")
    else:
        section(f"Data (tokens with {cfg.model.name}'s chat template; model.max_length={cfg.model.max_length})")
    data = cfg.recipe.get("data")
    how = describe_split(data) if data is not None else None
    if how:
        print(f"Splits: {how}")
    if cfg.recipe.get("labels") == "auto":  # read from data: the run writes the list into its config.yaml
        labels = ", ".join(recipe.labels)
        print(f"Labels: read from the training split (recipe.labels=auto), most frequent first: {labels}")
    for line in training_split_plan(cfg, splits["train"]):
        print(line)
    if tokenizer is None:
        print(table(["split", "examples"], [[name, len(records)] for name, records in splits.items()]))
        longest = cfg.model.max_length
    else:
        stats = {
            name: data_statistics(recipe, tokenizer, records, cfg.model.max_length) for name, records in splits.items()
        }
        print(
            table(
                ["split", "examples", "tokens", "mean", "longest", "truncated"],
                [[n, *s.values()] for n, s in stats.items()],
            )
        )
        # After the table, so a refusal of too-long examples comes with the lengths that explain it.
        check_lengths(recipe, cfg, tokenizer, splits["train"], cache=False)
        longest = min(max(s["longest"] for s in stats.values()), cfg.model.max_length)

    section("Parameters")
    counts = parameter_counts(cfg, config)
    print(
        table(
            ["", "parameters"],
            [["model", f"{counts['total']:,}"], [f"trainable ({cfg.peft.method})", f"{counts['trainable']:,}"]],
        )
    )

    section("Memory estimate per process (training, before framework overhead)")
    estimate = memory_estimate(cfg, config, counts, longest)
    print(table(["part", "MB"], [[k, f"{v / 2**20:,.0f}"] for k, v in estimate.items()]))
    print(
        "\nActivations follow Korthikanti et al. (2022) for a batch of the longest sequence; add ~0.5 GB for "
        "Python/torch (and the CUDA context on a GPU). Nothing was loaded, trained or written (dry_run=true)."
    )


def training_split_plan(cfg: DictConfig, train: list[dict[str, Any]]) -> list[str]:
    """What data.augment and data.balance will do to the training split (the synonyms file is read, so a bad one is
    refused here too); augmentation's new records are made at the start of the run, so only their number is asked."""
    from ftkit.data.augment import read_synonyms
    from ftkit.data.balance import balance

    lines = []
    if cfg.data.augment != "none":
        if cfg.data.augment == "eda" and cfg.data.synonyms:
            groups = read_synonyms(cfg.data.synonyms)
            lines.append(f"Synonyms: {len(groups)} words with synonyms in {cfg.data.synonyms}")
        paraphrase = cfg.data.augment == "paraphrase"
        cost = ", generated by the base model (about 1 s per record on a CPU)" if paraphrase else ""
        lines.append(
            f"Augmentation (data.augment={cfg.data.augment}): up to {cfg.data.augment_factor:g} new record(s) per "
            f"training record, about {round(len(train) * cfg.data.augment_factor)}{cost}; validation and test untouched"
        )
    if cfg.data.balance != "none":
        _, found = balance(train, cfg.data.balance, cfg.data.seed)
        weights = found.get("class_weights")
        if cfg.data.augment != "none":  # the run balances the augmented split, whose counts are known only then
            after = "applied after augmentation, to the split it leaves"
        elif weights:
            after = f"the loss weighted by class { ({label: round(w, 3) for label, w in weights.items()}) }"
        else:
            after = f"after: {found['counts_after']}"
        lines.append(
            f"Balancing (data.balance={cfg.data.balance}): training records per class {found['counts_before']}; {after}"
        )
    return lines


def section(title: str) -> None:
    print(f"\n== {title} ==")


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def planned_launch(cfg: DictConfig, overrides: list[str]) -> str:
    # As the launching process would: Hydra's own overrides are not passed on, the run directory is.
    user = [o for o in overrides if not o.lstrip("+").startswith(("dry_run", "hydra."))]
    given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra.run.dir=")]
    run_dir = Path(given[-1]).resolve() if given else Path("<run dir>")
    if cfg.launcher.name == "local":
        return shlex.join(["ftkit", "train", *overrides]) + "    (in this process)"
    if cfg.launcher.name == "slurm":
        from ftkit.launch.slurm import render_sbatch

        return f"sbatch {run_dir / SBATCH_SCRIPT}, with:\n{render_sbatch(cfg, run_dir, user, write_files=False)}"
    return shlex.join(accelerate_command(cfg, run_dir, user, write_files=False))


def data_statistics(recipe: Any, tokenizer: Any, records: list[dict[str, Any]], max_length: int) -> dict[str, Any]:
    from ftkit.training.data_checks import example_lengths

    # as the trainer sees them: prompt + completion, whole messages, or a pair's longer answer
    lengths = example_lengths(tokenizer, [recipe.to_example(r) for r in records]) if records else []
    return {
        "examples": len(lengths),
        "tokens": sum(lengths),
        "mean": round(sum(lengths) / max(len(lengths), 1), 1),
        "longest": max(lengths, default=0),
        "truncated": sum(n > max_length for n in lengths),
    }


def parameter_counts(cfg: DictConfig, config: Any) -> dict[str, int]:
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.training import models

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if cfg.peft.method == "none":
        return {"total": total, "trainable": total, "embedding": model.get_input_embeddings().weight.numel()}
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft asks the meta model deprecated questions; not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, models.adapter_config(cfg.peft, model))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "embedding": model.get_input_embeddings().weight.numel()}


def memory_estimate(cfg: DictConfig, config: Any, counts: dict[str, int], seq: int) -> dict[str, float]:
    text = config.get_text_config()
    hidden, layers, heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
    batch = int(cfg.trainer.get("per_device_train_batch_size", 8))
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if cfg.trainer.get("bf16") else "float32")
    act_bytes = 2 if dtype in ("bfloat16", "float16") or cfg.trainer.get("bf16") or cfg.trainer.get("fp16") else 4
    frozen = counts["total"] - (counts["trainable"] if cfg.peft.method == "none" else 0)
    if cfg.peft.method == "qlora":
        # Linear weights are quantized; embeddings (and a tied head) stay in the compute dtype.
        linear = counts["total"] - counts["embedding"]
        weights = linear * QLORA_BYTES[bool(cfg.peft.double_quant)] + counts["embedding"] * DTYPE_BYTES.get(dtype, 4)
    else:
        weights = frozen * DTYPE_BYTES.get(dtype, 4)
    trained = counts["trainable"] * TRAINED_BYTES
    chosen, ranks = accelerate_preset(cfg), world_size(cfg)
    if cfg.launcher.name != "local" and ("zero" in chosen or chosen == "fsdp"):
        trained /= ranks  # ZeRO-2/3 and FSDP shard gradients and optimizer state
        if "zero3" in chosen or chosen == "fsdp":
            weights /= ranks
    if trainer_fields.activation_checkpointing(cfg.trainer):
        per_layer = batch * seq * hidden * act_bytes  # only each layer's input is kept
        activations = layers * per_layer + batch * seq * (34 * hidden + 5 * heads * seq) * act_bytes / 2
    else:
        activations = layers * batch * seq * (34 * hidden + 5 * heads * seq) * act_bytes / 2
    logits = 2 * batch * seq * text.vocab_size * 4  # fp32 logits and their gradient
    parts = {
        "base weights": weights,
        "trained weights + grads + AdamW": trained,
        "activations": activations,
        "logits": logits,
    }
    parts["total"] = sum(parts.values())
    return parts
