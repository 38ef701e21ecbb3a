"""Checks of peft.* that run before anything loads (config.check calls check_peft).

Each catches a setting that bitsandbytes, PEFT or Trainer would only refuse, or quietly get wrong, after the model
has loaded. Light on purpose: torch is imported only for a check that needs to know whether there is a GPU.
"""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig

from ftkit.errors import FtkitError

BIASES = ["none", "all", "lora_only"]  # PEFT's LoraConfig.bias choices


def check_peft(cfg: DictConfig) -> None:
    peft, method = cfg.peft, cfg.peft.method
    if method == "none":
        _check_full_fine_tuning(cfg)
        return
    if peft.bias not in BIASES:
        raise FtkitError(
            f"peft.bias={peft.bias!r} is not a PEFT bias mode (PEFT would refuse it once the model has loaded)",
            f"use one of {', '.join(BIASES)}, e.g. peft.bias=none",
            where="peft.bias",
        )
    _check_targets(peft.target_modules)
    if method == "qlora":
        _check_qlora(cfg)


TARGETS_FIX = "use peft.target_modules=all-linear, or a list of layer names, e.g. peft.target_modules=[q_proj,v_proj]"


def _check_targets(targets: object) -> None:
    """all-linear, a list of layer names, or one string PEFT reads as a regular expression over module names."""
    import re

    from omegaconf import ListConfig

    if isinstance(targets, ListConfig):
        names = list(targets)
        if not names:
            raise FtkitError(
                "peft.target_modules is empty, so LoRA would adapt no layer", TARGETS_FIX, where="peft.target_modules"
            )
        odd = [name for name in names if not isinstance(name, str) or not name.strip()]
        if odd:
            raise FtkitError(
                f"peft.target_modules holds {odd[0]!r}, which is not a layer name",
                TARGETS_FIX,
                where="peft.target_modules",
            )
        return
    if not isinstance(targets, str) or not targets.strip():
        raise FtkitError(
            f"peft.target_modules is {targets!r}: neither all-linear, a list of layer names nor a pattern",
            TARGETS_FIX,
            where="peft.target_modules",
        )
    try:
        re.compile(targets)
    except re.error as error:
        raise FtkitError(
            f"peft.target_modules={targets!r} is neither all-linear nor a valid regular expression ({error})",
            TARGETS_FIX,
            where="peft.target_modules",
        ) from None


def _check_full_fine_tuning(cfg: DictConfig) -> None:
    if cfg.peft.top_layers is not None:
        raise FtkitError(
            f"peft.top_layers={cfg.peft.top_layers} picks the layers that get LoRA adapters, but peft=none trains "
            "every weight of the model",
            "drop it (peft.top_layers=null) for full fine-tuning, or use peft=lora peft.top_layers=N",
            where="peft.top_layers",
        )
    if cfg.peft.get("loraplus_lr_ratio") is not None:
        raise FtkitError(
            f"peft.loraplus_lr_ratio={cfg.peft.loraplus_lr_ratio} sets a learning rate for LoRA's B matrices, but "
            "peft=none trains every weight of the model and has no LoRA matrices",
            "drop it (peft.loraplus_lr_ratio=null) for full fine-tuning, or use peft=lora",
            where="peft.loraplus_lr_ratio",
        )
    if cfg.model.dtype == "float16":
        raise FtkitError(
            "peft=none with model.dtype=float16 trains float16 weights directly: small AdamW updates round away, "
            "and trainer.fp16 mixed precision refuses float16 weights ('Attempting to unscale FP16 gradients')",
            "load float32 weights (model.dtype=float32, with trainer.fp16=true or trainer.bf16=true on a GPU for "
            "speed), or model.dtype=bfloat16",
            where="model.dtype",
        )


def _check_qlora(cfg: DictConfig) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise FtkitError(
            "peft=qlora loads the base model in 4 bits with bitsandbytes, which is not installed",
            "install it (pip install bitsandbytes), or use peft=lora",
            where="peft",
        )
    if cfg.model.dtype == "float16":
        import torch  # only here: most configs never reach this check

        if not torch.cuda.is_available():
            raise FtkitError(
                "peft=qlora with model.dtype=float16 on a machine without a GPU: float16 is only emulated on CPU, and "
                "QLoRA's preparation casts the unquantized weights (embeddings, norms) back to float32 anyway, so "
                "float16 would only round them",
                "use model.dtype=auto (float32 on CPU); the 4-bit layers compute in peft.compute_dtype",
                where="model.dtype",
            )
