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
from ftkit.run_dir import SWEEP_RESULT, RunDir

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
        result.update(status="failed", error=" ".join(message.split()))
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
            result = json.loads(path.read_text())
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
        if not rows:
            return
        failed = sum(r.get("status") != "ok" for r in rows)
        summary = f"Leaderboard: {sweep_dir / 'leaderboard.md'} ({len(rows)} jobs, {failed} failed)"
        best = rows[0]
        if best.get("status") == "ok":
            varied = _varied(best, _shared(rows)) or "(no varied overrides)"
            summary += f"; best: job {best['job']} {varied} -> {best['objective']:.4f}"
        print(summary, flush=True)
