"""`ftkit train`: compose and check the config, pick the run directory (or the run to resume), then run Hydra.

    ftkit train [hydra overrides]            one run; `-m` / `--multirun` for a sweep (ftkit.commands.sweep)

Before Hydra creates anything, the overrides are composed and checked once (a mistake exits 2 with nothing
written), a resume is planned (ftkit.commands.resume), and a directory that holds a run is refused. Then Hydra
composes the same overrides again for its run, and the task function trains here (ftkit.training.run) or
re-runs this command under the launcher (ftkit.launch.relaunch). A sweep's jobs are checked one by one there.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from ftkit.config.checks import check
from ftkit.config.compose import compose, register_schemas
from ftkit.config.overrides import INFO_ONLY, given_value, rewrite_trainer_overrides, split_args
from ftkit.errors import LOG_FORMAT, FtkitError, exit_on_user_error
from ftkit.run_dir import RunDir


def main(args: list[str]) -> None:
    flags, overrides = split_args(args)
    overrides = rewrite_trainer_overrides(overrides)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    if not multirun and not INFO_ONLY.intersection(flags):
        cfg = compose(overrides)
        check(cfg)
        check_shared_run_dir(overrides)
        if cfg.resume not in (False, None):
            from ftkit.commands import resume

            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # before Hydra's logging starts
            # The run's own directory and checkpoint, and its config (which the resumed run must equal)
            run_dir, overrides = resume.plan(cfg, overrides)
            cfg = compose(overrides)
            check(cfg)
            resume.check_same_config(cfg, run_dir)
        else:
            refuse_existing_run_dir(overrides)
        if cfg.dry_run:
            from ftkit.commands.dry_run import dry_run

            dry_run(cfg, overrides)
            return
    elif multirun and given_value(overrides, "resume") is not None:
        raise FtkitError(
            "resume continues one run, and a sweep (-m) starts many",
            "resume each unfinished job on its own: ftkit train resume=<sweep dir>/<job number>",
            where="resume",
        )
    from ftkit.commands.sweep import register_resolvers

    register_schemas()
    register_resolvers()
    sys.argv = ["ftkit train", *flags, *overrides]
    hydra_train()


def check_shared_run_dir(overrides: list[str]) -> None:
    """Ranks started by hand (accelerate launch / torchrun) would each pick a run directory from their own clock."""
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks > 1 and given_value(overrides, "hydra.run.dir") is None:
        raise FtkitError(
            f"this is one of {ranks} ranks started by a launcher, and no run directory was given, so each rank "
            "would write into its own time-stamped directory",
            "add hydra.run.dir=<dir> to the command (the same for every rank), or let ftkit launch the ranks: "
            "ftkit train launcher=ddp launcher.num_processes=N",
            where="hydra.run.dir",
        )


def refuse_existing_run_dir(overrides: list[str]) -> None:
    """ftkit never writes into a finished (or started) run's directory: a new run gets a new one (resume aside)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks of one launched run share the launcher's directory
        return
    given = given_value(overrides, "hydra.run.dir")
    if given is not None:
        RunDir(given).refuse_if_holds_run(where="hydra.run.dir")


@hydra.main(version_base="1.3", config_path="pkg://ftkit.conf", config_name="train")
@exit_on_user_error
def hydra_train(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir, overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        returncode = train_here_or_launch(cfg, run_dir, overrides)
        if returncode:
            sys.exit(returncode)
        return None

    from ftkit.commands.sweep import outcome, run_job

    def job() -> dict:
        if cfg.launcher.name == "slurm":
            raise FtkitError(
                "launcher=slurm submits a batch job and returns at once, so a sweep could not wait for its result",
                "use hydra/launcher=slurm_jobs (one SLURM job per sweep job, same launcher.* resources)",
                where="launcher",
            )
        # The objective is the validation metric: have this process, or the launched ranks, score it.
        extra = []
        if cfg.evaluate.validation is None:
            extra = ["evaluate.validation=true"]
            with open_dict(cfg):
                cfg.evaluate.validation = True
        returncode = train_here_or_launch(cfg, run_dir, overrides + extra)
        if returncode:
            raise RuntimeError(f"the launched run exited with code {returncode}; see {run_dir}/train*.log")
        return outcome(run_dir)

    return run_job(job, run_dir, overrides)  # the sweeper's objective; a failed job is a row, not the end


def train_here_or_launch(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> int:
    """Train in this process, or have the launcher's ranks (or the SLURM job) do it; 0 when it went well."""
    from ftkit.launch.relaunch import relaunch

    returncode = relaunch(cfg, run_dir, overrides)
    if returncode is not None:  # the ranks (or the SLURM job) did the run
        return returncode
    from ftkit.training.run import main as train_main  # heavy imports (torch, TRL) only once a run really starts

    train_main(cfg)
    return 0
