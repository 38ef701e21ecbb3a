"""The `ftkit` command: dispatch only. Nothing here imports torch, so config mistakes surface fast."""

from __future__ import annotations

import importlib
import logging
import sys

from ftkit.errors import LOG_FORMAT, FtkitError, closest, exit_on_user_error

USAGE = """usage: ftkit <command> [hydra overrides and flags]

commands:
  train    fine-tune a recipe's base model with LoRA, evaluate base vs fine-tuned, write a run directory
  cv       k-fold cross-validation (folds=<k>): one train run per fold, then each metric's mean +- sd
  eval     score a run's adapter (run=<run dir>) or the base model on a test split with the recipe's metrics
  predict  predictions as JSONL for JSONL records (input=<file>, or - for stdin; output=<file> or -)
  export   a run as a Hugging Face model folder: adapter merged into the base (merge=true) or alone (merge=false)
  serve    an OpenAI-compatible HTTP server for one run or several adapters of one base (flags: ftkit serve --help)

  ftkit <command> --help  that command's options and examples (train: config groups and the composed config)
  ftkit train --cfg job   print the composed config and stop
  ftkit cv folds=5 recipe=sentiment recipe.labels=auto
  ftkit eval run=outputs/tickets/2026-11-22/10-00-00 recipe.data.test=more_tickets.jsonl
  echo '{"text": "pump P-3 seal leaking"}' | ftkit predict run=outputs/tickets/2026-11-22/10-00-00
  ftkit export run=outputs/tickets/2026-11-22/10-00-00 [out=<dir>] [merge=false]
  ftkit serve --run outputs/tickets/2026-11-22/10-00-00 [--port 8000] [--api-key KEY]
"""
# Each command: the function that runs it, imported only when it is the one asked for.
COMMANDS = {
    "train": "ftkit.commands.train:main",
    "cv": "ftkit.commands.cv:cv_command",
    "eval": "ftkit.commands.evaluate:eval_command",
    "predict": "ftkit.commands.evaluate:predict_command",
    "export": "ftkit.commands.export:export_command",
    "serve": "ftkit.serve.server:main",
}
HELP_FLAGS = ("-h", "--help")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in HELP_FLAGS:
        print(USAGE)
        return
    run_command(args[0], args[1:])


@exit_on_user_error
def run_command(command: str, args: list[str]) -> None:
    if command not in COMMANDS:
        raise FtkitError(
            f"unknown command {command!r}",
            f"use one of: {', '.join(COMMANDS)}; {closest(command, list(COMMANDS))}",
            where="command line",
        )
    module_name, _, function = COMMANDS[command].partition(":")
    module = importlib.import_module(module_name)
    # train (Hydra) and serve (argparse) answer --help themselves; cv, eval, predict and export keep a USAGE beside
    # them.
    usage = getattr(module, "USAGE", {}).get(command)
    if usage and any(arg in HELP_FLAGS for arg in args):
        print(usage, end="")
        return
    if command != "train":  # train logs through Hydra
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    getattr(module, function)(args)


if __name__ == "__main__":
    main()
