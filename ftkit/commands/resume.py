"""resume=true | resume=<dir>: which run a resumed `ftkit train` continues, and from which checkpoint.

Runs before Hydra creates a run directory and before torch loads. The resumed run writes into the run's own
directory (the one place ftkit writes into an existing run) with the run's own config: a resume that quietly
trained something else would be worse than none, so a config that differs from the run's is refused.
Trainer itself restores what the checkpoint holds: weights, optimizer, scheduler, RNG states, global step and
the position in the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.config.overrides import given_value, is_key, rewrite_trainer_overrides
from ftkit.errors import FtkitError
from ftkit.run_dir import (
    CHECKPOINT_PREFIX,
    CHECKPOINTS,
    CONFIG,
    METRICS,
    OVERRIDES,
    RunDir,
    describe,
    malformed,
    read_text,
)

log = logging.getLogger("ftkit")

# Trainer writes trainer_state.json last, after the weights, optimizer, scheduler and RNG states: a checkpoint
# whose trainer_state.json is whole was written to the end.
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
STATE_FILES = ("optimizer.pt", "scheduler.pt")
TRAINER_STATE = "trainer_state.json"


def plan(cfg: DictConfig, overrides: list[str]) -> tuple[Path, list[str]]:
    """(run directory, overrides) that continue the run cfg.resume names from one complete checkpoint.

    The caller composes the returned overrides and checks them with check_same_config.
    """
    own = [o for o in overrides if not is_key(o, "resume") and not is_key(o, "hydra.run.dir")]
    checkpoint = None
    if cfg.resume is True:
        run_dir = _latest_run_of(cfg, _given_run_dir(overrides))
        replayed = own
    else:
        run_dir, checkpoint = _named(Path(str(cfg.resume)).expanduser())
        replayed = _saved_overrides(run_dir) + own
    _refuse_finished(run_dir)
    RunDir(run_dir).saved_config()  # check_same_config compares with it: a malformed one is refused here, first
    if checkpoint is None:
        checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise _no_checkpoint(run_dir)
    log.info("Resuming %s from %s (step %d)", run_dir, checkpoint.name, step_of(checkpoint))
    return run_dir, [*replayed, f"hydra.run.dir={run_dir.resolve()}", f"resume={checkpoint.resolve()}"]


def check_same_config(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a config other than the one it was started with."""
    differences = config_differences(cfg, run_dir)
    if differences:
        shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        raise FtkitError(
            f"resuming {run_dir} with a config that differs from the run's own ({shown})",
            "drop those overrides to continue the run as it was, or start a new run without resume",
            where="resume",
        )


def config_differences(cfg: DictConfig, run_dir: Path) -> list[str]:
    """'key: run has A, now B' for every value that differs from the run's config.yaml (resume itself aside)."""
    saved = _flat(RunDir(run_dir).saved_config())
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    # Keys that do not change what the run computes: resuming with another value is the same run.
    ignored = {"resume", "dry_run", "cache_preprocessing"}
    keys = sorted((set(saved) | set(now)) - ignored)
    return [f"{k}: run has {saved.get(k)!r}, now {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def latest_checkpoint(run_dir: Path, up_to: int | None = None) -> Path | None:
    """The newest complete checkpoint of a run (at most step up_to); each newer, incomplete one is named in a
    warning."""
    found = [c for c in RunDir(run_dir).checkpoints() if up_to is None or step_of(c) <= up_to]
    for checkpoint in sorted(found, key=step_of, reverse=True):
        problem = incomplete(checkpoint)
        if problem is None:
            return checkpoint
        log.warning("Skipping %s: %s (killed while saving?); using the previous checkpoint", checkpoint, problem)
    return None


def incomplete(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it was written to the end.

    A trainer_state.json that is missing or not JSON is a save that was cut short: the checkpoint is skipped. One
    that is whole JSON but not what Trainer writes was edited, and raises an FtkitError naming it.
    """
    state_file = checkpoint / TRAINER_STATE
    if not state_file.exists():
        return f"it has no {TRAINER_STATE}"
    try:
        state = json.loads(read_text(state_file))  # Trainer writes ASCII: bytes that are not UTF-8 raise
    except json.JSONDecodeError:
        return f"its {TRAINER_STATE} is cut short"
    fix = (
        "this file was not written by Trainer, or was edited since: restore it, or remove the folder "
        f"{checkpoint} to resume from the checkpoint before it"
    )
    if not isinstance(state, dict):
        raise malformed(state_file, f"it holds {describe(state)}, where Trainer writes an object", fix)
    if "global_step" not in state:
        raise malformed(state_file, "it has no global_step", fix)
    step = state["global_step"]
    if not isinstance(step, int) or isinstance(step, bool):
        raise malformed(state_file, f"its global_step is {describe(step)}, where Trainer writes the step number", fix)
    if step != step_of(checkpoint):
        return f"its {TRAINER_STATE} is for step {step}"
    if not any((checkpoint / name).is_file() for name in WEIGHTS) and not any(checkpoint.glob("global_step*")):
        return "it holds no weights"
    missing = [name for name in STATE_FILES if not (checkpoint / name).is_file()]
    if missing and not any(checkpoint.glob("global_step*")):  # DeepSpeed keeps these under global_step<N>/
        return f"it has no {', '.join(missing)}"
    return None


def step_of(checkpoint: Path) -> int:
    suffix = checkpoint.name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if suffix.isdigit() else -1


def _named(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint or None for its latest) from resume=<checkpoint dir or run dir>."""
    if path.name.startswith(CHECKPOINT_PREFIX) and path.parent.name == CHECKPOINTS and path.is_dir():
        run_dir = path.parent.parent
        _require_run_dir(run_dir, path)
        checkpoint = latest_checkpoint(run_dir, up_to=step_of(path))  # path itself, or the one before it
        if checkpoint is None:
            raise _no_checkpoint(run_dir, up_to=step_of(path))
        return run_dir, checkpoint
    _require_run_dir(path, path)
    return path, None


def _no_checkpoint(run_dir: Path, up_to: int | None = None) -> FtkitError:
    found = [c for c in RunDir(run_dir).checkpoints() if up_to is None or step_of(c) <= up_to]
    # incomplete() gives a reason for each here: latest_checkpoint found none of them complete
    why = (
        "; ".join(f"{c.name}: {incomplete(c)}" for c in sorted(found, key=step_of))
        or "it stopped before its first save"
    )
    return FtkitError(
        f"{run_dir} has no complete checkpoint to resume from ({why})",
        "start it again without resume, and save more often if runs get cut short, e.g. "
        "trainer.save_strategy=steps trainer.save_steps=50",
        where="resume",
    )


def _require_run_dir(run_dir: Path, given: Path) -> None:
    if not RunDir(run_dir).is_started():
        raise FtkitError(
            f"{given} is not a checkpoint or run directory of an ftkit run (no {CONFIG} and {OVERRIDES} in {run_dir})",
            "give resume=true for the latest unfinished run of this config, or resume=<run dir> or "
            f"resume=<run dir>/{CHECKPOINTS}/{CHECKPOINT_PREFIX}<step>",
            where="resume",
        )


def _latest_run_of(cfg: DictConfig, given: Path | None) -> Path:
    """The newest unfinished run whose config equals cfg: hydra.run.dir if given, else under outputs/<recipe>/."""
    if given is not None:
        _require_run_dir(given, given)
        check_same_config(cfg, given)
        return given
    root = Path("outputs") / str(cfg.recipe.name)
    configs = sorted(root.glob(f"*/*/{RunDir(root).config_file.name}"), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = [config.parent for config in configs]
    newest = ""
    for run_dir in runs:
        try:
            differences = config_differences(cfg, run_dir)
        except FtkitError as error:
            # another run's damaged config.yaml: it is not this config's run, and no reason to stop looking
            log.warning("Skipping %s: %s", run_dir, error)
            continue
        if not differences:
            return run_dir
        newest = newest or f"; the newest, {run_dir}, differs: {differences[0]}"
    raise FtkitError(
        f"resume=true found no run of this config under {root.resolve()} ({len(runs)} runs looked at{newest})",
        "run it from the directory you started the run in, with the same overrides, or name the run: resume=<run dir>",
        where="resume",
    )


def _refuse_finished(run_dir: Path) -> None:
    if RunDir(run_dir).metrics_file.is_file():
        raise FtkitError(
            f"{run_dir} finished (it has {METRICS}), so there is nothing to resume",
            "start a new run without resume; to train longer, start one with more trainer.num_train_epochs",
            where="resume",
        )


def _saved_overrides(run_dir: Path) -> list[str]:
    """The run's own overrides, once they compose alone: a key ftkit renamed since, or an edit, is said of its
    overrides.yaml, not of the command line."""
    from ftkit.config.compose import compose

    run = RunDir(run_dir)
    saved = [o for o in run.saved_overrides() if not is_key(o, "resume") and not is_key(o, "hydra.run.dir")]
    try:
        compose(rewrite_trainer_overrides(saved))
    except FtkitError as error:
        raise run.replay_refused(error) from None
    return saved


def _given_run_dir(overrides: list[str]) -> Path | None:
    given = given_value(overrides, "hydra.run.dir")
    return Path(given).expanduser() if given is not None else None


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}
