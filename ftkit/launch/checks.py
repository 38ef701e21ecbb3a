"""Launcher checks, before anything loads: the launcher's own values, and what the machine can run.

Called from ftkit.config.checks.check, the one entry point of the config checks.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from omegaconf import DictConfig

from ftkit.errors import FtkitError, closest
from ftkit.launch.accelerate import accelerate_preset
from ftkit.launch.ranks import in_launched_rank

ACCELERATE_LAUNCHERS = [
    "ddp",
    "deepspeed_zero2",
    "deepspeed_zero2_offload",
    "deepspeed_zero3",
    "deepspeed_zero3_offload",
    "fsdp",
]
LAUNCHERS = ["local", *ACCELERATE_LAUNCHERS, "slurm"]


def check_launcher(cfg: DictConfig) -> None:
    launcher = cfg.launcher
    _one_of("launcher.name", launcher.name, LAUNCHERS)
    if launcher.name == "slurm":
        _one_of("launcher.backend", launcher.backend, ACCELERATE_LAUNCHERS)
        _at_least_one("launcher.nodes", launcher.nodes)
        if launcher.gpus_per_node and launcher.num_processes > launcher.gpus_per_node:
            raise FtkitError(
                f"launcher.num_processes={launcher.num_processes} processes per node, but "
                f"launcher.gpus_per_node={launcher.gpus_per_node}: each process needs a GPU of its own",
                f"set launcher.num_processes={launcher.gpus_per_node} (one per GPU), or ask for more GPUs",
                where="launcher.num_processes",
            )
    _at_least_one("launcher.num_processes", launcher.num_processes)
    if launcher.name == "local" and launcher.num_processes != 1:
        raise FtkitError(
            f"launcher=local runs one process, but launcher.num_processes={launcher.num_processes}",
            "pick a multi-process launcher, e.g. launcher=ddp launcher.num_processes=2",
            where="launcher.num_processes",
        )
    chosen = accelerate_preset(cfg)
    if cfg.peft.method == "qlora" and chosen.startswith("deepspeed_zero3"):
        raise FtkitError(
            f"peft=qlora cannot run under {chosen}: ZeRO-3 partitions every parameter across ranks, and bitsandbytes "
            "4-bit weights are packed integer tensors with their quantization state beside them, which ZeRO-3 "
            "cannot shard or gather (the load fails or the weights come back wrong)",
            "use launcher=deepspeed_zero2 (shards optimizer state and gradients, keeps the 4-bit weights whole) "
            "or launcher=ddp; or keep ZeRO-3 with peft=lora",
            where="peft",
        )
    if cfg.peft.method == "qlora" and chosen == "fsdp":
        # Refused rather than guessed: sharding 4-bit weights needs bnb_4bit_quant_storage equal to the training
        # dtype and a load without device_map, a path no GPU here could verify.
        raise FtkitError(
            "peft=qlora with launcher=fsdp is not supported yet: FSDP would shard bitsandbytes' packed 4-bit weights, "
            "which needs them stored in the training dtype (bnb_4bit_quant_storage) and loaded without a device map, "
            "and ftkit does not set that up",
            "use launcher=ddp or launcher=deepspeed_zero2 with peft=qlora (each GPU holds the whole 4-bit base), or "
            "launcher=fsdp with peft=lora",
            where="peft",
        )
    if chosen.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise FtkitError(
            f"launcher {chosen} needs DeepSpeed, which is not installed",
            "install it with: pip install 'ftkit[deepspeed]' (or pip install deepspeed)",
            where="launcher",
        )
    trainer = cfg.trainer
    if trainer.get("bf16") and trainer.get("fp16"):
        raise FtkitError(
            "trainer.bf16 and trainer.fp16 are both true", "pick one: trainer.bf16=true or trainer.fp16=true"
        )
    # The submitting machine of a SLURM job, and a rank that is already running, are not where devices matter.
    if launcher.name != "slurm" and not in_launched_rank() and _needs_device_check(cfg):
        _check_devices(cfg, chosen)


def _needs_device_check(cfg: DictConfig) -> bool:
    return cfg.launcher.name != "local" or bool(cfg.trainer.get("bf16")) or bool(cfg.trainer.get("fp16"))


def _check_devices(cfg: DictConfig, chosen: str) -> None:
    import torch  # only here: a plain local fp32 run never pays for this import at check time

    processes = int(cfg.launcher.num_processes)
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if processes > gpus:
            raise FtkitError(
                f"launcher.num_processes={processes}, but this machine has {gpus} GPU(s): each process needs its own",
                f"set launcher.num_processes={gpus}, or run on a machine (or SLURM node) with more GPUs",
                where="launcher.num_processes",
            )
        if cfg.trainer.get("bf16") and not torch.cuda.is_bf16_supported():
            raise FtkitError(
                f"trainer.bf16=true, but {torch.cuda.get_device_name(0)} has no bfloat16 support",
                "use trainer.fp16=true trainer.bf16=false on this GPU (pre-Ampere), or fp32 (both false)",
                where="trainer.bf16",
            )
        return
    cores = os.cpu_count() or 1
    if processes > cores:
        raise FtkitError(
            f"launcher.num_processes={processes} CPU ranks on a machine with {cores} cores and no GPU",
            f"use at most launcher.num_processes={cores} here, or run on GPUs",
            where="launcher.num_processes",
        )
    if cfg.trainer.get("fp16"):
        raise FtkitError(
            "trainer.fp16=true needs a CUDA GPU; this machine has none",
            "train in fp32 on CPU (trainer.fp16=false), or trainer.bf16=true if the CPU supports bfloat16",
            where="trainer.fp16",
        )
    if cfg.trainer.get("bf16") and not torch.backends.mkldnn.is_available():
        raise FtkitError(
            "trainer.bf16=true, but this CPU build of torch has no oneDNN (mkldnn) bfloat16 support",
            "train in fp32: trainer.bf16=false",
            where="trainer.bf16",
        )
    if chosen == "fsdp":
        raise FtkitError(
            "launcher=fsdp needs CUDA GPUs: on CPU, accelerate runs an FSDP config as plain DDP without sharding "
            "anything (measured with accelerate 1.15)",
            "on CPU use launcher=ddp or launcher=deepspeed_zero2 / deepspeed_zero3; use fsdp on GPUs",
            where="launcher",
        )
    if chosen.endswith("_offload"):
        raise FtkitError(
            f"launcher={chosen} offloads optimizer state (and parameters) from GPU to CPU memory; there is no GPU "
            "here, so there is nothing to offload",
            f"on CPU use launcher={chosen.removesuffix('_offload')}",
            where="launcher",
        )


def _one_of(key: str, value: Any, choices: list[str]) -> None:
    if value not in choices:
        raise FtkitError(
            f"{key}={value!r} is not supported",
            f"use one of {', '.join(choices)}; {closest(str(value), choices)}",
            where=key,
        )


def _at_least_one(key: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise FtkitError(f"{key} must be a whole number >= 1, got {value!r}", f"e.g. {key}=2", where=key)
