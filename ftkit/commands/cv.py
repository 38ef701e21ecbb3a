"""`ftkit cv [folds=5] <overrides>`: k-fold cross-validation, one `ftkit train` run per fold, and the folds'
metrics with their mean and standard deviation (cv.json, cv.md).

Supports
  - folds=K (default 5): recipe.data.train dealt into K stratified folds, seeded by recipe.data.split_seed
    (ftkit.data.splits: disjoint, every record in exactly one); fold i's run trains on the other folds and is
    scored on fold i (its overrides: recipe.data.folds=K recipe.data.fold=i).
  - Any overrides `ftkit train` takes. hydra.run.dir names the cross-validation directory (default
    cv/<recipe>/<date>/<time>); fold i's run directory is <cv dir>/fold-<i>.
  - The recipe's own validation and test files (from its yaml) are not read: the folds set them to null, and say
    so. A fold's run has no validation split, so trainer.eval_strategy left at a value other than no is set to no,
    said likewise.
  - logger=wandb: the folds' runs share one W&B group, cv-<the cv directory's last two names> (unless
    logger.group is given).
  - launcher=slurm: every fold is submitted as its own job at once, then the jobs are waited for (squeue);
    otherwise the folds run one after another, each `ftkit train` in its own process.
  - dry_run=true: each fold's command and split sizes, every fold checked; nothing trained or written.
  - cv.json and cv.md, rewritten after each fold: a row per fold (run directory, status, train / test records,
    each numeric top-level metric of the fine-tuned model, e.g. accuracy and macro_f1, or NER's micro_f1), and
    per metric the mean and the sample standard deviation over the folds that finished.
  - SIGINT / SIGTERM: the fold that is training saves a checkpoint and stops (ftkit train's own handling); the
    cross-validation stops after it, with cv.md saying which folds ran, and exits 130 / 143.

Raises FtkitError (exit 2), before anything is written, for
  - folds that is not a whole number of at least 2, a flag (-m, --cfg ...), resume, recipe.data.folds / fold
    (cv sets them), recipe.data.split, a recipe without a single training file to fold (multitask);
  - recipe.data.validation / test given on the command line, trainer.eval_strategy given as anything but no,
    early_stopping.patience (each needs a validation split); launcher.submit=false (there would be no result to
    wait for);
  - a cv directory that holds a cross-validation or a run, or lies inside a run; and whatever `ftkit train`
    refuses for any fold's overrides (ftkit.commands.train.check_command) or data (ftkit.data.splits.load_splits).
A fold that fails does not stop the others; the command then exits 1, and cv.md names the fold and its log.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ftkit.config.overrides import given_value, is_key, parse_command_options
from ftkit.errors import FtkitError
from ftkit.run_dir import CV_FOLD, CV_REPORT, CV_RESULTS, SLURM_LOG, RunDir, log_file_name

log = logging.getLogger("ftkit")

DEFAULT_FOLDS = 5
SQUEUE_POLL_SECONDS = 30  # how often the SLURM jobs of the folds are looked at while they run
SUBMITTED = re.compile(r"submitted SLURM job (\S+)")  # ftkit.launch.slurm's log line, with the job id

# What `ftkit cv --help` prints (ftkit/cli.py asks each command's module for its USAGE).
USAGE = {
    "cv": f"""usage: ftkit cv [folds=<k>] [key=value ...]

k-fold cross-validation: recipe.data.train is dealt into k stratified folds (seeded by recipe.data.split_seed),
and one `ftkit train` run per fold trains on the other folds and is scored on its own. Writes a run directory per
fold, <cv dir>/fold-<i>, and {CV_RESULTS} and {CV_REPORT} in the cv directory: a row per fold and the mean +- standard
deviation of each metric. Every fold is checked before the first one starts.

options:
  folds=<k>   the number of folds, at least 2 (default: {DEFAULT_FOLDS})
  key=value   any override ftkit train takes (ftkit train --help); hydra.run.dir=<dir> is the cv directory
              (default: cv/<recipe>/<date>/<time>). The recipe's validation and test files are not used, and
              trainer.eval_strategy is set to no: a fold's run has no validation split.
              logger=wandb groups the folds' runs; launcher=slurm submits every fold as a job at once.

examples:
  ftkit cv folds=5 recipe=sentiment recipe.data.train=headlines.jsonl recipe.labels=auto
  ftkit cv folds=3 recipe=tickets trainer.num_train_epochs=2 hydra.run.dir=cv/tickets-3
  ftkit cv folds=5 dry_run=true        # each fold's command and split sizes; nothing runs
""",
}


@dataclass
class Fold:
    number: int
    overrides: list[str]  # `ftkit train` arguments of this fold's run
    run_dir: Path
    train: int  # records of the fold's training split
    test: int


@dataclass
class Plan:
    folds: int
    cv_dir: Path
    recipe: str
    seed: int
    primary_metric: str
    slurm: bool
    dry_run: bool
    overrides: list[str]  # as the user gave them
    notes: list[str] = field(default_factory=list)  # what cv changed, to say before it starts
    runs: list[Fold] = field(default_factory=list)


def cv_command(args: list[str]) -> None:
    """ftkit cv [folds=<k>] [overrides]"""
    options, overrides = parse_command_options("cv", args, {"folds": str(DEFAULT_FOLDS)})
    plan = check_cv(options["folds"], overrides)
    for note in plan.notes:
        log.info("cv: %s", note)
    if plan.dry_run:
        print_plan(plan)
        return
    run_cv(plan)


def check_cv(folds_given: str, overrides: list[str]) -> Plan:
    """Every check before the first fold starts: the options, the cv directory, each fold's `ftkit train` checks
    (config, run directory, machine) and its data. Nothing is written."""
    from ftkit.commands.train import check_command, without_hydra
    from ftkit.config.compose import compose
    from ftkit.config.overrides import rewrite_trainer_overrides

    folds = parse_folds(folds_given)
    for key, why in (
        ("recipe.data.folds", "cv sets it for each fold's run (folds=<k> sets the number)"),
        ("recipe.data.fold", "cv sets it for each fold's run"),
        ("resume", "cv starts new runs; an unfinished fold is continued with ftkit train resume=<cv dir>/fold-<i>"),
    ):
        if given_value(overrides, key) is not None:
            raise FtkitError(f"{key} is given, and {why}", f"drop {key} from the command", where=key)
    full = compose(rewrite_trainer_overrides(overrides), with_hydra=True)
    cfg = without_hydra(full)
    data = cfg.recipe.get("data")
    if data is None or "folds" not in data:
        raise FtkitError(
            f"recipe {cfg.recipe.name} has no single training file to deal into folds (a multitask recipe reads "
            "each task's files)",
            "cross-validate one recipe, e.g. ftkit cv recipe=tickets",
            where="recipe",
        )
    if data.get("split") is not None:
        raise FtkitError(
            f"recipe.data.split={list(data.split)} makes one holdout split, and cross-validation deals "
            "recipe.data.train into folds",
            "drop recipe.data.split (each fold is the test split once)",
            where="recipe.data.split",
        )
    plan = Plan(
        folds=folds,
        cv_dir=cv_directory(full, overrides),
        recipe=str(cfg.recipe.name),
        seed=int(data.split_seed),
        primary_metric=primary_metric(str(cfg.recipe.name)),
        slurm=cfg.launcher.name == "slurm",
        dry_run=bool(cfg.dry_run),
        overrides=overrides,
    )
    extra = fold_settings(cfg, overrides, plan)
    own = [override for override in overrides if not is_key(override, "hydra.run.dir")]
    for number in range(folds):
        run_dir = plan.cv_dir / CV_FOLD.format(number)
        fold_args = [*own, *extra, f"recipe.data.folds={folds}", f"recipe.data.fold={number}"]
        fold_args.append(f"hydra.run.dir={run_dir}")
        checked = check_command(fold_args)
        assert checked.cfg is not None  # a single run's check gives its config
        train, test = fold_sizes(checked.cfg)
        plan.runs.append(Fold(number, fold_args, run_dir, train, test))
    return plan


def parse_folds(given: str) -> int:
    folds = int(given) if re.fullmatch(r"\s*[+-]?\d+\s*", given) else None
    if folds is None or folds < 2:
        raise FtkitError(
            f"folds={given}: cross-validation needs a whole number of folds, at least 2",
            f"use e.g. folds={DEFAULT_FOLDS} (each record is then tested once, trained on in the other 4 runs)",
            where="folds",
        )
    return folds


def primary_metric(recipe_name: str) -> str:
    from ftkit.recipes import get_recipe_class

    return get_recipe_class(recipe_name).primary_metric


def cv_directory(full: Any, overrides: list[str]) -> Path:
    """hydra.run.dir as given (resolved as Hydra would), else cv/<recipe>/<date>/<time>; refused if it holds a
    cross-validation or a run, lies inside a run, or cannot be written."""
    from ftkit.commands.train import resolved_dir

    if given_value(overrides, "hydra.run.dir") is not None:
        cv_dir = Path(resolved_dir(full, "hydra.run.dir")).expanduser()
    else:
        cv_dir = Path("cv") / str(full.recipe.name) / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    for name in (CV_RESULTS, CV_REPORT):
        if (cv_dir / name).exists():
            raise FtkitError(
                f"{cv_dir} already holds a cross-validation (its {name}), which this one would overwrite",
                "give hydra.run.dir a new directory, or leave it out for a fresh time-stamped one under cv/",
                where="hydra.run.dir",
            )
    RunDir(cv_dir).check_new(where="hydra.run.dir")
    return cv_dir


def fold_settings(cfg: Any, overrides: list[str], plan: Plan) -> list[str]:
    """The overrides every fold's run gets besides the user's: no validation or test file, no evaluation during
    training, the W&B group; or the refusal of a setting a fold's run cannot have."""
    extra = []
    data = cfg.recipe.data
    for name in ("validation", "test"):
        if data.get(name) is None:
            continue
        if given_value(overrides, f"recipe.data.{name}") is not None:
            raise FtkitError(
                f"recipe.data.{name}={data.get(name)} is given, and cross-validation reads no {name} file: each fold "
                "of recipe.data.train is the test split once",
                f"drop recipe.data.{name} from the command",
                where=f"recipe.data.{name}",
            )
        extra.append(f"recipe.data.{name}=null")
        plan.notes.append(f"the recipe's {name} file ({data.get(name)}) is not used: recipe.data.{name}=null")
    strategy = cfg.trainer.get("eval_strategy", "no")
    if strategy != "no":
        if given_value(overrides, "trainer.eval_strategy") is not None:
            raise FtkitError(
                f"trainer.eval_strategy={strategy} evaluates on a validation split, and a fold's run has none",
                "drop trainer.eval_strategy (cv sets it to no)",
                where="trainer.eval_strategy",
            )
        extra.append("trainer.eval_strategy=no")
        plan.notes.append(f"a fold's run has no validation split: trainer.eval_strategy=no (was {strategy})")
    if cfg.early_stopping.patience:
        raise FtkitError(
            f"early_stopping.patience={cfg.early_stopping.patience} stops on the validation metric, and a fold's run "
            "has no validation split",
            "drop early_stopping.patience, and fix the length of training with trainer.num_train_epochs",
            where="early_stopping.patience",
        )
    if cfg.logger.name == "wandb" and cfg.logger.group is None:
        group = "cv-" + "_".join(plan.cv_dir.parts[-2:])
        extra.append(f"logger.group={group}")
        plan.notes.append(f"the folds' W&B runs are grouped as {group}")
    if plan.slurm and not cfg.launcher.submit:
        raise FtkitError(
            "launcher.submit=false only writes each fold's batch script, and cv waits for the folds' results",
            "drop launcher.submit=false (cv submits every fold and waits for the jobs)",
            where="launcher.submit",
        )
    return extra


def fold_sizes(cfg: Any) -> tuple[int, int]:
    """(train, test) records of a fold's run, read and checked as the run will (a data mistake is refused now)."""
    from ftkit.data.splits import load_splits
    from ftkit.recipes import get_recipe_class

    splits = load_splits(get_recipe_class(cfg.recipe.name)(cfg.recipe), cfg)
    return len(splits["train"]), len(splits["test"])


def print_plan(plan: Plan) -> None:
    print(f"Cross-validation plan: {plan.folds} folds of {plan.recipe}'s recipe.data.train (seed {plan.seed})")
    for fold in plan.runs:
        command = " ".join(override for override in fold.overrides if not is_key(override, "dry_run"))
        print(f"  fold {fold.number}: train {fold.train}, test {fold.test}: ftkit train {command}")
    print(
        f"Each fold was checked as ftkit train checks a run, with its data. Nothing was trained or written "
        f"(dry_run=true); without it, the runs go into {plan.cv_dir}."
    )


# ---- running the folds ------------------------------------------------------------------------------------------
def run_cv(plan: Plan) -> None:
    """Train every fold, write cv.json and cv.md after each; exit 1 when a fold failed, 128+n after a signal."""
    plan.cv_dir.mkdir(parents=True, exist_ok=True)
    outcome: dict[int, dict[str, Any]] = {}
    stopped_by = None
    if plan.slurm:
        outcome = run_as_jobs(plan)
    else:
        for fold in plan.runs:
            log.info("cv: fold %d of %d: ftkit train %s", fold.number, plan.folds, " ".join(fold.overrides))
            returncode = run_fold(fold)
            outcome[fold.number] = {"exit_code": returncode}
            write_results(plan, outcome)
            if returncode in (130, 143):  # the fold saved a checkpoint and stopped: so does the cross-validation
                stopped_by = returncode
                break
    results = write_results(plan, outcome)
    log.info("cv: %s\n%s", plan.cv_dir / CV_REPORT, markdown_table(results))
    if stopped_by is not None:
        sys.exit(stopped_by)
    failed = [row for row in results["rows"] if row["status"] != "ok"]
    if failed:
        names = ", ".join(f"fold {row['fold']} ({row['status']})" for row in failed)
        print(f"ftkit: {len(failed)} of {plan.folds} folds did not finish: {names}; see {plan.cv_dir / CV_REPORT}")
        sys.exit(1)


def train_command(fold: Fold) -> list[str]:
    return [sys.executable, "-m", "ftkit.cli", "train", *fold.overrides]


def run_fold(fold: Fold) -> int:
    """One fold's `ftkit train`, its output on this console; SIGTERM is passed on, Ctrl-C reaches it directly."""
    from ftkit.launch.relaunch import wait_passing_on_signals

    return wait_passing_on_signals(subprocess.Popen(train_command(fold)))


def run_as_jobs(plan: Plan) -> dict[int, dict[str, Any]]:
    """launcher=slurm: every fold's `ftkit train` submits its job; then wait until none is queued or running."""
    outcome: dict[int, dict[str, Any]] = {}
    jobs: dict[int, str] = {}
    for fold in plan.runs:
        result = subprocess.run(train_command(fold), capture_output=True, text=True)
        sys.stderr.write(result.stdout + result.stderr)
        found = SUBMITTED.search(result.stdout + result.stderr)
        if result.returncode != 0 or found is None:
            outcome[fold.number] = {"exit_code": result.returncode or 1, "error": "the job was not submitted"}
            continue
        jobs[fold.number] = found[1]
        outcome[fold.number] = {"job": found[1]}
    write_results(plan, outcome)
    log.info("cv: waiting for SLURM jobs %s (squeue -j %s)", ", ".join(jobs.values()), ",".join(jobs.values()))
    waiting = dict(jobs)
    while waiting:
        time.sleep(SQUEUE_POLL_SECONDS)
        queued = queued_jobs(list(waiting.values()))
        for number, job in list(waiting.items()):
            if job not in queued:
                del waiting[number]
                outcome[number]["ended"] = True
                log.info("cv: fold %d (job %s) ended", number, job)
        write_results(plan, outcome)
    return outcome


def queued_jobs(job_ids: list[str]) -> set[str]:
    """The ids among job_ids that SLURM still lists (pending or running); all of them when squeue cannot answer."""
    squeue = shutil.which("squeue")
    if squeue is None:
        raise FtkitError(
            "cv waits for the folds' SLURM jobs with `squeue`, which is not on PATH here",
            f"run ftkit cv on a machine of the cluster; the jobs keep running (squeue -j {','.join(job_ids)})",
            where="launcher",
        )
    result = subprocess.run(
        [squeue, "--noheader", "--format=%i", f"--jobs={','.join(job_ids)}"], capture_output=True, text=True
    )
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        log.warning("cv: squeue failed (%s); asking again later", (result.stderr or "no message").strip())
        return set(job_ids)
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


# ---- the results --------------------------------------------------------------------------------------------------
def fold_row(plan: Plan, fold: Fold, outcome: dict[str, Any] | None) -> dict[str, Any]:
    """A fold's row: its run directory, status, split sizes and the fine-tuned model's numeric metrics."""
    run = RunDir(fold.run_dir)
    row: dict[str, Any] = {
        "fold": fold.number,
        "run_dir": str(fold.run_dir),
        "train": fold.train,
        "test": fold.test,
        "metrics": {},
    }
    if outcome is None:
        row["status"] = "not run"
    elif run.is_finished():
        metrics = run.metrics()["finetuned"]
        row["status"] = "ok"
        row["metrics"] = {
            name: value
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "examples"
        }
    elif "job" in outcome:
        job, log_file = outcome["job"], f"{CV_FOLD.format(fold.number)}/{SLURM_LOG.format(outcome['job'])}"
        row["status"] = (
            f"failed (job {job} ended without results; see {log_file})"
            if outcome.get("ended")
            else (f"job {job} running")
        )
    elif outcome.get("error"):
        row["status"] = f"failed ({outcome['error']}, exit {outcome.get('exit_code')})"
    else:
        log_file = f"{CV_FOLD.format(fold.number)}/{log_file_name(0)}"
        row["status"] = f"failed (exit {outcome.get('exit_code')}; see {log_file})"
    return row


def summarise(rows: list[dict[str, Any]], primary: str) -> dict[str, dict[str, Any]]:
    """Per metric, over the folds that finished: mean, sample standard deviation (None with one fold) and count."""
    names: list[str] = []
    for row in rows:
        names += [name for name in row["metrics"] if name not in names]
    names.sort(key=lambda name: name != primary)  # the primary metric first, the rest as the runs wrote them
    summary = {}
    for name in names:
        values = [float(row["metrics"][name]) for row in rows if name in row["metrics"]]
        summary[name] = {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "folds": len(values),
        }
    return summary


def write_results(plan: Plan, outcome: dict[int, dict[str, Any]]) -> dict[str, Any]:
    rows = [fold_row(plan, fold, outcome.get(fold.number)) for fold in plan.runs]
    results = {
        "recipe": plan.recipe,
        "folds": plan.folds,
        "seed": plan.seed,
        "overrides": plan.overrides,
        "primary_metric": plan.primary_metric,
        "rows": rows,
        "summary": summarise([row for row in rows if row["status"] == "ok"], plan.primary_metric),
    }
    (plan.cv_dir / CV_RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    (plan.cv_dir / CV_REPORT).write_text(markdown(plan, results))
    return results


def markdown(plan: Plan, results: dict[str, Any]) -> str:
    finished = sum(row["status"] == "ok" for row in results["rows"])
    return (
        f"# Cross-validation: {plan.recipe}, {plan.folds} folds\n\n"
        f"`ftkit cv folds={plan.folds} {' '.join(plan.overrides)}`\n\n"
        f"recipe.data.train in {plan.folds} stratified folds (seed {plan.seed}); each fold's run trains on the other "
        f"folds and is scored on its own, so every record is tested once. {finished} of {plan.folds} folds finished; "
        "the last row is the mean ± sample standard deviation over them.\n\n" + markdown_table(results) + "\n"
    )


def markdown_table(results: dict[str, Any]) -> str:
    names = list(results["summary"])
    lines = [
        "| fold | run directory | status | train | test | " + " | ".join(names) + " |",
        "| --- | --- | --- | --- | --- |" + " --- |" * len(names),
    ]
    for row in results["rows"]:
        values = [_number(row["metrics"].get(name)) for name in names]
        cells = [str(row["fold"]), row["run_dir"], row["status"], str(row["train"]), str(row["test"]), *values]
        lines.append("| " + " | ".join(cells) + " |")
    summary = [
        _number(item["mean"]) + (f" ± {_number(item['sd'])}" if item["sd"] is not None else "")
        for item in results["summary"].values()
    ]
    finished = sum(row["status"] == "ok" for row in results["rows"])
    lines.append(f"| mean ± sd | | {finished} of {len(results['rows'])} finished | | | " + " | ".join(summary) + " |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)
