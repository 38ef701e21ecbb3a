"""The `ftkit` command. Kept tiny and light: nothing here imports torch, so config mistakes surface fast."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from ftkit.config import check, compose, register_schemas
from ftkit.errors import FtkitError, closest, exit_on_user_error
from ftkit.overrides import INFO_ONLY, given_value, rewrite_trainer_overrides, split_args
from ftkit.sweep import register_resolvers

USAGE = """usage: ftkit <command> [hydra overrides and flags]

commands:
  train    fine-tune a recipe's base model with LoRA, evaluate base vs fine-tuned, write a run directory
  eval     score a run's adapter (run=<run dir>) or the base model on a test split with the recipe's metrics
  predict  predictions as JSONL for JSONL records (input=<file>, or - for stdin; output=<file> or -)
  export   a run as a Hugging Face model folder: adapter merged into the base (merge=true) or alone (merge=false)
  serve    an OpenAI-compatible HTTP server for one run or several adapters of one base (flags: ftkit serve --help)

  ftkit train --help      config groups, the composed config and examples
  ftkit train --cfg job   print the composed config and stop
  ftkit eval run=outputs/tickets/2026-11-22/10-00-00 recipe.data.test=more_tickets.jsonl
  echo '{"text": "pump P-3 seal leaking"}' | ftkit predict run=outputs/tickets/2026-11-22/10-00-00
  ftkit export run=outputs/tickets/2026-11-22/10-00-00 [out=<dir>] [merge=false]
  ftkit serve --run outputs/tickets/2026-11-22/10-00-00 [--port 8000] [--api-key KEY]
"""
COMMANDS = ["train", "eval", "predict", "export", "serve"]
# Log lines outside Hydra's run (eval, predict, export, resume's choice of checkpoint) look like Hydra's own.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# Options of eval/predict/export that are not config keys, with their defaults.
COMMAND_OPTIONS = {
    "eval": {"run": None, "out": None},
    "predict": {"run": None, "input": "-", "output": "-"},
    "export": {"run": None, "out": None, "merge": "true"},
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    run_command(args[0], args[1:])


@exit_on_user_error
def run_command(command: str, args: list[str]) -> None:
    if command not in COMMANDS:
        raise FtkitError(
            f"unknown command {command!r}",
            f"use one of: {', '.join(COMMANDS)}; {closest(command, COMMANDS)}",
            where="command line",
        )
    if command in COMMAND_OPTIONS:
        run_without_training(command, args)
        return
    if command == "serve":  # flags (argparse), not Hydra overrides: see ftkit/serve/options.py
        from ftkit.serve import main as serve_main

        serve_main(args)
        return
    flags, overrides = split_args(args)
    overrides = rewrite_trainer_overrides(overrides)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    if not multirun and not INFO_ONLY.intersection(flags):
        # Compose and check up front so a mistake exits 2 before Hydra creates a run directory.
        # (A sweep's jobs are checked one by one in the task function.)
        cfg = compose(overrides)
        check(cfg)
        check_shared_run_dir(overrides)
        if cfg.resume not in (False, None):
            import logging

            from ftkit import resume

            # Which checkpoint, and any skipped as incomplete, said before Hydra's logging starts
            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
            # The run's own directory and checkpoint, and its config (which the resumed run must equal)
            run_dir, overrides = resume.plan(cfg, overrides)
            cfg = compose(overrides)
            check(cfg)
            resume.check_same_config(cfg, run_dir)
        else:
            refuse_existing_run_dir(overrides)
        if cfg.dry_run:
            from ftkit.dry_run import dry_run

            dry_run(cfg, overrides)
            return
    elif multirun and given_value(overrides, "resume") is not None:
        raise FtkitError(
            "resume continues one run, and a sweep (-m) starts many",
            "resume each unfinished job on its own: ftkit train resume=<sweep dir>/<job number>",
            where="resume",
        )
    register_schemas()
    register_resolvers()
    sys.argv = [f"ftkit {command}", *flags, *overrides]
    hydra_train()


def run_without_training(command: str, args: list[str]) -> None:
    """eval / predict / export: compose (replaying run=<dir>'s overrides), check, then run it. No Hydra run dir."""
    import logging

    options = dict(COMMAND_OPTIONS[command])
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        elif arg.startswith("-"):
            raise FtkitError(
                f"ftkit {command} takes no flag {arg!r}",
                f"give {', '.join(f'{k}=' for k in options)} and config overrides (key=value)",
                where="command line",
            )
        else:
            overrides.append(arg)
    if command == "export":
        from ftkit.export import check_request

        check_request(options["run"], options["out"], options["merge"])  # before anything loads
    from ftkit.evaluate import eval_main, predict_main, run_overrides

    cfg = compose(rewrite_trainer_overrides(run_overrides(options["run"]) + overrides))
    check(cfg)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if command == "eval":
        eval_main(cfg, options["run"], options["out"])
    elif command == "export":
        from ftkit.export import export_main

        export_main(cfg, options["run"], options["out"], options["merge"])
    else:
        count = predict_main(cfg, options["run"], options["input"], options["output"])
        logging.getLogger("ftkit").info("wrote %d predictions to %s", count, options["output"])


def check_shared_run_dir(overrides: list[str]) -> None:
    """Ranks started by hand (accelerate launch / torchrun) would each pick a run directory from their own clock."""
    import os

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
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks of one launched run share the launcher's directory
        return
    given = given_value(overrides, "hydra.run.dir")
    run_dir = Path(given).expanduser() if given is not None else None
    if run_dir is not None and any((run_dir / name).exists() for name in ("config.yaml", "metrics.json")):
        raise FtkitError(
            f"{run_dir} already holds a run (its config.yaml or metrics.json), and ftkit does not write into it",
            f"give hydra.run.dir a new directory, or leave it out for a fresh time-stamped one; to continue that run "
            f"from its latest checkpoint: ftkit train resume={run_dir}",
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

    from ftkit.sweep import outcome, run_job

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
    from ftkit.launcher import relaunch

    returncode = relaunch(cfg, run_dir, overrides)
    if returncode is not None:  # the ranks (or the SLURM job) did the run
        return returncode
    from ftkit.train import main as train_main  # heavy imports (torch, TRL) only once a run really starts

    train_main(cfg)
    return 0


if __name__ == "__main__":
    main()
