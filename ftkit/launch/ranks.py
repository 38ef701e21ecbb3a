"""Which process this is: the launching one, or a rank started by accelerate / torchrun (from their variables).

Nothing here imports torch: the launching process asks before anything loads.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from ftkit import run_dir


def in_launched_rank() -> bool:
    return "LOCAL_RANK" in os.environ


def is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def log_file_name() -> str:
    """This process's log file in the run directory (a Hydra resolver in conf/train.yaml)."""
    return run_dir.log_file_name(int(os.environ.get("RANK", "0")))


def world_size(cfg: DictConfig) -> int:
    nodes = cfg.launcher.nodes if cfg.launcher.name == "slurm" else 1
    return int(cfg.launcher.num_processes) * int(nodes)
