"""The `accelerate launch` command for a launcher, and the DeepSpeed config it renders into the run directory.

Files: ftkit/launch/configs/accelerate/<launcher>.yaml (accelerate configs) and ftkit/launch/configs/deepspeed/*.json
(DeepSpeed templates; ftkit renders a concrete copy with this run's values into the run directory).
"""

from __future__ import annotations

import json
import socket
import sys
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftkit.launch.ranks import world_size
from ftkit.run_dir import RunDir


def launch_files() -> Path:
    """The launchers' preset files: accelerate and DeepSpeed configs, the sbatch template (ftkit/launch/configs)."""
    return Path(str(resources.files("ftkit.launch"))) / "configs"


def accelerate_preset(cfg: DictConfig) -> str:
    """The accelerate launcher that runs the ranks: the launcher itself, or launcher.backend under slurm."""
    return str(cfg.launcher.backend if cfg.launcher.name == "slurm" else cfg.launcher.name)


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
    chosen = accelerate_preset(cfg)
    config_file = cfg.launcher.config_file or str(launch_files() / "accelerate" / f"{chosen}.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file]
    command += ["--num_processes", str(world_size(cfg)), "--mixed_precision", mixed_precision(cfg)]
    if chosen.startswith("deepspeed"):
        rendered = write_deepspeed_config(cfg, run_dir) if write_files else RunDir(run_dir).deepspeed_config
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
    """Render configs/deepspeed/<stage>.json with this run's values for its "auto" fields, into the run directory.

    The templates keep "auto" so they also work for a user's own `accelerate launch`; the rendered copy records
    exactly what the run used and loads with DeepSpeed's own config class. train_batch_size is left out: DeepSpeed
    derives it from the micro batch, accumulation and world size.
    """
    stage = accelerate_preset(cfg).removeprefix("deepspeed_")
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
    path = RunDir(run_dir).deepspeed_config
    path.write_text(json.dumps(rendered, indent=2) + "\n")
    return path
