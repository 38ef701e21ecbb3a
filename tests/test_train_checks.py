"""`ftkit train`'s checks before Hydra starts: sweeps checked job by job, dry runs under -m, a failed sweep's exit.

The single mistakes (unknown keys, `+` typos, interpolations, run directories) are cases in tests/bad_inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftkit.commands.sweep import planned_jobs
from ftkit.commands.train import check_command
from ftkit.errors import FtkitError
from tests.conftest import REPO


def test_a_basic_sweep_is_checked_job_by_job_over_its_whole_grid():
    jobs, plan = planned_jobs(["peft.r=4,8", "peft.alpha=8,16,32", "trainer.learning_rate=1e-4"])
    assert len(jobs) == 6 and "grid of 6" in plan
    assert all("trainer.learning_rate=1e-4" in job for job in jobs)
    assert {(job[1], job[2]) for job in jobs} == {
        (f"peft.r={r}", f"peft.alpha={a}") for r in (4, 8) for a in (8, 16, 32)
    }


def test_an_optuna_search_space_is_checked_at_each_choice_and_both_ends_of_each_interval():
    jobs, plan = planned_jobs(["hydra/sweeper=optuna", "peft.r=choice(4,8,16)", "peft.dropout=interval(0,0.3)"])
    assert "OptunaSweeper" in plan and len(jobs) == 3
    assert {word for job in jobs for word in job if word.startswith("peft.r=")} == {"peft.r=4", "peft.r=8", "peft.r=16"}
    assert {word for job in jobs for word in job if word.startswith("peft.dropout=")} == {
        "peft.dropout=0",
        "peft.dropout=0.3",
    }


def test_the_sweepers_own_search_space_is_checked_too():
    jobs, _ = planned_jobs(["hydra/sweeper=lora_search"])
    swept = {word.split("=")[0] for job in jobs for word in job}
    assert {"peft.r", "peft.alpha"} <= swept


def test_one_bad_job_refuses_the_whole_sweep_before_any_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FtkitError, match=r"in the sweep job .*peft\.r=0.*positive"):
        check_command(["-m", "peft.r=8,0"])
    assert not (tmp_path / "multirun").exists()


def test_dry_run_under_multirun_is_a_plan_and_writes_nothing(run_ftkit, tmp_path):
    result = run_ftkit("train", "-m", "peft.r=4,8", "dry_run=true", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Sweep plan" in result.stdout and "job 1: dry_run=true peft.r=8" in result.stdout
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


def test_a_sweep_whose_every_job_fails_exits_non_zero(run_ftkit, tiny_model, tmp_path):
    """Each job refuses its data at run time (its config checks pass): the sweep ends with exit 2, not 0."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "pump leaking", "label": "Mechanical"}\n{"text": "x", "label": "NoSuchLabel"}\n')
    result = run_ftkit(
        "train",
        "-m",
        f"model.path={tiny_model}",
        "model.gguf_file=null",
        "model.name=tiny-llama",
        f"recipe.data.train={bad}",
        "trainer.max_steps=1",
        "peft.r=4,8",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ftkit: error:")]
    assert len(errors) == 1 and "every one of the sweep's 2 jobs failed" in errors[0] and "NoSuchLabel" in errors[0]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/result.json"))]
    assert [r["status"] for r in results] == ["failed", "failed"] and all(r["bad_input"] for r in results)


def test_printing_the_config_needs_no_new_run_directory(tmp_path, monkeypatch):
    """--cfg job only prints: a run directory that holds a run is no reason to refuse it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "config.yaml").write_text("recipe: {}\n")
    checked = check_command(["--cfg", "job", f"hydra.run.dir={tmp_path / 'done'}"])
    assert not checked.dry_run and checked.cfg is not None


def test_the_bad_input_corpus_covers_every_class_the_issue_names():
    """tests/bad_inputs has a file per class of input, and enough cases in each to mean it."""
    files = {
        path.stem: path.read_text().count("- name:")
        for path in (REPO / "tests" / "bad_inputs" / "cases").glob("*.yaml")
    }
    assert set(files) >= {"config", "data", "launch", "run_dirs", "serve"}
    assert sum(files.values()) >= 120 and min(files.values()) >= 8


def test_check_command_writes_nothing_for_a_good_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_command([f"hydra.run.dir={tmp_path / 'new' / 'run'}"])
    assert not (tmp_path / "new").exists()  # the writability probe leaves nothing behind
    assert sorted(Path(tmp_path).iterdir()) == []
