"""`ftkit eval` and `ftkit predict` on a trained tiny run: same numbers as training reported, JSONL in and out.

And what they refuse before a model loads: a run directory whose files are not what ftkit wrote (RunDir's readers,
on copies of tests/bad_inputs/runs/good), and an output that would overwrite a file or write into a run.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from ftkit.commands.evaluate import _new_file, check_out_dir, check_output
from ftkit.errors import FtkitError
from ftkit.run_dir import RunDir
from tests.conftest import REPO, tiny_overrides

GOOD_RUN = REPO / "tests" / "bad_inputs" / "runs" / "good"


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
    trained_metrics = json.loads((trained_run / "metrics.json").read_text())
    trained = trained_metrics["finetuned"]
    evaluated = json.loads((out / "metrics.json").read_text())
    # the same predictions, resamples and seed: the run's intervals
    intervals = trained_metrics["uncertainty"]["intervals"]["finetuned"]
    assert evaluated["uncertainty"]["intervals"] == {"finetuned": intervals}
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

    # The same command again would overwrite those predictions: refused, the file as it was.
    written = output.read_bytes()
    again = run_ftkit("predict", f"run={trained_run}", f"input={tmp_path / 'in.jsonl'}", f"output={output}")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert output.read_bytes() == written


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


# ---- a run directory's files, read through RunDir: what ftkit wrote, or an FtkitError naming the file -------------
@pytest.fixture()
def good_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(GOOD_RUN, tmp_path / "run"))


def test_the_good_run_reads_as_written(good_run):
    run = RunDir.finished(good_run, where="run", command="ftkit eval")
    assert run.saved_overrides() == [
        "peft.r=8",
        "trainer.learning_rate=5e-3",
        "hydra.run.dir=outputs/tickets/2026-12-01/10-00-00",
    ]
    assert run.replay_overrides() == ["peft.r=8", "trainer.learning_rate=5e-3"]
    assert run.saved_config()["recipe"]["name"] == "tickets"
    assert run.config_text() == (good_run / "config.yaml").read_text()
    assert run.metrics()["finetuned"]["accuracy"] == 0.75


def _safetensors(header: object, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


TENSOR = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("file", "content", "fragments"),
    [
        ("overrides.yaml", "- a: [1\n", ["overrides.yaml", "not valid YAML", "line 2"]),
        ("overrides.yaml", "null\n", ["overrides.yaml", "holds nothing"]),
        ("overrides.yaml", "- peft.r=8\n- [a, b]\n", ["overrides.yaml", "item 2 is a list"]),
        (
            "overrides.yaml",
            "- peft.r=8\n- ++trainer.learning_rat=1\n",
            ["overrides.yaml", "cannot be replayed", "learning_rat"],
        ),
        ("config.yaml", "recipe: tickets\n", ["config.yaml", "no recipe.name"]),
        ("config.yaml", "recipe:\n  name: [tickets]\n", ["config.yaml", "recipe.name is a list"]),
        (
            "config.yaml",
            "recipe:\n  name: sentimental\n",
            ["config.yaml", "'sentimental' is not a recipe", "sentiment"],
        ),
        ("config.yaml", b"recipe:\n  name: tickets\n# \xff\n", ["config.yaml", "not UTF-8", "0xff"]),
        ("metrics.json", "", ["metrics.json", "not valid JSON"]),
        ("metrics.json", '{"finetuned": [0.7], "train": {}, "primary_metric": "accuracy"}', ["'finetuned' is a list"]),
        ("metrics.json", '{"finetuned": {}, "train": {}, "primary_metric": 1}', ["'primary_metric' is the number 1"]),
        ("adapter/adapter_config.json", "[]", ["adapter_config.json", "holds a list"]),
        (
            "adapter/adapter_config.json",
            '{"peft_type": "LORA", "base_model_name_or_path": ""}',
            ["no base_model_name_or_path"],
        ),
        ("adapter/adapter_config.json", '{"base_model_name_or_path": "tiny"}', ["no peft_type"]),
        ("adapter/adapter_model.safetensors", b"\x10\x00", ["adapter_model.safetensors", "too few for its header"]),
        ("adapter/adapter_model.safetensors", struct.pack("<Q", 4) + b"nope", ["its header is not JSON"]),
        ("adapter/adapter_model.safetensors", _safetensors({"w": {"dtype": "F32"}}, b""), ["no tensor byte ranges"]),
        (
            "adapter/adapter_model.safetensors",
            _safetensors({"w": TENSOR}, b"\0" * 12),
            ["cut short or padded", "needs"],
        ),
    ],
)
def test_a_damaged_run_file_is_refused_before_any_model_loads(good_run, file, content, fragments):
    target = good_run / file
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FtkitError) as refused:
        RunDir.finished(good_run, where="run", command="ftkit eval")
    said = str(refused.value)
    assert str(target) in said and "Fix:" in said
    for fragment in fragments:
        assert fragment in said, said


def test_a_whole_model_run_needs_its_config_and_weights(good_run):
    shutil.rmtree(good_run / "adapter")
    model = good_run / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(FtkitError, match="model/config.json: it has no model_type"):
        RunDir.finished(good_run, where="run", command="ftkit eval")
    (model / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(FtkitError, match="model: it holds no weights"):
        RunDir.finished(good_run, where="run", command="ftkit eval")
    (model / "model.safetensors").write_bytes(_safetensors({"w": TENSOR, "__metadata__": {"format": "pt"}}, b"\0" * 8))
    assert RunDir.finished(good_run, where="run", command="ftkit eval").trained_weights() == model


# ---- where predict and eval write -------------------------------------------------------------------------------
def test_predict_output_must_be_a_new_file_outside_any_run(good_run, tmp_path):
    check_output("-")
    check_output(str(tmp_path / "new.jsonl"))
    # A project folder with a config.yaml of its own is not a run: writing beside it is fine.
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("anything: 1\n")
    check_output(str(project / "predictions.jsonl"))

    existing = tmp_path / "kept.jsonl"
    existing.write_text("mine\n")
    refusals = {
        str(existing): "already exists",
        str(tmp_path): "already exists",
        "": "output= is empty",
        str(good_run / "predictions.jsonl"): f"inside the run directory {good_run}",
        str(good_run / "adapter" / "predictions.jsonl"): f"inside the run directory {good_run}",
        str(tmp_path / "missing" / "p.jsonl"): "does not exist",
        str(existing / "p.jsonl"): "is a file",
    }
    for output, fragment in refusals.items():
        with pytest.raises(FtkitError, match="output") as refused:
            check_output(output)
        assert fragment in str(refused.value) and "Fix:" in str(refused.value), output
    assert existing.read_text() == "mine\n"


def test_a_file_that_appears_meanwhile_is_not_overwritten(tmp_path):
    file = tmp_path / "p.jsonl"
    with _new_file(file, "output") as out:
        out.write("first\n")
    with pytest.raises(FtkitError, match="appeared while ftkit was working"):
        _new_file(file, "output")
    assert file.read_text() == "first\n"


def test_eval_out_is_a_new_or_empty_folder_outside_runs_but_their_eval_folder(good_run, tmp_path):
    check_out_dir(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    check_out_dir(good_run / "eval" / "mine")  # where eval writes by default, under its own name

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "metrics.json").write_text("{}")
    refusals = {
        tmp_path / "full": "not empty",
        good_run / "config.yaml": "is a file",
        good_run / "config.yaml" / "x": "is a file, so the folder",
        good_run / "mine": "inside the run directory",
        good_run / "adapter" / "eval": "inside the run directory",
        good_run / "eval": "inside the run directory",
    }
    for out, fragment in refusals.items():
        with pytest.raises(FtkitError, match="out") as refused:
            check_out_dir(out)
        assert fragment in str(refused.value) and "Fix:" in str(refused.value), out
    assert sorted(p.name for p in good_run.iterdir()) == sorted(p.name for p in GOOD_RUN.iterdir())
