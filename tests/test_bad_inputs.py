"""The bad-input corpus (tests/bad_inputs/cases/*.yaml): each case exits 2 with its message, no traceback, no damage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CORPUS = REPO / "tests" / "bad_inputs"
RUNS = CORPUS / "runs"  # static broken run directories ({runs}): refused, and left byte for byte as they are
# One file per class of input (config, data, run directories, ...); names are unique across them.
CASES = [case for path in sorted((CORPUS / "cases").glob("*.yaml")) for case in yaml.safe_load(path.read_text())]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished-looking run directory that no failing command may write into."""
    run_dir = tmp_path_factory.mktemp("existing-run")
    (run_dir / "config.yaml").write_text("recipe:\n  name: tickets\n")
    (run_dir / "metrics.json").write_text('{"finetuned": {"accuracy": 0.9}}\n')
    return run_dir


def test_the_corpus_is_large_and_named_uniquely():
    names = [case["name"] for case in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input_exits_2_with_a_one_paragraph_error(case, run_ftkit, tiny_model, existing_run, tmp_path):
    args = [arg.format(data=CORPUS / "data", tiny=tiny_model, existing=existing_run, runs=RUNS) for arg in case["args"]]
    command, overrides = args[0], args[1:]
    if command == "train" and not any(arg.startswith("model.") for arg in overrides):
        # on the tiny model, at most one step: a case that wrongly passes ends fast (and fails below)
        overrides = [
            f"model.path={tiny_model}",
            "model.gguf_file=null",
            "model.name=tiny-llama",
            "trainer.max_steps=1",
            "evaluate.max_examples=4",
            *overrides,
        ]
    if command == "train" and not any(arg.startswith("hydra.run.dir=") for arg in overrides):
        overrides.append(f"hydra.run.dir={tmp_path / 'new-run'}")
    before = snapshot(existing_run), snapshot(RUNS)
    # env: the case's environment variables (e.g. a launcher's WORLD_SIZE), beside the usual ones
    env = {
        name: value.format(data=CORPUS / "data", existing=existing_run) for name, value in case.get("env", {}).items()
    }
    result = run_ftkit(command, *overrides, env={"OMP_NUM_THREADS": "1", **env}, timeout=300)

    said = result.stdout + result.stderr
    assert result.returncode == 2, f"exit {result.returncode}; output:\n{said[-3000:]}"
    assert "Traceback" not in said
    errors = [line for line in result.stderr.splitlines() if line.startswith("ftkit: error:")]
    assert len(errors) == 1, result.stderr[-3000:]  # one paragraph: a single line naming problem, place and fix
    assert "Fix:" in errors[0]
    for fragment in case["expect"]:
        assert fragment in errors[0], f"{fragment!r} missing from: {errors[0]}"
    assert (snapshot(existing_run), snapshot(RUNS)) == before
