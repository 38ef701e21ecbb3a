"""The run directory a person reads: config, metrics.json, predictions, report.md with plots, console summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftkit.run_dir import (
    ADAPTER,
    AUGMENTED,
    CHECKPOINTS,
    CONFIG,
    LOG_HISTORY,
    METRICS,
    MODEL,
    OVERRIDES,
    PREDICTIONS,
    SPLITS,
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
    baselines: dict[str, dict[str, Any]] | None = None,
    test: list[dict[str, Any]] | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Write metrics.json, predictions, plots and report.md; return the metrics written.

    baselines: ftkit.reporting.baselines.run_baselines's results; test: the test records every result scored, for
    the bootstrap intervals and paired tests (evaluate.bootstrap_samples resamples, seeded with seed).
    """
    baselines = baselines or {}
    started = time.perf_counter()
    systems = {"finetuned": finetuned, **({"base": base} if base else {}), **baselines}
    uncertainty = uncertainty_of(recipe, test, systems, cfg.evaluate.bootstrap_samples, seed)
    if uncertainty is not None:
        uncertainty["seconds"] = time.perf_counter() - started
    metrics = {
        "base": base["metrics"] if base else None,
        "finetuned": finetuned["metrics"],
        # classification only: trained on the training split, scored on the test split like the models
        "baselines": {name: result["metrics"] for name, result in baselines.items()},
        "validation": validation["metrics"] if validation else None,  # fine-tuned model; scored in sweeps
        "train": train_stats,
        "primary_metric": recipe.primary_metric,
        "greater_is_better": recipe.greater_is_better,
        "evaluation_seconds": {
            "base": base["seconds"] if base else None,
            "finetuned": finetuned["seconds"],
            **{name: result["seconds"] for name, result in baselines.items()},  # fitting and predicting
        },
        "uncertainty": uncertainty,  # intervals and paired tests on the test split; None with bootstrap_samples=0
    }
    run = RunDir(run_dir)
    run.log_history_file.write_text(json.dumps(log_history, indent=1) + "\n")
    _write_predictions(run_dir, {"base": base, "finetuned": finetuned, **baselines})
    plots = _plot_loss(run_dir, log_history)
    if "confusion_matrix" in finetuned["metrics"]:
        plots += _plot_confusion(run_dir, base, finetuned)
    table = summary_table(metrics, recipe.primary_metric)
    run.report_file.write_text(_markdown(cfg, metrics, table, plots, run_dir))
    run.metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")  # last: its presence marks the run finished
    # One log record: Hydra's logging sends it to the console and to train.log alike.
    sentences = "".join(f"\n- {line}" for line in uncertainty_sentences(metrics))
    log.info("Summary\n%s%s\nRun directory: %s", table, sentences, run_dir)
    return metrics


def uncertainty_of(
    recipe: Any, test: list[dict[str, Any]] | None, systems: dict[str, dict[str, Any]], samples: int, seed: int
) -> dict[str, Any] | None:
    """Intervals of each system's scores on the test records and the first system's paired tests against the
    others (systems: name -> evaluation result; ftkit train puts the fine-tuned model first, ftkit eval has one);
    None without resamples, test records, or a per-example form of the recipe's metrics (instruct, multitask);
    preference pairs: intervals of the mean per-pair outcomes, paired bootstrap of preference accuracy."""
    from ftkit.reporting import statistics
    from ftkit.tasks.classification import ClassificationTask
    from ftkit.tasks.ner import NerTask
    from ftkit.tasks.preference import NOT_SHARES, PreferenceTask

    if not samples or not test:
        return None
    if isinstance(recipe, ClassificationTask):
        predicted = {name: [p["label"] for p in result["predictions"]] for name, result in systems.items()}
        return statistics.classification_uncertainty(
            [r["label"] for r in test], predicted, recipe.labels, samples, seed
        )
    if isinstance(recipe, NerTask):
        counts = {name: recipe.entity_counts(result["predictions"], test) for name, result in systems.items()}
        return statistics.entity_uncertainty(counts, samples, seed)
    if isinstance(recipe, PreferenceTask):
        outcomes = {name: recipe.outcomes(result["predictions"]) for name, result in systems.items()}
        return statistics.mean_uncertainty(outcomes, recipe.primary_metric, samples, seed, NOT_SHARES)
    return None


def _write_predictions(run_dir: Path, results: dict[str, dict[str, Any] | None]) -> None:
    folder = RunDir(run_dir).predictions_dir
    folder.mkdir(exist_ok=True)
    for name, result in results.items():
        if result is not None:
            with (folder / f"{name}.jsonl").open("w") as out:
                for prediction in result["predictions"]:
                    out.write(json.dumps(prediction) + "\n")


def summary_table(metrics: dict[str, Any], primary: str) -> str:
    """Baselines, base and fine-tuned headline metrics and the training cost, as a Markdown table."""
    tuned, base, train = metrics["finetuned"], metrics["base"] or {}, metrics["train"]
    baselines = metrics.get("baselines") or {}  # runs before baselines existed have none
    # Multitask runs also put each task's primary metric at the top level as "<task>/<metric>".
    per_task = [k for k in tuned if "/" in k and isinstance(tuned[k], (int, float))]
    shown = ("macro_f1", "micro_f1", "reward_margin", "likelihood_accuracy", "rouge_l", "field_accuracy", "bleu")
    common = [k for k in (*shown, "perplexity") if k in tuned and k != primary]
    headline = [primary, *per_task, *common]

    def cell(value: Any, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    blank = [""] * (len(baselines) + 1)  # the training rows have a value for the fine-tuned model only
    rows = [("metric", *baselines, "base", "fine-tuned"), ("---",) * (len(baselines) + 3)]
    rows += [
        (name, *(cell(scores.get(name)) for scores in baselines.values()), cell(base.get(name)), cell(tuned.get(name)))
        for name in headline
    ]
    rows += [
        ("training minutes", *blank, cell(train["train_minutes"], ".2f")),
        ("training tokens/s", *blank, cell(train["tokens_per_second"], ".1f")),
        ("peak memory (RSS, MB)", *blank, cell(train["peak_rss_mb"], ".0f")),
        # parameters + buffers of the trained model, adapter included (4-bit weights count packed); older runs lack it
        ("model weights (MB)", *blank, cell(train.get("weights_mb"), ".1f")),
    ]
    if "peak_gpu_mb" in train:
        rows.append(("peak GPU memory (MB)", *blank, cell(train["peak_gpu_mb"], ".0f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows)


def _display(system: str) -> str:
    return "fine-tuned" if system == "finetuned" else system


def _scores(metrics: dict[str, Any], system: str) -> dict[str, Any]:
    """A system's test metrics: the fine-tuned or base model's, or a baseline's."""
    if system in ("finetuned", "base"):
        return metrics[system] or {}
    return metrics["baselines"][system]


def _span(interval: list[float]) -> str:
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


def uncertainty_sentences(metrics: dict[str, Any]) -> list[str]:
    """What the intervals and paired tests say, in plain sentences (report.md and the console summary)."""
    from ftkit.reporting.statistics import ALPHA, WIDE

    uncertainty = metrics.get("uncertainty")
    if not uncertainty:
        return []
    n = uncertainty["examples"]
    lines = []
    if "accuracy" in uncertainty["points_per_example"]:
        lines.append(
            f"One test example moves accuracy by {uncertainty['points_per_example']['accuracy']:.1f} points "
            f"({n} test examples)."
        )
    elif "micro_recall" in uncertainty["points_per_example"]:
        lines.append(
            f"One gold entity moves entity recall by {uncertainty['points_per_example']['micro_recall']:.1f} points "
            f"({uncertainty['gold_entities']} gold entities in {n} test sentences)."
        )
    else:
        lines += [
            f"One test example moves {name} by {points:.1f} points ({n} test examples)."
            for name, points in uncertainty["points_per_example"].items()
        ]
    for name, interval in uncertainty["intervals"]["finetuned"].items():
        width, value = interval[1] - interval[0], metrics["finetuned"][name]
        if name in uncertainty.get("not_shares", ()):  # e.g. a reward margin: no percentage points
            lines.append(f"Fine-tuned {name} {value:.4f} (95% interval {_span(interval)}).")
        elif width >= WIDE:
            lines.append(
                f"Fine-tuned {name} {value:.4f} (95% interval {_span(interval)}) is uncertain: the interval is wide, "
                f"{100 * width:.1f} points; this test split cannot pin the score down more closely."
            )
        else:
            lines.append(f"Fine-tuned {name} {value:.4f} (95% interval {_span(interval)}, {100 * width:.1f} points).")
    for other, result in uncertainty["paired_tests"].items():
        if "difference" in result:
            detail = (
                f"{result.get('metric', 'entity F1')} difference {result['difference']:+.4f} "
                f"(95% interval {_span(result['interval'])})"
            )
            finetuned_ahead = result["difference"] > 0
        else:
            detail = (
                f"{result['only_this_correct']} test examples only the fine-tuned model gets right, "
                f"{result['only_other_correct']} only {other}"
            )
            finetuned_ahead = result["only_this_correct"] > result["only_other_correct"]
        verdict = (
            f"significant at {ALPHA:.2f}, in favour of {'the fine-tuned model' if finetuned_ahead else other}"
            if result["significant"]
            else f"not significant at {ALPHA:.2f}; this test split cannot tell the two apart"
        )
        lines.append(f"Fine-tuned vs {other}: {detail} ({result['test']}), p = {result['p_value']:.3g}: {verdict}.")
    return lines


def _uncertainty_markdown(metrics: dict[str, Any]) -> list[str]:
    """The report's section on the intervals and the paired tests."""
    uncertainty = metrics.get("uncertainty")
    if not uncertainty:
        return []
    intervals = uncertainty["intervals"]
    names = list(intervals["finetuned"])
    lines = [
        "## How sure these scores are (test split)",
        "",
        f"{uncertainty['method']}.",
        "",
        "| system | " + " | ".join(f"{name} | 95% interval" for name in names) + " |",
        "| --- |" + " --- | --- |" * len(names),
    ]
    for system, by_metric in intervals.items():
        scores = _scores(metrics, system)
        cells = [f"{scores[name]:.4f} | {_span(by_metric[name])}" for name in names]
        lines.append(f"| {_display(system)} | " + " | ".join(cells) + " |")
    tests = uncertainty["paired_tests"]
    if tests:
        lines.append("")
        if any("difference" in result for result in tests.values()):
            compared = next(iter(tests.values())).get("metric", "F1")  # entity F1, or a mean (preference_accuracy)
            lines += [
                f"| fine-tuned vs | test | {compared} difference | 95% interval | p | significant at 0.05 |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {other} | {r['test']} | {r['difference']:+.4f} | {_span(r['interval'])} | {r['p_value']:.3g} | "
                f"{'yes' if r['significant'] else 'no'} |"
                for other, r in tests.items()
            ]
        else:
            lines += [
                "| fine-tuned vs | test | only fine-tuned right | only the other right | p | significant at 0.05 |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {other} | {r['test']} | {r['only_this_correct']} | {r['only_other_correct']} | "
                f"{r['p_value']:.3g} | {'yes' if r['significant'] else 'no'} |"
                for other, r in tests.items()
            ]
    lines += ["", *(f"- {line}" for line in uncertainty_sentences(metrics)), ""]
    return lines


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
    lines += _training_data_markdown(cfg, metrics)
    lines += _uncertainty_markdown(metrics)
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    lines += [
        "## Files",
        "",
        f"- `{MODEL}/`: the fine-tuned model and tokenizer (`AutoModelForCausalLM.from_pretrained('{MODEL}')`)"
        if cfg.peft.method == "none"
        else f"- `{ADAPTER}/`: {cfg.peft.method} adapter and tokenizer "
        f"(`PeftModel.from_pretrained(base, '{ADAPTER}')`)",
        f"- `{METRICS}`: base, fine-tuned and baseline metrics, their intervals and paired tests, training statistics",
        f"- `{PREDICTIONS}/`: per-example predictions of the base and fine-tuned models (and of the baselines) on the "
        "test split",
        f"- `{LOG_HISTORY}`, `{log_file_name(0)}`: the training log; `{CHECKPOINTS}/`: Trainer checkpoints",
    ]
    if (run_dir / SPLITS).is_file():
        lines.append(f"- `{SPLITS}`: which records (file:line) went to which split, with a hash of each")
    if (run_dir / AUGMENTED).is_file():
        lines.append(f"- `{AUGMENTED}`: the training records data.augment made, each marked with its original")
    return "\n".join([*lines, ""])


def _training_data_markdown(cfg: DictConfig, metrics: dict[str, Any]) -> list[str]:
    """How the splits were made and what data.augment / data.balance did to the training split, when anything."""
    from ftkit.data.splits import describe_split

    data = cfg.recipe.get("data")
    how = describe_split(data) if data is not None else None
    preparation = (metrics.get("train") or {}).get("data_preparation") or {}
    lines = [f"- Splits: {how}."] if how else []
    augment = preparation.get("augment")
    if augment:
        lines.append(
            f"- data.augment={augment['method']} (factor {augment['factor']:g}): {augment['added']} new training "
            f"records of {augment['requested']} asked for, in {augment['seconds']:.1f} s (validation and test "
            "untouched)."
        )
    balance = preparation.get("balance")
    if balance:
        weights = balance.get("class_weights")
        done = (
            "loss weights " + ", ".join(f"{label} {weight:.3f}" for label, weight in weights.items())
            if weights
            else "records per class afterwards " + ", ".join(f"{k} {v}" for k, v in balance["counts_after"].items())
        )
        before = ", ".join(f"{label} {count}" for label, count in balance["counts_before"].items())
        lines.append(f"- data.balance={balance['method']}: records per class {before}; {done}.")
    return ["## Training data", "", *lines, ""] if lines else []
