"""Launch: run in this process (launcher=local), or re-run this same command under `accelerate launch` or sbatch.

The launching process resolves the run directory once (Hydra's) and hands it to every rank as
`hydra.run.dir=<dir>` with the user's overrides unchanged, so a laptop run and a 64-GPU run take the same path
through ftkit.train. A rank knows it was launched from LOCAL_RANK (set by accelerate / torchrun) and does not
launch again. Files: launch/accelerate/<launcher>.yaml (accelerate configs) and launch/deepspeed/*.json
(DeepSpeed templates; ftkit renders a concrete copy into the run directory).

Nothing here imports torch at module level: check_launcher() runs before any model or data loads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.errors import FtkitError, closest

log = logging.getLogger("ftkit")

ACCELERATE_LAUNCHERS = [
    "ddp",
    "deepspeed_zero2",
    "deepspeed_zero2_offload",
    "deepspeed_zero3",
    "deepspeed_zero3_offload",
    "fsdp",
]
LAUNCHERS = ["local", *ACCELERATE_LAUNCHERS, "slurm"]


def in_launched_rank() -> bool:
    return "LOCAL_RANK" in os.environ


def is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log_file_name() -> str:
    """train.log for the launching process and rank 0; train.rank<N>.log for the other ranks (Hydra resolver)."""
    rank = int(os.environ.get("RANK", "0"))
    return "train.log" if rank == 0 else f"train.rank{rank}.log"


def launch_files() -> Path:
    """The launch/ folder (installed as the package ftkit.launch)."""
    return Path(str(resources.files("ftkit.launch")))


def backend(cfg: DictConfig) -> str:
    """The accelerate launcher that runs the ranks: the launcher itself, or launcher.backend under slurm."""
    return str(cfg.launcher.backend if cfg.launcher.name == "slurm" else cfg.launcher.name)


def world_size(cfg: DictConfig) -> int:
    nodes = cfg.launcher.nodes if cfg.launcher.name == "slurm" else 1
    return int(cfg.launcher.num_processes) * int(nodes)


# --------------------------------------------------------------------------------------------------------
# Checks, before anything loads
# --------------------------------------------------------------------------------------------------------


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
    chosen = backend(cfg)
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


# --------------------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------------------


def relaunch(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> int | None:
    """Re-run this command under accelerate (or submit it to SLURM). None: go on in this process."""
    if cfg.launcher.name == "local" or in_launched_rank():
        return None
    run_dir = run_dir.resolve()
    if cfg.launcher.name == "slurm":
        from ftkit.slurm import write_and_submit

        write_and_submit(cfg, run_dir, overrides)
        return 0
    command = accelerate_command(cfg, run_dir, overrides)
    log.info("launching %d processes: %s", world_size(cfg), shlex.join(command))
    return wait_passing_on_signals(subprocess.Popen(command, env=rank_environment()))


def wait_passing_on_signals(process: subprocess.Popen) -> int:
    """Wait for the launched ranks; they, not this process, answer SIGINT / SIGTERM (checkpoint, then exit).

    Ctrl-C already reaches every rank (one process group), so this process ignores it rather than die with a
    traceback; a SIGTERM sent to this process alone (kill <pid>, a scheduler) is passed on to the launcher.
    """
    received: list[int] = []

    def pass_on(signum: int, frame: Any) -> None:
        received.append(signum)
        if signum == signal.SIGTERM:
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = process.wait()
        # The ranks saved and stopped; torchrun itself reports a signal as a failure (exit 1).
        return 128 + received[0] if received and returncode else returncode
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def rank_environment() -> dict[str, str]:
    env = dict(os.environ)
    # torchrun sets 1 thread per rank when nothing is set, and says so on every launch; say it once, here.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def accelerate_command(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    machine: dict[str, str] | None = None,
    write_files: bool = True,
) -> list[str]:
    """`accelerate launch ... -m ftkit.cli train <overrides> hydra.run.dir=<run_dir>` for this launcher.

    machine: num_machines / machine_rank / main_process_ip / main_process_port for a multi-node launch (SLURM
    passes shell variables such as $SLURM_NODEID here). write_files=False (dry run) names the rendered DeepSpeed
    config without writing it.
    """
    chosen = backend(cfg)
    config_file = cfg.launcher.config_file or str(launch_files() / "accelerate" / f"{chosen}.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file]
    command += ["--num_processes", str(world_size(cfg)), "--mixed_precision", mixed_precision(cfg)]
    if chosen.startswith("deepspeed"):
        rendered = write_deepspeed_config(cfg, run_dir) if write_files else run_dir / "deepspeed.json"
        command += ["--deepspeed_config_file", str(rendered)]
    if machine:
        for key, value in machine.items():
            command += [f"--{key}", value]
    else:
        command += ["--num_machines", "1", "--main_process_port", str(cfg.launcher.main_process_port or free_port())]
    return [*command, "-m", "ftkit.cli", "train", *overrides, f"hydra.run.dir={run_dir}"]


def mixed_precision(cfg: DictConfig) -> str:
    return "bf16" if cfg.trainer.get("bf16") else "fp16" if cfg.trainer.get("fp16") else "no"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_deepspeed_config(cfg: DictConfig, run_dir: Path) -> Path:
    """Render launch/deepspeed/<stage>.json with this run's values for its "auto" fields, into the run directory.

    The templates keep "auto" so they also work for a user's own `accelerate launch`; the rendered copy records
    exactly what the run used and loads with DeepSpeed's own config class. train_batch_size is left out: DeepSpeed
    derives it from the micro batch, accumulation and world size.
    """
    stage = backend(cfg).removeprefix("deepspeed_")
    template = json.loads((launch_files() / "deepspeed" / f"{stage}.json").read_text())
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer, dict)
    values = {
        "train_micro_batch_size_per_gpu": trainer.get("per_device_train_batch_size", 8),
        "gradient_accumulation_steps": trainer.get("gradient_accumulation_steps", 1),
        "gradient_clipping": trainer.get("max_grad_norm", 1.0),
    }
    rendered = {key: values.get(key, value) for key, value in template.items() if key != "train_batch_size"}
    rendered["bf16"] = {"enabled": bool(trainer.get("bf16", False))}
    rendered["fp16"] = {"enabled": bool(trainer.get("fp16", False))}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "deepspeed.json"
    path.write_text(json.dumps(rendered, indent=2) + "\n")
    return path


@contextmanager
def whole_model_on_each_rank(args: Any) -> Iterator[None]:
    """Load the base model whole on every rank, also under DeepSpeed ZeRO-3.

    accelerate leaves transformers' ZeRO-3 hook set even with zero3_init_flag false, so from_pretrained would
    shard the weights as they load, and ftkit's scoring of the base model (before training, outside the
    DeepSpeed engine) would then see empty tensors. The engine shards the model when training starts.
    """
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None or plugin.zero3_init_flag:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()
