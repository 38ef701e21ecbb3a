"""The `ftkit` command. Kept tiny and light: nothing here imports torch, so config mistakes surface fast."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ftkit.config import INFO_ONLY, check, compose, register_schemas, rewrite_trainer_overrides, split_args
from ftkit.errors import FtkitError, closest, exit_on_user_error

USAGE = """usage: ftkit <command> [hydra overrides and flags]

commands:
  train    fine-tune a recipe's base model with LoRA, evaluate base vs fine-tuned, write a run directory

  ftkit train --help      config groups, the composed config and examples
  ftkit train --cfg job   print the composed config and stop
"""
COMMANDS = ["train"]


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
    flags, overrides = split_args(args)
    overrides = rewrite_trainer_overrides(overrides)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    if not multirun and not INFO_ONLY.intersection(flags):
        # Compose and check up front so a mistake exits 2 before Hydra creates a run directory.
        # (A sweep's jobs are checked one by one in the task function.)
        check(compose(overrides))
    register_schemas()
    sys.argv = [f"ftkit {command}", *flags, *overrides]
    hydra_train()


@hydra.main(version_base="1.3", config_path="pkg://ftkit.conf", config_name="train")
@exit_on_user_error
def hydra_train(cfg: DictConfig) -> float:
    from ftkit.train import main as train_main  # heavy imports (torch, TRL) only once a run really starts

    return train_main(cfg)


if __name__ == "__main__":
    main()
