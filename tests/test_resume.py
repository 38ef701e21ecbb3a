"""Resume, interrupts and early stopping on the tiny model, through the real `ftkit train`.

Every run trains 2 epochs of 6 steps (48 tickets, batches of 8) and saves every 4 steps, so a run cut short at
step 9 has checkpoints 4 and 8 and must end, resumed, exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from ftkit.commands import resume
from ftkit.commands.resume import latest_checkpoint
from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from tests.conftest import REPO

STEPS = 12


def overrides(model: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        "model.gguf_file=null",
        "model.name=tiny-llama",
        "recipe.data.max_train_examples=48",
        "evaluate.max_examples=8",
        "evaluate.base=false",
        "trainer.per_device_train_batch_size=8",
        "trainer.num_train_epochs=2",
        "trainer.learning_rate=5e-3",
        "trainer.logging_steps=2",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=steps",
        "trainer.save_steps=4",
        "trainer.save_total_limit=2",
        *extra,
    ]


def ftkit(
    cwd: Path, *args: str, signal_at: tuple[int, str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`ftkit <args>` in cwd; with signal_at=(step, name) the run signals itself at that training step."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("FTKIT_DEBUG", "FTKIT_CPU_THREADS_FIXED")}
    # OMP_NUM_THREADS fixes the thread count: following the load would reorder float sums between the compared runs
    fixed = {"FTKIT_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    full_env.update({**fixed, **(env or {})})
    if signal_at:
        command = [sys.executable, str(REPO / "tests" / "signal_at_step.py"), str(signal_at[0]), signal_at[1]]
    else:
        command = [str(Path(sys.executable).with_name("ftkit"))]
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = ftkit(cwd, "train", *overrides(tiny_model, f"hydra.run.dir={cwd / 'run'}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((cwd / "run" / "metrics.json").read_text())["train"]["global_step"] == STEPS
    return cwd / "run"


def test_sigkill_then_resume_true_matches_an_uninterrupted_run(tiny_model, uninterrupted, tmp_path):
    killed = ftkit(tmp_path, "train", *overrides(tiny_model), signal_at=(9, "SIGKILL"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "outputs" / "tickets").glob("*/*/config.yaml")]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert not (run_dir / "metrics.json").exists()

    # resume=true with the same overrides finds the run under outputs/ and continues from checkpoint-8.
    resumed = ftkit(tmp_path, "train", *overrides(tiny_model), "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert train["global_step"] == STEPS and train["resumed_from_step"] == 8
    assert "Resuming from" in resumed.stdout and "checkpoint-8 (step 8)" in resumed.stdout
    assert_same_weights(adapter(run_dir / "adapter"), adapter(uninterrupted / "adapter"))
    assert "trainer.learning_rate=5e-3" in (run_dir / "overrides.yaml").read_text()  # the run's own, kept
    assert "resume" not in (run_dir / "overrides.yaml").read_text()

    # Now it is finished: nothing left to resume.
    again = ftkit(tmp_path, "train", *overrides(tiny_model), "resume=true")
    assert again.returncode == 2 and "finished (it has metrics.json)" in again.stderr, again.stderr[-2000:]
    assert "Traceback" not in again.stderr


def test_sigterm_saves_a_checkpoint_and_prints_the_command_that_resumes(tiny_model, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    stopped = ftkit(tmp_path, "train", *overrides(tiny_model, f"hydra.run.dir={run_dir}"), signal_at=(5, "SIGTERM"))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    # The signal lands after step 5's end-of-step hook ran, so the run stops at the end of step 6 and saves it.
    assert (run_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json").is_file()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "adapter").exists()
    command = re.search(r"Continue this run with:\n\s+(ftkit train resume=\S+)", stopped.stdout)  # Hydra logs there
    assert command, stopped.stdout[-3000:]
    assert command.group(1) == "ftkit train resume=run/checkpoints/checkpoint-6"

    # The printed command, as typed: the run's own overrides come from its directory.
    resumed = ftkit(tmp_path, *command.group(1).split()[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert train["global_step"] == STEPS and train["resumed_from_step"] == 6
    assert_same_weights(adapter(run_dir / "adapter"), adapter(uninterrupted / "adapter"))


def test_a_resumed_run_continues_its_wandb_run(tiny_model, tmp_path):
    from tests.test_sweep import no_wandb_credentials, wandb_file_records

    run_dir, env = tmp_path / "run", {**no_wandb_credentials(tmp_path), "WANDB_MODE": "offline"}
    args = overrides(tiny_model, f"hydra.run.dir={run_dir}", "logger=wandb")
    stopped = ftkit(tmp_path, "train", *args, signal_at=(5, "SIGTERM"), env=env)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    resumed = ftkit(tmp_path, "train", "resume=run/checkpoints/checkpoint-6", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    first, second = sorted(run_dir.glob("wandb/offline-run-*/"))  # one file per process, for `wandb sync`
    run_id = first.name.rsplit("-", 1)[1]
    assert second.name.endswith(f"-{run_id}") and f"W&B: continuing run {run_id}" in resumed.stdout

    def logged_steps(folder: Path) -> list[int]:
        (path,) = folder.glob("run-*.wandb")
        return [row["train/global_step"] for row in wandb_file_records(path)["history"] if "train/loss" in row]

    assert logged_steps(first) == [2, 4, 6] and logged_steps(second) == [8, 10, 12]


def test_sigint_exits_130_with_a_checkpoint(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    stopped = ftkit(tmp_path, "train", *overrides(tiny_model, f"hydra.run.dir={run_dir}"), signal_at=(2, "SIGINT"))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Stopped by SIGINT at step 3 of 12" in stopped.stdout and "Traceback" not in stopped.stderr
    assert (run_dir / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors").is_file()


def test_resume_refuses_a_changed_config_and_a_finished_run(tiny_model, uninterrupted, tmp_path):
    checkpoint = uninterrupted / "checkpoints" / "checkpoint-8"
    finished = ftkit(tmp_path, "train", f"resume={checkpoint}")
    assert finished.returncode == 2 and "nothing to resume" in finished.stderr, finished.stderr[-2000:]

    # A copy of the run as it was at step 8 (no metrics.json yet), resumed with another learning rate.
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml"):
        (unfinished / name).write_bytes((uninterrupted / name).read_bytes())
    subprocess.run(["cp", "-r", str(checkpoint), str(unfinished / "checkpoints")], check=True)
    changed = ftkit(tmp_path, "train", f"resume={unfinished}", "trainer.learning_rate=1e-3")
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert "trainer.learning_rate: run has 0.005, now 0.001" in changed.stderr
    assert "Fix: drop those overrides" in changed.stderr and "Traceback" not in changed.stderr
    assert not (unfinished / "train.log").exists()  # nothing written into the run

    nothing = ftkit(tmp_path, "train", *overrides(tiny_model, "trainer.learning_rate=1e-3"), "resume=true")
    assert nothing.returncode == 2 and "found no run of this config" in nothing.stderr, nothing.stderr[-2000:]


def test_an_incomplete_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    for step in (4, 8):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (folder / name).write_bytes(b"x")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    assert latest_checkpoint(tmp_path) == checkpoints / "checkpoint-8"

    # Killed while writing checkpoint-8: its trainer_state.json (written last) is cut short.
    state = checkpoints / "checkpoint-8" / "trainer_state.json"
    state.write_text(state.read_text()[:10])
    with caplog.at_level(logging.WARNING, logger="ftkit"):
        assert latest_checkpoint(tmp_path) == checkpoints / "checkpoint-4"
    assert "Skipping" in caplog.text and "checkpoint-8" in caplog.text and "cut short" in caplog.text

    state.unlink()  # killed before it got that far
    (checkpoints / "checkpoint-4" / "optimizer.pt").unlink()
    assert latest_checkpoint(tmp_path) is None


def _unfinished_run(folder: Path, state: str | bytes, overrides: str = "- peft.r=8\n") -> Path:
    """A run stopped after its checkpoint at step 4, whose trainer_state.json holds state."""
    checkpoint = folder / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(compose(["peft.r=8"]), resolve=True))
    (folder / "overrides.yaml").write_text(overrides)
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt"):
        (checkpoint / name).write_bytes(b"x")
    (checkpoint / "trainer_state.json").write_bytes(state if isinstance(state, bytes) else state.encode())
    return folder


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ("[4]", "it holds a list, where Trainer writes an object"),
        ('"global_step: 4"', "it holds the text 'global_step: 4'"),
        ('{"epoch": 1.0}', "it has no global_step"),
        ('{"global_step": "4"}', "its global_step is the text '4'"),
        ('{"global_step": 4.0}', "its global_step is the number 4.0"),
        ('{"global_step": true}', "its global_step is the boolean true"),
        (b'{"global_step": 4, "note": "\xff"}', "not UTF-8"),
    ],
)
def test_a_trainer_state_that_trainer_did_not_write_is_refused(tmp_path, state, fragment):
    run_dir = _unfinished_run(tmp_path / "run", state)
    state_file = run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    for given in (run_dir, state_file.parent):  # resume=<run dir> and resume=<checkpoint dir> read it alike
        with pytest.raises(FtkitError) as refused:
            resume.plan(OmegaConf.create({"resume": str(given)}), [f"resume={given}"])
        said = str(refused.value)
        assert said.startswith(f"{state_file}: ") and fragment in said and "Fix:" in said, said


def test_no_complete_checkpoint_says_what_each_lacks(tmp_path):
    run_dir = _unfinished_run(tmp_path / "run", '{"global_step": 4, "log_hist')
    with pytest.raises(
        FtkitError, match=r"no complete checkpoint .*\(checkpoint-4: its trainer_state.json is cut short\)"
    ):
        resume.plan(OmegaConf.create({"resume": str(run_dir)}), [f"resume={run_dir}"])
    (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    with pytest.raises(FtkitError, match="checkpoint-4: it has no trainer_state.json"):
        resume.plan(OmegaConf.create({"resume": str(run_dir)}), [f"resume={run_dir}"])


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ("peft.r: 8\n", ["overrides.yaml: it holds a mapping", "list of overrides"]),
        ("- peft.rank=8\n", ["overrides.yaml: an override this run was trained with cannot be replayed", "peft.rank"]),
        ("- recipe=tickts\n", ["overrides.yaml", "cannot be replayed", "no recipe called 'tickts'"]),
    ],
)
def test_a_resumed_runs_own_overrides_that_do_not_compose_are_said_of_its_file(tmp_path, overrides, fragments):
    run_dir = _unfinished_run(tmp_path / "run", '{"global_step": 4}', overrides)
    with pytest.raises(FtkitError) as refused:
        resume.plan(OmegaConf.create({"resume": str(run_dir)}), [f"resume={run_dir}"])
    for fragment in fragments:
        assert fragment in str(refused.value), str(refused.value)


def test_resume_true_passes_over_a_damaged_run_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    cfg = compose(["peft.r=8", "resume=true"])
    wanted = _unfinished_run(tmp_path / "outputs" / "tickets" / "2026-12-01" / "10-00-00", '{"global_step": 4}')
    damaged = _unfinished_run(tmp_path / "outputs" / "tickets" / "2026-12-01" / "11-00-00", '{"global_step": 4}')
    (damaged / "config.yaml").write_text("recipe: [")
    os.utime(wanted / "config.yaml", (1, 1))  # the damaged run is the newest
    with caplog.at_level(logging.WARNING, logger="ftkit"):
        run_dir, overrides = resume.plan(cfg, ["peft.r=8", "resume=true"])
    assert run_dir == Path("outputs/tickets/2026-12-01/10-00-00")
    assert overrides[-1] == f"resume={(wanted / 'checkpoints' / 'checkpoint-4').resolve()}"
    assert "Skipping outputs/tickets/2026-12-01/11-00-00" in caplog.text and "not valid YAML" in caplog.text


def test_early_stopping_stops_a_stalled_run_and_keeps_the_best_checkpoint(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    # A learning rate this small cannot move any prediction: the validation accuracy stalls from the start.
    stalled = overrides(
        tiny_model,
        f"hydra.run.dir={run_dir}",
        "trainer.learning_rate=1e-9",
        "trainer.eval_strategy=steps",
        "trainer.eval_steps=2",
        "trainer.save_steps=2",
        "trainer.save_total_limit=3",
        "early_stopping.patience=2",
    )
    result = ftkit(tmp_path, "train", *stalled)
    assert result.returncode == 0, result.stderr[-3000:]
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    # Evaluations at steps 2 (best), 4 and 6 (no improvement twice): stop at 6 of 12.
    assert train["global_step"] == 6 and train["stopped_early"] is True
    assert train["best_checkpoint"] == "checkpoint-2"
    history = json.loads((run_dir / "log_history.json").read_text())
    assert [e["step"] for e in history if "eval_accuracy" in e] == [2, 4, 6]
    final = adapter(run_dir / "adapter")
    assert_same_weights(final, adapter(run_dir / "checkpoints" / "checkpoint-2"))
    last = adapter(run_dir / "checkpoints" / "checkpoint-6")
    assert any(not torch.equal(final[name], last[name]) for name in final)


def test_early_stopping_needs_evaluations_it_can_compare(tiny_model, tmp_path):
    result = ftkit(tmp_path, "train", *overrides(tiny_model, "early_stopping.patience=2"))
    assert result.returncode == 2 and "trainer.eval_strategy=no never evaluates" in result.stderr
    mismatched = overrides(tiny_model, "early_stopping.patience=2", "trainer.eval_strategy=epoch")
    result = ftkit(tmp_path, "train", *mismatched)
    assert result.returncode == 2 and "trainer.save_strategy=steps does not save" in result.stderr
    assert not (tmp_path / "outputs").exists()
