"""`ftkit eval` and `ftkit predict` on a trained tiny run: same numbers as training reported, JSONL in and out."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_overrides


@pytest.fixture()
def trained_run(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "trainer.learning_rate=5e-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_eval_reproduces_the_runs_finetuned_metrics(run_ftkit, trained_run, tmp_path):
    out = tmp_path / "eval-out"
    result = run_ftkit("eval", f"run={trained_run}", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((trained_run / "metrics.json").read_text())["finetuned"]
    evaluated = json.loads((out / "metrics.json").read_text())
    # The run's overrides (tiny model, 24 test examples) were replayed, and its adapter loaded.
    assert evaluated["metrics"]["examples"] == 24
    assert evaluated["metrics"]["accuracy"] == pytest.approx(trained["accuracy"])
    assert evaluated["metrics"]["confusion_matrix"] == trained["confusion_matrix"]
    finetuned_predictions = (trained_run / "predictions" / "finetuned.jsonl").read_text().splitlines()
    eval_predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(p)["label"] for p in eval_predictions] == [json.loads(p)["label"] for p in finetuned_predictions]
    assert "| accuracy |" in result.stdout

    # A second eval into the same folder would overwrite it: refused.
    again = run_ftkit("eval", f"run={trained_run}", f"out={out}")
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_eval_of_the_base_model_on_another_test_file(run_ftkit, tiny_model, tmp_path):
    test_file = tmp_path / "more.jsonl"
    test_file.write_text(
        json.dumps({"text": "conveyor belt torn at the tail pulley", "label": "Mechanical"})
        + "\n"
        + json.dumps({"text": "breaker trips on the main panel", "label": "Electrical"})
        + "\n"
    )
    overrides = [o for o in tiny_overrides(tiny_model, tmp_path / "unused") if not o.startswith("hydra.")]
    result = run_ftkit("eval", *overrides, f"recipe.data.test={test_file}", f"out={tmp_path / 'base-eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "base-eval" / "metrics.json").read_text())
    assert metrics["adapter"] is None and metrics["metrics"]["examples"] == 2


def test_predict_reads_stdin_and_writes_jsonl(run_ftkit, trained_run, tmp_path):
    records = [json.loads(line) for line in (trained_run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    from ftkit.config.compose import compose
    from ftkit.recipes import get_recipe_class

    test = get_recipe_class("tickets")(compose([]).recipe).load_split("test")[:3]
    lines = "".join(json.dumps({"id": i, "text": r["text"]}) + "\n\n" for i, r in enumerate(test))
    result = run_ftkit("predict", f"run={trained_run}", stdin=lines)
    assert result.returncode == 0, result.stderr[-3000:]
    out = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [o["input"]["id"] for o in out] == [0, 1, 2]
    # The same tickets get the same labels as in the run's own evaluation (predictions are deterministic).
    assert [o["prediction"]["label"] for o in out] == [r["label"] for r in records[:3]]

    output = tmp_path / "predictions.jsonl"
    to_file = run_ftkit("predict", f"run={trained_run}", f"input={_write(tmp_path, lines)}", f"output={output}")
    assert to_file.returncode == 0, to_file.stderr[-3000:]
    assert len(output.read_text().splitlines()) == 3


def _write(tmp_path, text: str):
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        (["run=/nonexistent/run"], None, ["not a finished ftkit run", "run="]),
        (["input=/nonexistent.jsonl"], None, ["no input file", "input=-"]),
        ([], '{"body": "no text field"}\n', ["<stdin>:1", "text"]),
        ([], "not json\n", ["<stdin>:1", "not valid JSON"]),
        (["--cfg", "job"], "", ["takes no flag '--cfg'"]),
    ],
)
def test_predict_input_mistakes_exit_2(run_ftkit, tiny_model, tmp_path, args, stdin, fragments):
    overrides = [o for o in tiny_overrides(tiny_model, tmp_path / "unused") if not o.startswith("hydra.")]
    result = run_ftkit("predict", *overrides, *args, stdin=stdin)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.parametrize(
    ("recipe", "line", "key"),
    [
        ("sentiment", {"text": "Acme shares jump 12% after record quarter"}, "label"),
        ("ner", {"text": "The patient has a history of cystic fibrosis ."}, "entities"),
        ("sft_instruct", {"instruction": "Name a primary colour."}, "generation"),
        ("report", {"instruction": "Generate a maintenance report", "input": "Motor ID: M-1"}, "generation"),
    ],
)
def test_predict_with_every_recipe(run_ftkit, tiny_model, tmp_path, recipe, line, key):
    overrides = [o for o in tiny_overrides(tiny_model, tmp_path / "unused") if not o.startswith(("hydra.", "recipe."))]
    extra = ["recipe.max_new_tokens=4"] if recipe != "sentiment" else []
    result = run_ftkit("predict", f"recipe={recipe}", *overrides, *extra, stdin=json.dumps(line) + "\n")
    assert result.returncode == 0, result.stderr[-3000:]
    (out,) = [json.loads(text) for text in result.stdout.splitlines() if text.strip()]
    assert out["input"] == line and key in out["prediction"]
