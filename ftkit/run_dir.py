"""The run directory: the only code that knows its layout, and whether it holds a run, or a finished one.

`ftkit train` writes one per run (outputs/<recipe>/<date>/<time>, or multirun/<date>/<time>/<job>):

    config.yaml          the resolved config            overrides.yaml     what was typed on the command line
    adapter/ | model/    the trained weights (LoRA ...) | the whole model (peft=none)
    metrics.json         written last: its presence is what makes a run finished
    report.md, plots/, predictions/, log_history.json, train.log (+ train.rank<N>.log), checkpoints/,
    augmented.jsonl (data.augment's new training records),
    splits.json (what went where when recipe.data.split or folds split one file: ftkit.data.splits),
    deepspeed.json, launch.sbatch, slurm-<job>.out, eval/<stamp>/ (ftkit eval), result.json (a sweep job's outcome)

`ftkit cv` writes a cross-validation directory (cv/<recipe>/<date>/<time>): fold-<i>/, one run directory per
fold, and cv.json / cv.md, the folds' metrics with their mean and standard deviation.

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
AUGMENTED = "augmented.jsonl"  # the training records data.augment made, one JSON object per line
SPLITS = "splits.json"  # which records went to which split, when one file was split (ftkit.data.splits)
CV_RESULTS, CV_REPORT = "cv.json", "cv.md"  # ftkit cv's results, in the cross-validation directory
CV_FOLD = "fold-{}"  # ftkit cv: each fold's run directory, by fold number
DEEPSPEED_CONFIG = "deepspeed.json"
SBATCH_SCRIPT = "launch.sbatch"
SLURM_LOG = "slurm-{}.out"  # the SLURM job's output, by job id
EVALUATIONS = "eval"
EVAL_PREDICTIONS = "predictions.jsonl"  # ftkit eval's per-example output, beside its metrics.json
SWEEP_RESULT = "result.json"
EXPORT, EXPORT_ADAPTER = "export", "export-adapter"  # ftkit export's default folders (merged, adapter alone)
TENSORBOARD = "tensorboard"
WANDB = "wandb"
# What PEFT saves in adapter/ and transformers in model/: the config each library reads back, and the weights.
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model*.safetensors", "pytorch_model*.bin")

# The fix for a file in a run directory that does not read as ftkit wrote it.
RESTORE = (
    "this file was not written by ftkit, or was edited or cut short since: restore it from a copy of the run, "
    "or train the run again"
)


def log_file_name(rank: int) -> str:
    """train.log for the launching process and rank 0; train.rank<N>.log for the other ranks."""
    return "train.log" if rank == 0 else f"train.rank{rank}.log"


def malformed(file: Path, what: str, fix: str = RESTORE) -> FtkitError:
    """A file of a run directory that is not what ftkit (or the library it asked) wrote there."""
    return FtkitError(what, fix, where=str(file))


def read_text(file: Path) -> str:
    """A run directory's text file, or an FtkitError saying why it cannot be read."""
    try:
        return file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise malformed(file, "it is missing") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise malformed(file, f"it is not UTF-8 text (byte {byte:#04x} at offset {error.start})") from None
    except OSError as error:
        raise FtkitError(
            f"it cannot be read ({error.strerror or error})",
            "check that it is a file you may read (ls -l), then run the command again",
            where=str(file),
        ) from None


def read_yaml(file: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(read_text(file))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise malformed(file, f"it is not valid YAML ({getattr(error, 'problem', None) or error}{at})") from None


def read_json(file: Path) -> Any:
    try:
        return json.loads(read_text(file))
    except json.JSONDecodeError as error:
        raise malformed(
            file, f"it is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None


def describe(value: Any) -> str:
    """What a parsed value is, in a word or two, for saying what a file holds instead of what ftkit wrote."""
    if value is None:
        return "nothing (empty or null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _safetensors_problem(file: Path) -> str | None:
    """Why a .safetensors file is not whole (cut short, or not safetensors at all), or None.

    The format: an 8-byte little-endian header length, a JSON header of each tensor's byte range, then the data,
    which ends where the last range ends. Reading the header alone costs nothing next to loading the weights.
    """
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 0 or 8 + length > size:
                return f"it is cut short or not a safetensors file ({size} bytes, too few for its header)"
            header = json.loads(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "it is not a safetensors file (its header is not JSON)"
    except OSError as error:
        return f"it cannot be read ({error.strerror or error})"
    try:
        end = max([0, *(int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__")])
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "it is not a safetensors file (its header lists no tensor byte ranges)"
    if 8 + length + end != size:
        return f"it is cut short or padded: {size} bytes, where its header needs {8 + length + end}"
    return None


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
    def augmented_file(self) -> Path:
        return self.path / AUGMENTED

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS

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
        if (self.adapter_dir / ADAPTER_CONFIG).is_file():
            return self.adapter_dir
        if (self.model_dir / MODEL_CONFIG).is_file():
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

    # ---- reading: each file as ftkit wrote it, or an FtkitError naming the file, what is wrong and the fix ----
    def saved_overrides(self) -> list[str]:
        """The command-line overrides the run was started with (overrides.yaml): a list of key=value that parse."""
        from ftkit.config.overrides import rewrite_trainer_overrides

        overrides = read_yaml(self.overrides_file)
        if not isinstance(overrides, list):
            raise malformed(
                self.overrides_file,
                f"it holds {describe(overrides)}, where ftkit writes a list of overrides (key=value)",
            )
        for number, override in enumerate(overrides, start=1):
            if not isinstance(override, str):
                raise malformed(
                    self.overrides_file, f"its item {number} is {describe(override)}, where ftkit writes key=value"
                )
        try:
            rewrite_trainer_overrides(overrides)  # Hydra's grammar, and trainer.* names TRL still has
        except FtkitError as error:
            raise self.replay_refused(error) from None
        return overrides

    def replay_overrides(self) -> list[str]:
        """The overrides that compose this run's config again, without its own output location."""
        return [o for o in self.saved_overrides() if not o.lstrip("+").startswith("hydra.")]

    def replay_refused(self, error: FtkitError) -> FtkitError:
        """error, met parsing or composing the run's saved overrides, said as a problem of its overrides.yaml."""
        place = f"{error.where}: " if error.where and error.where != "command line" else ""
        return FtkitError(
            f"an override this run was trained with cannot be replayed: {place}{error.problem}",
            f"if the file was edited, restore it as ftkit wrote it; if ftkit changed since the run, correct that "
            f"override in the file ({error.fix}) or train the run again",
            where=str(self.overrides_file),
        )

    def saved_config(self) -> dict[str, Any]:
        """The resolved config the run trained with (config.yaml): a mapping naming a recipe this ftkit has."""
        from ftkit.recipes import names

        config = read_yaml(self.config_file)
        if not isinstance(config, dict):
            raise malformed(self.config_file, f"it holds {describe(config)}, where ftkit writes the run's config")
        recipe = config.get("recipe")
        name = recipe.get("name") if isinstance(recipe, dict) else None
        if name is None:
            raise malformed(self.config_file, "it has no recipe.name")
        if not isinstance(name, str):
            raise malformed(
                self.config_file, f"its recipe.name is {describe(name)}, where ftkit writes the recipe's name"
            )
        if name not in names():
            raise FtkitError(
                f"the run's recipe.name {name!r} is not a recipe of this ftkit ({', '.join(names())})",
                "if the file was edited, restore it as ftkit wrote it; if the recipe was renamed or removed since the "
                "run, use the ftkit version that trained it",
                where=str(self.config_file),
            )
        return config

    def config_text(self) -> str:
        """config.yaml as ftkit wrote it (a model card quotes it), once it reads as the run's config."""
        self.saved_config()
        return read_text(self.config_file)

    def metrics(self) -> dict[str, Any]:
        """What the run measured (metrics.json): the fine-tuned model's metrics, the training's, the primary metric."""
        metrics = read_json(self.metrics_file)
        if not isinstance(metrics, dict):
            raise malformed(self.metrics_file, f"it holds {describe(metrics)}, where ftkit writes an object of metrics")
        for key, kind in (("finetuned", dict), ("train", dict), ("primary_metric", str)):
            value = metrics.get(key)
            if value is None:
                raise malformed(self.metrics_file, f"it has no {key!r}")
            if not isinstance(value, kind):
                what = "an object" if kind is dict else "a metric's name"
                raise malformed(self.metrics_file, f"its {key!r} is {describe(value)}, where ftkit writes {what}")
        return metrics

    def saved_splits(self) -> dict[str, Any] | None:
        """What splits.json says went where (ftkit.data.splits.SplitReader.record); None when the run has none."""
        if not self.splits_file.exists():
            return None
        record = read_json(self.splits_file)
        if not isinstance(record, dict):
            raise malformed(self.splits_file, f"it holds {describe(record)}, where ftkit writes an object")
        if not isinstance(record.get("splits"), dict):
            raise malformed(self.splits_file, "it has no 'splits' object (each split's count, ids and sha256)")
        return record

    def check_weights(self) -> None:
        """The saved adapter/ (or model/) has the config its library reads back and whole weight files."""
        weights = self.trained_weights()
        if weights is None:
            return  # missing_for_finished names it
        if weights == self.adapter_dir:
            config_file, needed = weights / ADAPTER_CONFIG, ("peft_type", "base_model_name_or_path")
        else:
            config_file, needed = weights / MODEL_CONFIG, ("model_type",)
        config = read_json(config_file)
        if not isinstance(config, dict):
            raise malformed(config_file, f"it holds {describe(config)}, where the run saved an object")
        for key in needed:
            if not isinstance(config.get(key), str) or not config[key]:
                raise malformed(config_file, f"it has no {key}")
        files = sorted(file for pattern in WEIGHT_FILES for file in weights.glob(pattern) if file.is_file())
        if not files:
            raise malformed(weights, f"it holds no weights ({', '.join(WEIGHT_FILES)})")
        for file in files:
            problem = _safetensors_problem(file) if file.suffix == ".safetensors" else None
            if problem:
                raise malformed(file, problem)

    def check_readable(self) -> None:
        """Read every file eval, predict, export and serve read from a finished run: a bad one is refused before
        a model loads."""
        self.saved_overrides()
        self.saved_config()
        self.metrics()
        self.check_weights()

    @classmethod
    def containing(cls, path: str | Path) -> RunDir | None:
        """The run directory path is in (or is): the nearest folder at or above it with a run's files, else None.

        config.yaml with overrides.yaml or metrics.json beside it, not config.yaml alone: a project folder above
        the path may well have a config.yaml of its own.
        """
        here = Path(path).expanduser().resolve()
        for folder in (here, *here.parents):
            run = cls(folder)
            if run.config_file.is_file() and (run.overrides_file.is_file() or run.metrics_file.is_file()):
                return run
        return None

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
        run.check_readable()
        return run

    @classmethod
    def init_chain(cls, given: str | None) -> list[RunDir]:
        """The finished runs a run starts from, oldest first: recipe.init_from, the run that one started from, and so
        on (a DPO run can start from a DPO run that started from an SFT run). [] without init_from."""
        chain: list[RunDir] = []
        while given:
            run = cls.finished(given, "recipe.init_from", "recipe.init_from")
            if any(run.path.resolve() == earlier.path.resolve() for earlier in chain):
                raise FtkitError(
                    f"recipe.init_from leads back to {run.path}: the runs start from one another in a circle",
                    "point recipe.init_from at the SFT run the chain starts with",
                    where="recipe.init_from",
                )
            chain.append(run)
            recipe = run.saved_config()["recipe"]
            given = recipe.get("init_from") if isinstance(recipe, dict) else None
            if not isinstance(given, str):
                given = None
        return chain[::-1]

    def refuse_if_holds_run(self, where: str) -> None:
        """A new run never writes into a directory that holds one (resume continues a run in its own)."""
        if self.holds_run():
            raise FtkitError(
                f"{self.path} already holds a run (its {CONFIG} or {METRICS}), and ftkit does not write into it",
                f"give {where} a new directory, or leave it out for a fresh time-stamped one; to continue that run "
                f"from its latest checkpoint: ftkit train resume={self.path}",
                where=where,
            )

    def check_new(self, where: str) -> None:
        """What a new run may write into: a directory that is, or can be made, its own.

        Refused: no path (Hydra would use the current directory), a file, a directory that holds a run or lies
        inside one (an adapter/ folder, a checkpoint), and a place that cannot be created or written.
        """
        fresh = f"give {where} a new directory of its own, or leave it out for a fresh time-stamped one"
        try:
            self._check_new(where, fresh)
        except OSError as error:  # a name too long, a loop of links, a folder that is a file ...
            raise FtkitError(
                f"cannot use {str(self.path)[:200]} ({error.strerror or error})", fresh, where=where
            ) from None

    def _check_new(self, where: str, fresh: str) -> None:
        if not str(self.path).strip() or str(self.path) in (".", "./"):
            raise FtkitError(
                f"{where} is empty (or '.'), which would make the current directory the run directory",
                fresh,
                where=where,
            )
        if self.path.exists() and not self.path.is_dir():
            raise FtkitError(f"{self.path} is a file, not a directory", fresh, where=where)
        self.refuse_if_holds_run(where)
        inside = RunDir.containing(self.path.resolve().parent)
        if inside is not None:
            raise FtkitError(
                f"{self.path} lies inside the run directory {inside.path}, and ftkit does not write into a run",
                fresh,
                where=where,
            )
        _refuse_unwritable(self.path, where, fresh)


def _refuse_unwritable(path: Path, where: str, fix: str) -> None:
    """Create the directory (and its missing parents) to see that it can be, then remove what was created."""
    import contextlib
    import os

    created = []
    missing = path.absolute()
    try:
        while not missing.exists():
            created.append(missing)
            missing = missing.parent
        for folder in reversed(created):
            folder.mkdir()
        probe = path / f".ftkit-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FtkitError(f"cannot write into {path} ({error.strerror or error})", fix, where=where) from None
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # something else wrote into it meanwhile: leave it
                folder.rmdir()
