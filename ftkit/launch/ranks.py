"""Which process this is: the launching one, or a rank started by accelerate / torchrun (from their variables).

The launchers' variables WORLD_SIZE, RANK and LOCAL_RANK are read here and nowhere else, each checked: a value that
is not a whole number in its range is the user's mistake, refused naming the variable (exit 2), not a traceback.
Nothing here imports torch: the launching process asks before anything loads.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from ftkit import run_dir
from ftkit.errors import FtkitError

RANK_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def _read(name: str, minimum: int) -> int | None:
    """The whole number in environment variable name, None when it is unset; garbage is refused."""
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise FtkitError(
            f"{name}={text!r} is not a whole number >= {minimum}",
            f"{name} is set by a launcher (accelerate, torchrun) for each rank it starts; unset it for a run of "
            f"its own (unset {name}), or let ftkit start the ranks: ftkit train launcher=ddp launcher.num_processes=N",
            where=f"environment variable {name}",
        )
    return value


def rank_variables() -> tuple[int, int, int | None]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) of this process, checked: (1, 0, None) when no launcher started it."""
    world = _read("WORLD_SIZE", minimum=1)
    rank = _read("RANK", minimum=0)
    local = _read("LOCAL_RANK", minimum=0)
    size = 1 if world is None else world
    for name, value in (("RANK", rank), ("LOCAL_RANK", local)):
        if value is not None and value >= size:
            said = f"WORLD_SIZE={world}" if world is not None else "WORLD_SIZE is unset (one process)"
            raise FtkitError(
                f"{name}={value}, but {said}: ranks are numbered from 0 to WORLD_SIZE - 1",
                f"unset {name} (unset {name}) for a run of its own, or set WORLD_SIZE and {name} together as a "
                "launcher does; ftkit starts ranks itself with launcher=ddp launcher.num_processes=N",
                where=f"environment variable {name}",
            )
    return size, 0 if rank is None else rank, local


def launched_world_size() -> int:
    """How many ranks the launcher that started this process started (WORLD_SIZE); 1 without a launcher."""
    return rank_variables()[0]


def rank() -> int:
    return rank_variables()[1]


def local_rank() -> int | None:
    """This rank's number on its machine (LOCAL_RANK), which picks its GPU; None when no launcher started it."""
    return rank_variables()[2]


def in_launched_rank() -> bool:
    return local_rank() is not None


def is_main_rank() -> bool:
    return rank() == 0


def log_file_name() -> str:
    """This process's log file in the run directory (a Hydra resolver in conf/train.yaml)."""
    return run_dir.log_file_name(rank())


def world_size(cfg: DictConfig) -> int:
    """How many ranks this config's launcher starts: num_processes, times the nodes under slurm."""
    nodes = cfg.launcher.nodes if cfg.launcher.name == "slurm" else 1
    return int(cfg.launcher.num_processes) * int(nodes)
