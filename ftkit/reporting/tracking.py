"""Experiment tracking (logger=wandb | tensorboard | none): what Trainer logs, plus the run's config and results.

Trainer's own callbacks log the training curves (`report_to`). ftkit adds what they do not know: the resolved
ftkit config, tags and group, and after evaluation the base and fine-tuned metrics, the report's tables and plots.
W&B never prompts: without credentials (no WANDB_API_KEY, no `wandb login`) and no WANDB_MODE, the run is
logged offline into the run directory with a one-line notice, ready for `wandb sync`.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.run_dir import TENSORBOARD, WANDB, RunDir

log = logging.getLogger("ftkit")

LOGGERS = ["none", "wandb", "tensorboard"]  # checked in ftkit.config.check
WANDB_MODES = ["auto", "online", "offline", "disabled"]


def report_to(cfg: DictConfig) -> str:
    """Trainer's `report_to` for the chosen logger (the logger names are Trainer's own)."""
    return cfg.logger.name


def wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg: DictConfig) -> str:
    """online / offline / disabled: logger.mode, else WANDB_MODE, else online only with credentials."""
    if cfg.logger.mode != "auto":
        return cfg.logger.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials() else "offline"


def tags(cfg: DictConfig) -> list[str]:
    return [cfg.recipe.name, cfg.model.name, cfg.peft.method, *cfg.logger.tags]


def start(cfg: DictConfig, run_dir: Path, group: str | None) -> Any:
    """Open the tracker run on the main rank, before the Trainer (whose callback then logs into it)."""
    if cfg.logger.name == "wandb":
        return _start_wandb(cfg, run_dir, group)
    if cfg.logger.name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        # where Trainer's callback writes
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TENSORBOARD)
        writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD))
        writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```")
        return writer
    return None


def _start_wandb(cfg: DictConfig, run_dir: Path, group: str | None) -> Any:
    mode = wandb_mode(cfg)
    if mode == "offline" and cfg.logger.mode == "auto" and not os.environ.get("WANDB_MODE"):
        log.warning(
            "W&B: no credentials (WANDB_API_KEY or `wandb login`), so this run is logged offline in %s; "
            "upload it later with: wandb sync %s",
            run_dir / WANDB,
            run_dir / WANDB / "offline-run-*",
        )
    os.environ["WANDB_MODE"] = mode  # Trainer's callback and wandb's service process read it too
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    # A resumed run continues its W&B run: the same id, found in the run directory's wandb folder
    # ([offline-]run-<time>-<id>). Offline, wandb starts a new file with that id; `wandb sync` uploads them in order.
    earlier = sorted(run_dir.glob(f"{WANDB}/*run-*-*/")) if cfg.get("resume") else []
    run_id = earlier[-1].name.rsplit("-", 1)[1] if earlier else None
    if run_id:
        log.info("W&B: continuing run %s", run_id)
    return wandb.init(
        id=run_id,
        resume="allow" if run_id else None,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group or group,
        name=cfg.logger.run_name or f"{cfg.recipe.name}-{run_dir.name}",
        tags=tags(cfg),
        dir=str(run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        mode=mode,
    )


def finish(cfg: DictConfig, tracker: Any, run_dir: Path, metrics: dict[str, Any], primary: str) -> None:
    """Log the evaluation (metrics, per-class table, plots, report) into the tracker run and close it."""
    if tracker is None:
        return
    # base/* and finetuned/*: the test split; validation/*: the fine-tuned model on validation (sweeps' objective)
    flat = {
        f"{part}/{key}": value
        for part in ("base", "finetuned", "validation")
        for key, value in (metrics.get(part) or {}).items()
        if isinstance(value, (int, float))
    }
    flat.update({f"run/{k}": v for k, v in metrics["train"].items() if isinstance(v, (int, float))})
    plots = sorted(RunDir(run_dir).plots_dir.glob("*.png"))
    if cfg.logger.name == "wandb":
        import wandb

        tracker.summary.update({**flat, "primary_metric": primary})
        media = {f"plots/{png.stem}": wandb.Image(str(png)) for png in plots}
        tracker.log({**media, **_wandb_tables(wandb, metrics)})
        tracker.finish()
        return
    step = int(metrics["train"].get("global_step") or 0)
    for key, value in flat.items():
        tracker.add_scalar(key, value, step)
    report = RunDir(run_dir).report_file
    if report.exists():
        tracker.add_text("report", report.read_text())
    for png in plots:
        import matplotlib.image

        tracker.add_image(f"plots/{png.stem}", matplotlib.image.imread(png)[..., :3], step, dataformats="HWC")
    tracker.close()


def close(tracker: Any, exit_code: int) -> None:
    """Close the tracker run of a run that stopped before evaluation (interrupted), marking it failed in W&B."""
    if tracker is None:
        return
    if hasattr(tracker, "finish"):  # a wandb run
        tracker.finish(exit_code=exit_code)
    else:  # a TensorBoard SummaryWriter
        tracker.close()


def _wandb_tables(wandb: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-class (or per-type) rows of the fine-tuned metrics, when the recipe reports them."""
    per_class = (metrics.get("finetuned") or {}).get("per_class") or (metrics.get("finetuned") or {}).get("per_type")
    if not isinstance(per_class, dict) or not per_class:
        return {}
    columns = sorted({key for row in per_class.values() if isinstance(row, dict) for key in row})
    rows = [[name, *(row.get(c) for c in columns)] for name, row in per_class.items() if isinstance(row, dict)]
    return {"tables/finetuned_per_class": wandb.Table(columns=["name", *columns], data=rows)}
