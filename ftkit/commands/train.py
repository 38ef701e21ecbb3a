"""`ftkit train`: compose and check the config, pick the run directory (or the run to resume), then run Hydra.

    ftkit train [hydra overrides]            one run; `-m` / `--multirun` for a sweep (ftkit.commands.sweep)

Before Hydra creates anything, the overrides are composed and checked once (a mistake exits 2 with nothing
written), a resume is planned (ftkit.commands.resume), and a directory that holds a run is refused. Then Hydra
composes the same overrides again for its run, and the task function trains here (ftkit.training.run) or
re-runs this command under the launcher (ftkit.launch.relaunch). A sweep's jobs are checked one by one there.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from ftkit.config.checks import check, check_machine
from ftkit.config.compose import compose, register_schemas
from ftkit.config.overrides import INFO_ONLY, given_value, rewrite_trainer_overrides, split_args
from ftkit.errors import LOG_FORMAT, FtkitError, exit_on_user_error
from ftkit.run_dir import RunDir

# Flags that would make Hydra compose another config than the one ftkit composed and checked.
OTHER_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


@dataclass
class Checked:
    """What `ftkit train` was asked, every check passed: Hydra's flags, the overrides to run, and what to do."""

    flags: list[str]
    overrides: list[str]
    multirun: bool
    dry_run: bool = False
    cfg: DictConfig | None = None  # a single run's config (for its dry run), or a sweep's first job's
    jobs: list[list[str]] = field(default_factory=list)  # a sweep's planned jobs
    plan: str = ""  # how the sweeper picks them


def main(args: list[str]) -> None:
    checked = check_command(args)
    if checked.dry_run and checked.multirun:
        sweep_dry_run(checked.jobs, checked.plan)
        return
    if checked.dry_run:
        from ftkit.commands.dry_run import dry_run

        dry_run(checked.cfg, checked.overrides)
        return
    flags, overrides, multirun = checked.flags, checked.overrides, checked.multirun
    if checked.cfg is not None and not PRINT_ONLY.intersection(flags):
        from ftkit.launch.cpu_threads import configure

        configure(checked.cfg)  # OpenMP's threads and wait policy: before the run imports torch
    from ftkit.commands.sweep import register_resolvers

    register_schemas()
    register_resolvers()
    sys.argv = ["ftkit train", *flags, *overrides]
    hydra_train()
    if multirun:
        refuse_failed_sweep()


def check_command(args: list[str]) -> Checked:
    """Every check `ftkit train <args>` makes before Hydra starts: config, run directory, resume, sweep jobs.

    Nothing is written and no data or model is read (the tests' fuzzer calls this for each input it draws).
    """
    flags, overrides = split_args(args)
    refuse_other_config(flags)
    overrides = rewrite_trainer_overrides(overrides)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    printing = bool(PRINT_ONLY.intersection(flags))  # --cfg job prints and runs nothing
    checked = Checked(flags, overrides, multirun)
    if INFO_ONLY.intersection(flags):
        compose([o for o in overrides if not _is_sweep(o)])  # a bad option: ftkit's paragraph, not Hydra's traceback
        return checked  # --help, --info: Hydra prints them
    if not multirun:
        full = compose(overrides, with_hydra=True)
        cfg = without_hydra(full)
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
        elif not printing:
            check_new_run_dir(full, "hydra.run.dir")
        if not printing:
            check_machine(cfg)
        checked.overrides, checked.cfg, checked.dry_run = overrides, cfg, bool(cfg.dry_run) and not printing
        return checked
    if given_value(overrides, "resume") not in (None, "false", "False"):
        raise FtkitError(
            "resume continues one run, and a sweep (-m) starts many",
            "resume each unfinished job on its own: ftkit train resume=<sweep dir>/<job number>",
            where="resume",
        )
    from ftkit.commands.sweep import check_sweep

    checked.jobs, checked.plan, configs = check_sweep(overrides)
    checked.cfg = configs[0] if configs else None  # its launcher settings choose the CPU threads of every job
    if not printing:
        check_new_sweep_dir(compose(checked.jobs[0], with_hydra=True))
        for cfg in configs:
            check_machine(cfg)
        checked.dry_run = any(cfg.dry_run for cfg in configs)
    return checked


def _is_sweep(override: str) -> bool:
    from ftkit.config.overrides import parse_overrides

    return parse_overrides([override])[0].is_sweep_override()


# Flags that only print the config: they must work for any config that composes and checks, written nowhere.
PRINT_ONLY = {"--cfg", "-c", "--resolve", "--package", "-p"}


def refuse_other_config(flags: list[str]) -> None:
    given = [flag.split("=", 1)[0] for flag in flags if flag.split("=", 1)[0] in OTHER_CONFIG_FLAGS]
    if given:
        raise FtkitError(
            f"{given[0]} would make Hydra compose another config than ftkit's, which ftkit has not checked",
            "choose among ftkit's config groups (recipe=, model=, peft=, trainer=, launcher=, logger=; see "
            "`ftkit train --help`) and override keys on the command line",
            where="command line",
        )


def without_hydra(full: DictConfig) -> DictConfig:
    """The job's config (what the run sees) from one composed with its hydra node."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.masked_copy(full, [str(k) for k in full if k != "hydra"])
    OmegaConf.set_struct(cfg, True)
    return cfg


def resolved_dir(full: DictConfig, key: str) -> str:
    """hydra.run.dir / hydra.sweep.dir as Hydra will resolve it (through ${...}, relative to this directory)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from ftkit.config.checks import interpolation_error

    try:
        value = OmegaConf.select(full, key)
    except InterpolationResolutionError as error:
        raise interpolation_error(error) from None
    return "" if value is None else str(value)


def check_new_run_dir(full: DictConfig, where: str) -> None:
    """ftkit never writes into a finished (or started) run's directory: a new run gets a new one (resume aside)."""
    from ftkit.launch.ranks import launched_world_size

    if launched_world_size() > 1:  # ranks of one launched run share the launcher's directory
        return
    RunDir(resolved_dir(full, where)).check_new(where=where)


def check_new_sweep_dir(full: DictConfig) -> None:
    """A sweep writes <sweep dir>/<job number>/: a sweep directory that holds another sweep's jobs is refused."""
    sweep_dir = Path(resolved_dir(full, "hydra.sweep.dir"))
    taken = [p for p in sweep_dir.iterdir() if p.is_dir() and RunDir(p).holds_run()] if sweep_dir.is_dir() else []
    if taken or (sweep_dir / "leaderboard.md").exists():
        raise FtkitError(
            f"{sweep_dir} already holds a sweep (job directories with runs, or its leaderboard), and its jobs would "
            "be overwritten",
            "give hydra.sweep.dir a new directory, or leave it out for a fresh time-stamped one under multirun/",
            where="hydra.sweep.dir",
        )
    RunDir(sweep_dir / "0").check_new(where="hydra.sweep.dir")


def sweep_dry_run(jobs: list[list[str]], plan: str) -> None:
    """dry_run=true under -m: the jobs the sweep would run, each checked; nothing is loaded, trained or written."""
    print(f"Sweep plan ({plan}):")
    for number, job in enumerate(jobs):
        print(f"  job {number}: {' '.join(job) or '(the defaults)'}")
    print(
        "Each job listed was composed and checked as a single run is (config, launcher, run directory); its data "
        "and model load only when it runs. Nothing was loaded, trained or written (dry_run=true). For one job's "
        "data statistics and memory estimate: ftkit train <its overrides> dry_run=true"
    )


def refuse_failed_sweep() -> None:
    """A sweep in which every job failed did not do what was asked: exit 2 (bad input in every job) or 1."""
    from ftkit.commands.sweep import finished_rows

    if not finished_rows or any(row.get("status") == "ok" for row in finished_rows):
        return
    first = finished_rows[0].get("error", "no error recorded")
    if all(row.get("bad_input") for row in finished_rows):
        raise FtkitError(
            f"every one of the sweep's {len(finished_rows)} jobs failed; the first: {first}",
            "correct that setting and start the sweep again",
            where="sweep",
        )
    print(f"ftkit: every one of the sweep's {len(finished_rows)} jobs failed; the first: {first}", file=sys.stderr)
    sys.exit(1)


def check_shared_run_dir(overrides: list[str]) -> None:
    """Ranks started by hand (accelerate launch / torchrun) would each pick a run directory from their own clock."""
    from ftkit.launch.ranks import launched_world_size

    ranks = launched_world_size()
    if ranks > 1 and given_value(overrides, "hydra.run.dir") is None:
        raise FtkitError(
            f"this is one of {ranks} ranks started by a launcher, and no run directory was given, so each rank "
            "would write into its own time-stamped directory",
            "add hydra.run.dir=<dir> to the command (the same for every rank), or let ftkit launch the ranks: "
            "ftkit train launcher=ddp launcher.num_processes=N",
            where="hydra.run.dir",
        )


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
