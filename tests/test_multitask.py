"""recipe=multitask: one adapter on a weighted mixture of tasks, each task scored with its own metrics."""

from __future__ import annotations

import json

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from tests.conftest import tiny_overrides


def multitask(*overrides: str):
    cfg = compose(["recipe=multitask", *overrides]).recipe
    get_recipe_class("multitask").check_config(cfg)
    return get_recipe_class("multitask")(cfg)


def test_weights_set_each_tasks_share_of_the_training_mixture():
    recipe = multitask(
        "recipe.tasks.tickets.data.max_train_examples=40",
        "recipe.tasks.sentiment.data.max_train_examples=30",
        "recipe.weights.tickets=2",
        "recipe.weights.sentiment=0.5",
    )
    train = recipe.load_split("train")
    counts = {name: sum(r["task"] == name for r in train) for name in ("tickets", "sentiment")}
    assert counts == {"tickets": 80, "sentiment": 15}
    assert train == recipe.load_split("train")  # seeded: the same mixture every time
    assert [r["task"] for r in train[:20]] != sorted(r["task"] for r in train[:20])  # shuffled, not blocks

    test = recipe.load_split("test")
    assert {r["task"] for r in test[:2]} == {"tickets", "sentiment"}  # interleaved: any prefix holds both tasks
    example = recipe.to_example(test[1])
    assert set(example) == {"prompt", "completion"}  # no messages task: the classification shape is kept


def test_messages_mode_when_a_task_trains_on_assistant_turns():
    recipe = multitask()
    recipe.messages_mode = True  # what a task with sft_config assistant_only_loss=True switches on
    record = recipe.load_split("test")[0]
    messages = recipe.to_example(record)["messages"]
    assert messages[-1] == {"role": "assistant", "content": record["label"]}
    assert messages[:-1] == recipe.tasks[record["task"]].to_example(record)["prompt"]


def test_multitask_train_reports_each_task_side_by_side(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides(tiny_model, run_dir) if not o.startswith("recipe.data.")]
    result = run_ftkit(
        "train",
        "recipe=multitask",
        *overrides,
        "recipe.tasks.tickets.data.max_train_examples=24",
        "recipe.tasks.sentiment.data.max_train_examples=24",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for which in ("base", "finetuned"):
        tasks = metrics[which]["tasks"]
        assert set(tasks) == {"tickets", "sentiment"}
        assert tasks["tickets"]["examples"] + tasks["sentiment"]["examples"] == 24
        assert metrics[which]["tickets/accuracy"] == tasks["tickets"]["accuracy"]
        mean = (tasks["tickets"]["accuracy"] + tasks["sentiment"]["accuracy"]) / 2
        assert abs(metrics[which]["mean_primary"] - mean) < 1e-9
    report = (run_dir / "report.md").read_text()
    assert "## Per task" in report and "| sentiment | accuracy |" in report
    assert "tickets/accuracy" in result.stdout
    predictions = [json.loads(line) for line in (run_dir / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert {p["task"] for p in predictions} == {"tickets", "sentiment"}


def test_multitask_config_mistakes_exit_2(run_ftkit):
    result = run_ftkit("train", "recipe=multitask", "recipe.weights.tickets=-1")
    assert result.returncode == 2 and "use a weight >= 0" in result.stderr and "Traceback" not in result.stderr
    result = run_ftkit("train", "recipe=multitask", "recipe.tasks.sentiment.labels=[up,up]")
    assert result.returncode == 2 and "repeats up" in result.stderr
