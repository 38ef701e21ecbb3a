"""The run directory a person reads: config, metrics.json, predictions, report.md with plots, console summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.run_dir import (
    ADAPTER,
    CHECKPOINTS,
    CONFIG,
    LOG_HISTORY,
    METRICS,
    MODEL,
    OVERRIDES,
    PREDICTIONS,
    RunDir,
    log_file_name,
)

log = logging.getLogger("ftkit")


def write_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run.overrides_file.write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))


def write_report(
    run_dir: Path,
    cfg: DictConfig,
    recipe: Any,
    base: dict[str, Any] | None,
    finetuned: dict[str, Any],
    train_stats: dict[str, Any],
    log_history: list[dict[str, Any]],
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, predictions, plots and report.md; return the metrics written."""
    metrics = {
        "base": base["metrics"] if base else None,
        "finetuned": finetuned["metrics"],
        "validation": validation["metrics"] if validation else None,  # fine-tuned model; scored in sweeps
        "train": train_stats,
        "primary_metric": recipe.primary_metric,
        "greater_is_better": recipe.greater_is_better,
        "evaluation_seconds": {"base": base["seconds"] if base else None, "finetuned": finetuned["seconds"]},
    }
    run = RunDir(run_dir)
    run.log_history_file.write_text(json.dumps(log_history, indent=1) + "\n")
    _write_predictions(run_dir, recipe, base, finetuned)
    plots = _plot_loss(run_dir, log_history)
    if "confusion_matrix" in finetuned["metrics"]:
        plots += _plot_confusion(run_dir, base, finetuned)
    table = summary_table(metrics, recipe.primary_metric)
    run.report_file.write_text(_markdown(cfg, metrics, table, plots, run_dir))
    run.metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")  # last: its presence marks the run finished
    # One log record: Hydra's logging sends it to the console and to train.log alike.
    log.info("Summary\n%s\nRun directory: %s", table, run_dir)
    return metrics


def _write_predictions(run_dir: Path, recipe: Any, base: dict | None, finetuned: dict) -> None:
    folder = RunDir(run_dir).predictions_dir
    folder.mkdir(exist_ok=True)
    for name, result in (("base", base), ("finetuned", finetuned)):
        if result is not None:
            with (folder / f"{name}.jsonl").open("w") as out:
                for prediction in result["predictions"]:
                    out.write(json.dumps(prediction) + "\n")


def summary_table(metrics: dict[str, Any], primary: str) -> str:
    """Base vs fine-tuned headline metrics and the training cost, as a Markdown table."""
    tuned, base, train = metrics["finetuned"], metrics["base"] or {}, metrics["train"]
    # Multitask runs also put each task's primary metric at the top level as "<task>/<metric>".
    per_task = [k for k in tuned if "/" in k and isinstance(tuned[k], (int, float))]
    common = [k for k in ("macro_f1", "micro_f1", "rouge_l", "bleu", "perplexity") if k in tuned and k != primary]
    headline = [primary, *per_task, *common]

    def cell(value: Any, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("metric", "base", "fine-tuned"), ("---", "---", "---")]
    rows += [(name, cell(base.get(name)), cell(tuned.get(name))) for name in headline]
    rows += [
        ("training minutes", "", cell(train["train_minutes"], ".2f")),
        ("training tokens/s", "", cell(train["tokens_per_second"], ".1f")),
        ("peak memory (RSS, MB)", "", cell(train["peak_rss_mb"], ".0f")),
        # parameters + buffers of the trained model, adapter included (4-bit weights count packed); older runs lack it
        ("model weights (MB)", "", cell(train.get("weights_mb"), ".1f")),
    ]
    if "peak_gpu_mb" in train:
        rows.append(("peak GPU memory (MB)", "", cell(train["peak_gpu_mb"], ".0f")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows)


def _plot_loss(run_dir: Path, log_history: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    if not train and not evals:
        return []
    plots = RunDir(run_dir).plots_dir
    plots.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plots / "loss.png", dpi=110)
    plt.close(fig)
    return ["plots/loss.png"]


def _plot_confusion(run_dir: Path, base: dict | None, finetuned: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plots = RunDir(run_dir).plots_dir
    plots.mkdir(exist_ok=True)  # a run too short to log a loss has no plots/ yet
    panels = [("base", base), ("fine-tuned", finetuned)] if base else [("fine-tuned", finetuned)]
    labels = finetuned["metrics"]["confusion_matrix"]["labels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, result) in zip(axes[0], panels, strict=True):
        matrix = np.array(result["metrics"]["confusion_matrix"]["matrix"])
        ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, colorbar=False, xticks_rotation=40)
        ax.set_title(f"{title} (accuracy {result['metrics']['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(plots / "confusion_matrix.png", dpi=110)
    plt.close(fig)
    return ["plots/confusion_matrix.png"]


def _markdown(cfg: DictConfig, metrics: dict, table: str, plots: list[str], run_dir: Path) -> str:
    tuned = metrics["finetuned"]
    lines = [
        f"# {cfg.recipe.name}: {cfg.model.name} + "
        + ("full fine-tuning" if cfg.peft.method == "none" else f"{cfg.peft.method} (r={cfg.peft.r})"),
        "",
        f"Run directory: `{run_dir}`. Resolved config: `{CONFIG}`; command-line overrides: `{OVERRIDES}`.",
        "",
        "## Summary",
        "",
        table,
        "",
    ]
    if "per_class" in tuned:
        base_classes = (metrics["base"] or {}).get("per_class", {})
        lines += [
            "## Per class (test split)",
            "",
            "| label | support | base F1 | precision | recall | F1 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label, row in tuned["per_class"].items():
            base_f1 = base_classes.get(label, {}).get("f1")
            lines.append(
                f"| {label} | {row['support']} | {'-' if base_f1 is None else f'{base_f1:.3f}'} | "
                f"{row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |"
            )
        lines.append("")
    if "tasks" in tuned:
        base_tasks = (metrics["base"] or {}).get("tasks", {})
        lines += ["## Per task (test splits)", "", "| task | metric | base | fine-tuned |", "| --- | --- | --- | --- |"]
        for task, task_metrics in tuned["tasks"].items():
            for name, value in task_metrics.items():
                if isinstance(value, float):
                    base_value = base_tasks.get(task, {}).get(name)
                    shown = "-" if base_value is None else f"{base_value:.4f}"
                    lines.append(f"| {task} | {name} | {shown} | {value:.4f} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    lines += [
        "## Files",
        "",
        f"- `{MODEL}/`: the fine-tuned model and tokenizer (`AutoModelForCausalLM.from_pretrained('{MODEL}')`)"
        if cfg.peft.method == "none"
        else f"- `{ADAPTER}/`: {cfg.peft.method} adapter and tokenizer "
        f"(`PeftModel.from_pretrained(base, '{ADAPTER}')`)",
        f"- `{METRICS}`: base and fine-tuned metrics, training statistics",
        f"- `{PREDICTIONS}/`: per-example predictions of the base and fine-tuned models on the test split",
        f"- `{LOG_HISTORY}`, `{log_file_name(0)}`: the training log; `{CHECKPOINTS}/`: Trainer checkpoints",
        "",
    ]
    return "\n".join(lines)
