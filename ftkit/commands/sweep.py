"""Sweeps (`ftkit train -m ...`): one directory per job, failures as rows, and a leaderboard in the sweep directory.

Each job runs in its own Hydra job directory (`multirun/<date>/<time>/<job number>`, unique also when a parallel
launcher runs jobs at once) and writes `result.json` there: status, objective, test metric, runtime, overrides,
or the error that stopped it. A failed job never ends the sweep; the leaderboard (Markdown and CSV, best first)
is rebuilt from the result files after every job and at the end. The objective a sweeper optimises is the
recipe's primary metric on the validation split (never the test split), in the recipe's direction.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ftkit.errors import FtkitError, debug
from ftkit.run_dir import SWEEP_RESULT, RunDir, read_json

log = logging.getLogger("ftkit")


def in_sweep() -> bool:
    """True in a W&B sweep agent's run (Hydra sweeps set evaluate.validation=true for their jobs instead)."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def sweep_group() -> str | None:
    """The sweep's name (its directory) for grouping tracker runs; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return "sweep-" + "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])


def direction(recipe_name: str) -> str:
    """Optuna's direction for the recipe's primary metric (resolver ${ftkit_direction:${recipe.name}})."""
    from ftkit.recipes import get_recipe_class

    return "maximize" if get_recipe_class(recipe_name).greater_is_better else "minimize"


def minutes(slurm_time: str) -> int:
    """SLURM's --time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes, for submitit's timeout_min."""
    days, _, clock = str(slurm_time).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # after a day count the clock starts with hours
        hours, mins, secs = (parts + [0, 0])[:3]
    else:
        hours, mins, secs = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("ftkit_direction"):
        OmegaConf.register_new_resolver("ftkit_direction", direction)
    if not OmegaConf.has_resolver("ftkit_minutes"):
        OmegaConf.register_new_resolver("ftkit_minutes", minutes)
    if not OmegaConf.has_resolver("ftkit_gpus"):  # submitit would request --gpus-per-node=0 on CPU partitions
        OmegaConf.register_new_resolver("ftkit_gpus", lambda gpus: gpus or None)
    if not OmegaConf.has_resolver("ftkit_sbatch_mem"):  # submitit wants GB; SLURM's own "64G" passes as is
        OmegaConf.register_new_resolver("ftkit_sbatch_mem", lambda mem: {"mem": str(mem)} if mem else {})


# Jobs checked before a sweep starts: every value of every swept key appears in at least one of them.
MAX_CHECKED_JOBS = 64


def planned_jobs(overrides: list[str]) -> tuple[list[list[str]], str]:
    """The jobs' override lists to check before a sweep starts, and a line on how the sweeper picks its jobs.

    The basic sweeper runs the grid of the swept values (hydra.sweeper.params too); it is checked whole when it
    has at most MAX_CHECKED_JOBS jobs. Other sweepers (Optuna) pick values as they go, so each value of a choice,
    and both ends of an interval, are checked, each in some job.
    """
    import itertools

    from ftkit.config.compose import compose
    from ftkit.config.overrides import parse_overrides, rewrite_trainer_overrides

    parsed = parse_overrides(overrides)
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override() and override.key_or_group.startswith("hydra"):
            raise FtkitError(
                f"{text} sweeps one of Hydra's own settings, which a sweep cannot vary",
                f"sweep the job's keys on the command line (e.g. peft.r=4,8), or quote the value: "
                f"'{text.split('=', 1)[0]}=\"{text.split('=', 1)[1]}\"'",
                where=override.key_or_group,
            )
    fixed = [text for text, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]
    hydra = compose(fixed, with_hydra=True).hydra
    swept: dict[str, list[str]] = {}  # override prefix+key -> the values to check
    given = hydra.sweeper.get("params")
    params = OmegaConf.to_container(given, resolve=False) if given is not None else {}
    for text in [f"{key}={value}" for key, value in params.items()] + overrides:  # the command line wins
        override = parse_overrides([text])[0]
        if override.is_sweep_override():
            swept[text.split("=", 1)[0]] = _values_to_check(override)
        elif text in params:
            swept.pop(text.split("=", 1)[0], None)
    for node, where in ((hydra.sweeper, "hydra.sweeper"), (hydra.launcher, "hydra.launcher")):
        _check_targets(node, where)
    sweeper = str(hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
    axes = [rewrite_trainer_overrides([f"{key}={value}" for value in values]) for key, values in swept.items()]
    if not axes:
        return [fixed], f"{sweeper}: one job (no swept values)"
    grid = 1
    for axis in axes:
        grid *= len(axis)
    if sweeper == "BasicSweeper" and grid <= MAX_CHECKED_JOBS:
        jobs = [fixed + list(job) for job in itertools.product(*axes)]
        return jobs, f"{sweeper}: a grid of {grid} jobs, each checked"
    longest = max(len(axis) for axis in axes)
    jobs = [fixed + [axis[i % len(axis)] for axis in axes] for i in range(longest)]
    trials = hydra.sweeper.get("n_trials")
    size = f"{trials} trials" if trials is not None else f"a grid of {grid} jobs"
    return jobs, f"{sweeper}: {size}; each swept value checked in one of {len(jobs)} jobs"


def _check_targets(node: Any, where: str) -> None:
    """Each _target_ the sweeper or launcher instantiates (its sampler, ...) must be importable: Hydra would only
    find out once the sweep starts, and end in its own report."""
    import importlib

    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if isinstance(value, dict):
            _check_targets(value, f"{where}.{key}")
        elif key == "_target_" and isinstance(value, str) and "${" not in value:
            module, _, name = value.rpartition(".")
            try:
                found = bool(module) and hasattr(importlib.import_module(module), name)
            except ImportError:
                found = False
            if not found:
                raise FtkitError(
                    f"{where}._target_={value!r} names nothing that can be imported",
                    "give the full import path of a class (e.g. optuna.samplers.TPESampler), or drop the override "
                    "to keep the default",
                    where=f"{where}._target_",
                )


def _values_to_check(override: Any) -> list[str]:
    """A swept key's values as override text: each of a choice or range, both ends of an interval."""
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    interval = override.value()
    # Hydra parses interval(1,8) as floats; an integer key would refuse "1.0"
    return [str(int(v)) if float(v).is_integer() else str(v) for v in (interval.start, interval.end)]


def check_sweep(overrides: list[str]) -> tuple[list[list[str]], str, list[DictConfig]]:
    """Check every planned job as a single run would be checked (exit 2 on the first mistake), before any starts.

    Returns the jobs, how the sweeper picks them, and each job's checked config (composed once, here).
    """
    from ftkit.config.checks import check
    from ftkit.config.compose import compose

    jobs, plan = planned_jobs(overrides)
    configs = []
    for job in jobs:
        try:
            configs.append(compose(job))
            check(configs[-1])
        except FtkitError as error:
            if len(jobs) > 1:
                error.problem = f"in the sweep job {' '.join(job)}: {error.problem}"
            raise
    return jobs, plan, configs


# The sweep that just ran (set by Leaderboard.on_multirun_end): `ftkit train -m` exits non-zero when every job failed.
finished_rows: list[dict[str, Any]] = []


def run_job(job: Callable[[], dict[str, Any]], job_dir: Path, overrides: list[str]) -> float:
    """Run one sweep job; record its result or its error in job_dir/result.json; return the objective (nan: failed).

    job() returns outcome(run_dir): {"objective": ..., "objective_metric": ..., "test": ..., ...}.
    """
    started = time.perf_counter()
    result: dict[str, Any] = {"overrides": overrides, "status": "ok"}
    try:
        outcome = job()
    except Exception as error:  # noqa: BLE001 - any failure becomes the job's row, the sweep goes on
        if debug():
            traceback.print_exc()
        message = str(error) if isinstance(error, FtkitError) else f"{type(error).__name__}: {error}"
        log.error("job failed: %s", message)
        result.update(status="failed", error=" ".join(message.split()), bad_input=isinstance(error, FtkitError))
    else:
        result.update(outcome)
    result["runtime_minutes"] = (time.perf_counter() - started) / 60
    write_result(job_dir, result)
    objective = result.get("objective")
    return float(objective) if isinstance(objective, (int, float)) else math.nan


def outcome(run_dir: Path) -> dict[str, Any]:
    """A finished run's objective and test metric, from the metrics.json it wrote (in process or by rank 0)."""
    run = RunDir(run_dir)
    if not run.metrics_file.exists():
        raise RuntimeError(f"the run finished without writing {run.metrics_file}")
    metrics = run.metrics()
    primary = metrics["primary_metric"]
    validation = (metrics.get("validation") or {}).get(primary)
    return {
        "status": "ok",
        "objective": validation if validation is not None else metrics["finetuned"][primary],
        # without a validation split the objective falls back to the test split, and the column says so
        "objective_metric": f"validation {primary}" if validation is not None else f"test {primary} (no validation)",
        "test": metrics["finetuned"][primary],
        "test_metric": f"test {primary}",
        "greater_is_better": metrics.get("greater_is_better", True),
    }


def write_result(job_dir: Path, result: dict[str, Any]) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(job_dir / SWEEP_RESULT, json.dumps(result, indent=2) + "\n")


def leaderboard_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory, best objective first, failed jobs last (in job order)."""
    rows = []
    job_dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for job_dir in sorted(job_dirs, key=lambda p: int(p.name)):
        path = job_dir / SWEEP_RESULT
        if path.exists():
            try:
                result = read_json(path)
            except FtkitError as error:  # a damaged result.json is that job's row, not the end of the leaderboard
                result = {"status": "failed", "error": str(error)}
            if not isinstance(result, dict):
                result = {"status": "failed", "error": f"{path} does not hold a result object"}
        else:
            result = {"status": "failed", "error": f"no {SWEEP_RESULT}: the job is running, or was killed"}
        rows.append({"job": int(job_dir.name), **result})
    good = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("objective"), (int, float))]
    bad = [r for r in rows if r not in good]
    descending = all(r.get("greater_is_better", True) for r in good)
    good.sort(key=lambda r: r["objective"], reverse=descending)
    return good + bad


def _shared(rows: list[dict[str, Any]]) -> set[str]:
    """The overrides every job has (said once, above the table); none when there is a single job."""
    return set.intersection(*(set(r.get("overrides", [])) for r in rows)) if len(rows) > 1 else set()


def _varied(row: dict[str, Any], shared: set[str]) -> str:
    """A job's own overrides, as typed (less the ++ ftkit adds to trainer.* keys)."""
    return " ".join(o.lstrip("+") for o in row.get("overrides", []) if o not in shared)


def write_leaderboard(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rebuild leaderboard.csv and leaderboard.md from the jobs' result files; the rows written (none: no jobs)."""
    rows = leaderboard_rows(sweep_dir) if sweep_dir.is_dir() else []
    if not rows:
        return rows
    metric = next((r["objective_metric"] for r in rows if r.get("objective_metric")), "objective")
    test_metric = next((r["test_metric"] for r in rows if r.get("test_metric")), "test")
    shared = _shared(rows)
    header = ["rank", "job", "overrides", metric, test_metric, "runtime_minutes", "status", "error"]
    table = [
        [
            str(rank) if row.get("status") == "ok" else "-",
            str(row["job"]),
            _varied(row, shared),
            _number(row.get("objective")),
            _number(row.get("test")),
            _number(row.get("runtime_minutes"), ".2f"),
            row.get("status", "failed"),
            row.get("error", ""),
        ]
        for rank, row in enumerate(rows, start=1)
    ]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *table])
    _write_atomically(sweep_dir / "leaderboard.csv", buffer.getvalue())
    common = " ".join(o.lstrip("+") for o in rows[0].get("overrides", []) if o in shared)
    lines = [f"# Sweep {sweep_dir}", "", f"Every job: `{common or '(no shared overrides)'}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
    _write_atomically(sweep_dir / "leaderboard.md", "\n".join(lines) + "\n")
    return rows


def _number(value: Any, fmt: str = ".4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not math.isnan(value) else ""


def _write_atomically(path: Path, text: str) -> None:
    """Parallel jobs rebuild the same leaderboard: write a private file, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Leaderboard(Callback):
    """Hydra callback (conf/train.yaml, hydra.callbacks): keeps <sweep dir>/leaderboard.{md,csv} up to date."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:
            write_leaderboard(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_leaderboard(sweep_dir)
        finished_rows[:] = rows
        if not rows:
            return
        failed = sum(r.get("status") != "ok" for r in rows)
        summary = f"Leaderboard: {sweep_dir / 'leaderboard.md'} ({len(rows)} jobs, {failed} failed)"
        best = rows[0]
        if best.get("status") == "ok":
            varied = _varied(best, _shared(rows)) or "(no varied overrides)"
            summary += f"; best: job {best['job']} {varied} -> {best['objective']:.4f}"
        print(summary, flush=True)
