"""The run directory: the only code that knows its layout, and whether it holds a run, or a finished one.

`ftkit train` writes one per run (outputs/<recipe>/<date>/<time>, or multirun/<date>/<time>/<job>):

    config.yaml          the resolved config            overrides.yaml     what was typed on the command line
    adapter/ | model/    the trained weights (LoRA ...) | the whole model (peft=none)
    metrics.json         written last: its presence is what makes a run finished
    report.md, plots/, predictions/, log_history.json, train.log (+ train.rank<N>.log), checkpoints/,
    deepspeed.json, launch.sbatch, slurm-<job>.out, eval/<stamp>/ (ftkit eval), result.json (a sweep job's outcome)

Every command that reads a run or refuses one asks here: eval, predict, export, serve, resume, sweep leaderboards,
and train itself (which never writes into a directory that holds a run, resume aside).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
METRICS = "metrics.json"
ADAPTER = "adapter"
MODEL = "model"
CHECKPOINTS = "checkpoints"  # the Trainer's output_dir
CHECKPOINT_PREFIX = "checkpoint-"
REPORT = "report.md"
PLOTS = "plots"
PREDICTIONS = "predictions"
LOG_HISTORY = "log_history.json"
DEEPSPEED_CONFIG = "deepspeed.json"
SBATCH_SCRIPT = "launch.sbatch"
SLURM_LOG = "slurm-{}.out"  # the SLURM job's output, by job id
EVALUATIONS = "eval"
EVAL_PREDICTIONS = "predictions.jsonl"  # ftkit eval's per-example output, beside its metrics.json
SWEEP_RESULT = "result.json"
EXPORT, EXPORT_ADAPTER = "export", "export-adapter"  # ftkit export's default folders (merged, adapter alone)
TENSORBOARD = "tensorboard"
WANDB = "wandb"


def log_file_name(rank: int) -> str:
    """train.log for the launching process and rank 0; train.rank<N>.log for the other ranks."""
    return "train.log" if rank == 0 else f"train.rank{rank}.log"


class RunDir:
    """One run directory: its files by name, and what state the run is in."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- files ----------------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def overrides_file(self) -> Path:
        return self.path / OVERRIDES

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def report_file(self) -> Path:
        return self.path / REPORT

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    @property
    def predictions_dir(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def log_history_file(self) -> Path:
        return self.path / LOG_HISTORY

    @property
    def deepspeed_config(self) -> Path:
        return self.path / DEEPSPEED_CONFIG

    @property
    def sbatch_script(self) -> Path:
        return self.path / SBATCH_SCRIPT

    @property
    def evaluations_dir(self) -> Path:
        return self.path / EVALUATIONS

    @property
    def sweep_result(self) -> Path:
        return self.path / SWEEP_RESULT

    def export_dir(self, merged: bool) -> Path:
        return self.path / (EXPORT if merged else EXPORT_ADAPTER)

    def weights_dir(self, full_fine_tuning: bool) -> Path:
        """Where a run saves what it trained: model/ for peft=none, adapter/ otherwise."""
        return self.model_dir if full_fine_tuning else self.adapter_dir

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"

    def checkpoints(self) -> list[Path]:
        return list(self.checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*"))

    # ---- state ----------------------------------------------------------------------------------------------
    def trained_weights(self) -> Path | None:
        """What the run saved: adapter/ (LoRA, QLoRA, DoRA) or model/ (peft=none); None if neither."""
        if (self.adapter_dir / "adapter_config.json").is_file():
            return self.adapter_dir
        if (self.model_dir / "config.json").is_file():
            return self.model_dir
        return None

    def holds_run(self) -> bool:
        """Whether a run was started here (its config.yaml or metrics.json exists): train never writes into it."""
        return self.config_file.exists() or self.metrics_file.exists()

    def is_started(self) -> bool:
        """A run that can be resumed or replayed: both its config.yaml and its overrides.yaml were written."""
        return self.config_file.is_file() and self.overrides_file.is_file()

    def is_finished(self) -> bool:
        """A run that ended: started, its trained weights saved and its metrics.json written (written last)."""
        return not self.missing_for_finished()

    def missing_for_finished(self) -> list[str]:
        """What a finished run has and this directory lacks, by name."""
        missing = [name for name in (CONFIG, OVERRIDES, METRICS) if not (self.path / name).is_file()]
        if self.trained_weights() is None:
            missing.insert(0, f"{ADAPTER}/ or {MODEL}/")
        return missing

    # ---- reading --------------------------------------------------------------------------------------------
    def saved_overrides(self) -> list[str]:
        """The command-line overrides the run was started with (overrides.yaml)."""
        import yaml

        return list(yaml.safe_load(self.overrides_file.read_text()) or [])

    def replay_overrides(self) -> list[str]:
        """The overrides that compose this run's config again, without its own output location."""
        return [o for o in self.saved_overrides() if not o.lstrip("+").startswith("hydra.")]

    def saved_config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.config_file.read_text()) or {}

    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_file.read_text())

    # ---- refusing -------------------------------------------------------------------------------------------
    @classmethod
    def finished(cls, given: str | Path | None, where: str, command: str) -> RunDir:
        """The finished run `given` names, or an FtkitError saying what it lacks and how to get one."""
        if given is None or str(given) == "":
            raise FtkitError(
                f"{command} needs the run to use",
                f"give {where}=<run dir> (the directory `ftkit train` printed at the end)",
                where=where,
            )
        run = cls(given)
        if not run.is_finished():
            lacks = f"; missing: {', '.join(run.missing_for_finished())}" if run.path.is_dir() else ""
            raise FtkitError(
                f"{run.path} is not a finished ftkit run (it needs {ADAPTER}/ or {MODEL}/, {CONFIG}, {OVERRIDES} and "
                f"{METRICS}{lacks})",
                f"pass {where}=<the directory a completed `ftkit train` printed at the end, "
                "outputs/<recipe>/<date>/<time>>; an interrupted run first needs ftkit train resume=<run dir>",
                where=where,
            )
        return run

    def refuse_if_holds_run(self, where: str) -> None:
        """A new run never writes into a directory that holds one (resume continues a run in its own)."""
        if self.holds_run():
            raise FtkitError(
                f"{self.path} already holds a run (its {CONFIG} or {METRICS}), and ftkit does not write into it",
                f"give {where} a new directory, or leave it out for a fresh time-stamped one; to continue that run "
                f"from its latest checkpoint: ftkit train resume={self.path}",
                where=where,
            )
