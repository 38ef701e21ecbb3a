"""Launcher checks, before anything loads: the launcher's own values, and what this machine can run.

check_launcher (the values, and the launchers' rank variables) is called from ftkit.config.checks.check, the one
entry point of the config checks, so every command that composes a config refuses them. check_machine (DeepSpeed
installed, the accelerate config file there, GPUs or CPU cores, precision) only where a run or a dry run is about to
start: printing a config, or evaluating a run trained on another machine, needs none of it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ftkit.errors import FtkitError, closest
from ftkit.launch.accelerate import accelerate_preset
from ftkit.launch.cpu_threads import WAIT_POLICIES
from ftkit.launch.ranks import in_launched_rank, rank_variables
from ftkit.launch.slurm import sbatch_value, single_line

log = logging.getLogger(__name__)

ACCELERATE_LAUNCHERS = [
    "ddp",
    "deepspeed_zero2",
    "deepspeed_zero2_offload",
    "deepspeed_zero3",
    "deepspeed_zero3_offload",
    "fsdp",
]
LAUNCHERS = ["local", *ACCELERATE_LAUNCHERS, "slurm"]
# sbatch --mem: a whole number of megabytes, or with a K / M / G / T suffix (0: all of the node's memory).
SLURM_MEMORY = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
# sbatch --time: minutes | minutes:seconds | hours:minutes:seconds | days-hours[:minutes[:seconds]] (0: no limit).
SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
SLURM_NO_LIMIT = ("INFINITE", "UNLIMITED")
TIME_FORMATS = (
    "minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes or days-hours:minutes:seconds"
)


def check_launcher(cfg: DictConfig) -> None:
    """The launcher's values that no run can mean, and garbage in WORLD_SIZE / RANK / LOCAL_RANK; nothing of the
    machine is asked (check_machine does that)."""
    rank_variables()
    launcher = cfg.launcher
    _one_of("launcher.name", launcher.name, LAUNCHERS)
    # The slurm-only values too, whatever the launcher: a value that no run can mean is a mistake wherever it is.
    _one_of("launcher.backend", launcher.backend, ACCELERATE_LAUNCHERS)
    _at_least_one("launcher.num_processes", launcher.num_processes)
    _at_least_one("launcher.nodes", launcher.nodes)
    _at_least("launcher.gpus_per_node", launcher.gpus_per_node, 0, "launcher.gpus_per_node=8 (0: ask for no GPU)")
    if launcher.cpus_per_task is not None:
        _at_least_one("launcher.cpus_per_task", launcher.cpus_per_task)
    if launcher.cpu_threads is not None:
        _at_least_one("launcher.cpu_threads", launcher.cpu_threads)
    if launcher.omp_wait_policy is not None:
        _one_of("launcher.omp_wait_policy", launcher.omp_wait_policy, WAIT_POLICIES)
    _check_port(launcher.main_process_port)
    _check_slurm_time(launcher.time)
    _check_slurm_memory(launcher.mem)
    for key in ("job_name", "partition", "account"):
        if launcher[key] is not None:
            sbatch_value(f"launcher.{key}", launcher[key])  # one line, no double quote: it goes on an #SBATCH line
    for extra in launcher.sbatch_extra:
        single_line("launcher.sbatch_extra", str(extra))
    if launcher.name == "slurm" and launcher.gpus_per_node and launcher.num_processes > launcher.gpus_per_node:
        raise FtkitError(
            f"launcher.num_processes={launcher.num_processes} processes per node, but "
            f"launcher.gpus_per_node={launcher.gpus_per_node}: each process needs a GPU of its own",
            f"set launcher.num_processes={launcher.gpus_per_node} (one per GPU), or ask for more GPUs",
            where="launcher.num_processes",
        )
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
    trainer = cfg.trainer
    if trainer.get("bf16") and trainer.get("fp16"):
        raise FtkitError(
            "trainer.bf16 and trainer.fp16 are both true", "pick one: trainer.bf16=true or trainer.fp16=true"
        )


def check_machine(cfg: DictConfig) -> None:
    """What this machine needs for the run: DeepSpeed installed, the accelerate config file, GPUs or CPU cores and
    the precision. Only before a run or a dry run starts; check_launcher has already passed the values."""
    launcher = cfg.launcher
    if launcher.config_file is not None and not Path(launcher.config_file).is_file():
        raise FtkitError(
            f"launcher.config_file={launcher.config_file} is not a file here (seen from {Path.cwd()}); accelerate "
            "would stop on it once the ranks start",
            "give the path of your accelerate config (absolute, or relative to where you run ftkit; ~ is not "
            "expanded), or leave launcher.config_file out for ftkit's own (ftkit/launch/configs/accelerate/)",
            where="launcher.config_file",
        )
    chosen = accelerate_preset(cfg)
    if chosen.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise FtkitError(
            f"launcher {chosen} needs DeepSpeed, which is not installed",
            "install it with: pip install 'ftkit[deepspeed]' (or pip install deepspeed)",
            where="launcher",
        )
    # The submitting machine of a SLURM job, and a rank that is already running, are not where devices matter.
    if launcher.name != "slurm" and not in_launched_rank() and _needs_device_check(cfg):
        try:
            _check_devices(cfg, chosen)
        except FtkitError as error:
            if not cfg.get("dry_run"):
                raise
            # A dry run may plan for the machine the run is meant for (8 GPUs, say): say so, and go on planning.
            log.warning("dry run: this machine could not start the run itself: %s", error)


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
    _at_least(key, value, 1, f"{key}=2")


def _at_least(key: str, value: Any, minimum: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FtkitError(f"{key} must be a whole number >= {minimum}, got {value!r}", f"e.g. {example}", where=key)


def _check_port(port: int | None) -> None:
    # 0, like null, has ftkit pick a free port (accelerate_command and the sbatch script both read it that way).
    if port is not None and not 0 <= port <= 65535:
        raise FtkitError(
            f"launcher.main_process_port={port} is not a TCP port (1 to 65535; 0, like null, picks a free one)",
            "give a free port, e.g. launcher.main_process_port=29500, or leave it null to have ftkit pick one",
            where="launcher.main_process_port",
        )


def _check_slurm_time(value: str) -> None:
    """sbatch --time's formats; minutes and seconds after another field are below 60, hours after days below 24."""
    text = str(value).strip()
    match = SLURM_TIME.fullmatch(text)
    fine = text.upper() in SLURM_NO_LIMIT
    if match:
        days, first, second, third = match.groups()
        if days is not None:  # days-hours[:minutes[:seconds]]
            fine = int(first) < 24 and all(int(part) < 60 for part in (second, third) if part is not None)
        else:  # minutes | minutes:seconds | hours:minutes:seconds: every field after the first is below 60
            fine = all(int(part) < 60 for part in (second, third) if part is not None)
    if not fine:
        raise FtkitError(
            f"launcher.time={value!r} is not a SLURM time limit ({TIME_FORMATS}; minutes and seconds below 60)",
            "give e.g. launcher.time=04:00:00 (4 hours), launcher.time=90 (minutes) or launcher.time=2-00:00:00 "
            "(2 days)",
            where="launcher.time",
        )


def _check_slurm_memory(value: str | None) -> None:
    if value is not None and not SLURM_MEMORY.fullmatch(str(value).strip()):
        raise FtkitError(
            f"launcher.mem={value!r} is not a SLURM memory size: a whole number with an optional K, M, G or T "
            "suffix (megabytes without one)",
            "give e.g. launcher.mem=64G, or leave it null for the partition's default",
            where="launcher.mem",
        )
