"""Launch: run in this process (launcher=local), or re-run this same command under `accelerate launch` or sbatch.

The launching process resolves the run directory once (Hydra's) and hands it to every rank as
`hydra.run.dir=<dir>` with the user's overrides unchanged, so a laptop run and a 64-GPU run take the same path
through ftkit.training.run. A rank knows it was launched from LOCAL_RANK (set by accelerate / torchrun) and does not
launch again. While the ranks run, this process passes a SIGTERM on to them and waits.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ftkit.launch.accelerate import accelerate_command
from ftkit.launch.checks import check_machine
from ftkit.launch.ranks import in_launched_rank, world_size

log = logging.getLogger("ftkit")


def relaunch(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> int | None:
    """Re-run this command under accelerate (or submit it to SLURM). None: go on in this process."""
    # Every way into a run passes here (a single run, each sweep job): what the machine lacks is refused first.
    check_machine(cfg)
    if cfg.launcher.name == "local" or in_launched_rank():
        return None
    run_dir = run_dir.resolve()
    if cfg.launcher.name == "slurm":
        from ftkit.launch.slurm import write_and_submit

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
