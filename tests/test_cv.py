"""k-fold cross-validation: folds that are disjoint, cover every record once and keep each label's share;
`ftkit cv`'s checks before anything runs, its rows and mean +- sample standard deviation, and one end-to-end
`ftkit cv folds=2` on a tiny data set."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from ftkit.commands import cv
from ftkit.commands.cv import Fold, Plan, check_cv, fold_row, fold_settings, markdown_table, summarise
from ftkit.config.compose import compose
from ftkit.data.splits import assign_folds, read_splits
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from tests.conftest import tiny_overrides
from tests.test_splits import SIZES, labelled_file

FOLDS = ["recipe.data.validation=null", "recipe.data.test=null", "trainer.eval_strategy=no", "recipe.labels=auto"]


def fold_splits(data: Path, folds: int, fold: int) -> dict:
    cfg = compose([f"recipe.data.train={data}", *FOLDS, f"recipe.data.folds={folds}", f"recipe.data.fold={fold}"])
    return read_splits(get_recipe_class("tickets")(cfg.recipe)).records


def test_folds_are_disjoint_cover_every_record_once_and_keep_each_labels_share(tmp_path):
    data = labelled_file(tmp_path / "all.jsonl")
    tests = []
    for fold in range(4):
        splits = fold_splits(data, 4, fold)
        assert splits["validation"] is None
        train, test = {r["source"] for r in splits["train"]}, {r["source"] for r in splits["test"]}
        assert not train & test and len(train | test) == 100  # each fold's run sees every record once
        assert len(test) == 25
        counts = Counter(r["label"] for r in splits["test"])
        for label, size in SIZES.items():
            assert abs(counts[label] - size / 4) < 1, (fold, counts)
        tests.append(test)
    every = [source for test in tests for source in test]
    assert len(every) == len(set(every)) == 100


def test_fold_sizes_differ_by_at_most_one_and_the_seed_moves_records():
    strata = ["a"] * 7 + ["b"] * 5 + ["c"]
    fold_of = assign_folds(strata, 3, seed=42, where="file")
    assert sorted(Counter(fold_of).values()) == [4, 4, 5]
    assert assign_folds(strata, 3, seed=42, where="file") == fold_of
    assert assign_folds(strata, 3, seed=43, where="file") != fold_of


def test_more_folds_than_records_is_refused():
    with pytest.raises(FtkitError, match="recipe.data.folds=5 needs at least 5 records"):
        assign_folds(["a", "b", "a"], 5, seed=1, where="file")


def test_auto_labels_under_k_fold_are_the_whole_files(tmp_path):
    """A class of one record is in one fold's test split only; it is still a class of every fold's run."""
    data = labelled_file(tmp_path / "all.jsonl", {"Pump": 6, "Motor": 4, "Belt": 1})
    for fold in range(2):
        cfg = compose([f"recipe.data.train={data}", *FOLDS, "recipe.data.folds=2", f"recipe.data.fold={fold}"])
        recipe = get_recipe_class("tickets")(cfg.recipe)
        recipe.load_split("test")
        assert recipe.labels == ["Pump", "Motor", "Belt"]


@pytest.mark.parametrize(
    ("folds", "overrides", "fragments"),
    [
        ("1", [], ["folds=1", "at least 2"]),
        ("five", [], ["folds=five", "whole number"]),
        ("3", ["recipe.data.fold=1"], ["recipe.data.fold is given", "cv sets it"]),
        ("3", ["resume=true"], ["resume is given", "fold-<i>"]),
        ("3", ["recipe.data.split=[0.8,0.1,0.1]"], ["recipe.data.split", "folds"]),
        ("3", ["recipe.data.validation=bundled:tickets/validation.jsonl"], ["reads no validation file"]),
        ("3", ["trainer.eval_strategy=steps"], ["trainer.eval_strategy=steps", "has none"]),
        ("3", ["early_stopping.patience=2"], ["early_stopping.patience=2", "no validation split"]),
        ("3", ["recipe=multitask"], ["no single training file"]),
    ],
)
def test_cv_refuses_before_anything_is_written(folds, overrides, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FtkitError) as error:
        check_cv(folds, overrides)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_cv_checks_every_fold_and_sets_what_a_fold_run_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = labelled_file(tmp_path / "all.jsonl", {"Mechanical": 8, "Electrical": 7})
    plan = check_cv("3", [f"recipe.data.train={data}", "recipe.labels=auto", f"hydra.run.dir={tmp_path / 'cv'}"])
    assert [(fold.train, fold.test) for fold in plan.runs] == [(10, 5), (10, 5), (10, 5)]
    first = plan.runs[0].overrides
    for override in ("recipe.data.validation=null", "recipe.data.test=null", "trainer.eval_strategy=no"):
        assert override in first
    assert first[-3:] == ["recipe.data.folds=3", "recipe.data.fold=0", f"hydra.run.dir={tmp_path / 'cv' / 'fold-0'}"]
    assert len(plan.notes) == 3 and not (tmp_path / "cv").exists()
    # a cv directory that holds a cross-validation is refused
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "cv.md").write_text("earlier\n")
    with pytest.raises(FtkitError, match="already holds a cross-validation"):
        check_cv("3", [f"recipe.data.train={data}", "recipe.labels=auto", f"hydra.run.dir={tmp_path / 'cv'}"])


def test_wandb_runs_of_the_folds_share_one_group(tmp_path):
    plan = Plan(2, Path("cv/tickets/2026-12-03/10-00-00"), "tickets", 42, "accuracy", False, False, [])
    extra = fold_settings(compose(["logger=wandb"]), [], plan)
    assert "logger.group=cv-2026-12-03_10-00-00" in extra
    given = fold_settings(compose(["logger=wandb", "logger.group=mine"]), ["logger.group=mine"], plan)
    assert not any(override.startswith("logger.group") for override in given)


def test_rows_mean_and_sample_standard_deviation(tmp_path):
    plan = Plan(3, tmp_path, "tickets", 42, "accuracy", False, False, [])
    folds = [Fold(i, [], tmp_path / f"fold-{i}", 10, 5) for i in range(3)]
    failed = fold_row(plan, folds[2], {"exit_code": 1})
    assert failed["status"] == "failed (exit 1; see fold-2/train.log)" and failed["metrics"] == {}
    rows = [
        {
            "fold": 0,
            "run_dir": "fold-0",
            "status": "ok",
            "train": 10,
            "test": 5,
            "metrics": {"macro_f1": 0.5, "accuracy": 0.8},
        },
        {
            "fold": 1,
            "run_dir": "fold-1",
            "status": "ok",
            "train": 10,
            "test": 5,
            "metrics": {"macro_f1": 0.3, "accuracy": 0.6},
        },
        failed,
    ]
    summary = summarise(rows[:2], "accuracy")
    assert list(summary) == ["accuracy", "macro_f1"]  # the primary metric first
    assert summary["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["accuracy"]["sd"] == pytest.approx(statistics.stdev([0.8, 0.6])) == pytest.approx(0.141421356)
    table = markdown_table({"rows": rows, "summary": summary})
    assert "| mean ± sd | | 2 of 3 finished | | | 0.7000 ± 0.1414 | 0.4000 ± 0.1414 |" in table
    assert f"| 2 | {tmp_path / 'fold-2'} | failed (exit 1; see fold-2/train.log) | 10 | 5 |  |  |" in table


def test_slurm_folds_are_submitted_together_then_waited_for(tmp_path, monkeypatch):
    """launcher=slurm: each fold's ftkit train only submits its job; cv submits all, then asks squeue until none is
    listed, and a job that ended without metrics.json is a failed fold that names its SLURM log."""
    plan = Plan(2, tmp_path, "tickets", 42, "accuracy", True, False, [])
    plan.runs = [Fold(i, [f"recipe.data.fold={i}"], tmp_path / f"fold-{i}", 10, 5) for i in range(2)]
    listed = [{"101", "102"}, {"102"}, set()]  # what squeue lists at each look
    calls = []

    def fake_run(command: list[str], **kwargs: object) -> CompletedProcess:
        calls.append(command)
        if command[0].endswith("squeue"):
            return CompletedProcess(command, 0, "".join(f"{job}\n" for job in sorted(listed.pop(0))), "")
        job = 100 + sum(not c[0].endswith("squeue") for c in calls)
        return CompletedProcess(command, 0, "", f"[ftkit][INFO] - submitted SLURM job {job} (1 node(s) x 1 rank(s))")

    monkeypatch.setattr(cv.subprocess, "run", fake_run)
    monkeypatch.setattr(cv.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cv, "SQUEUE_POLL_SECONDS", 0)
    outcome = cv.run_as_jobs(plan)
    assert [command[-1] for command in calls[:2]] == ["recipe.data.fold=0", "recipe.data.fold=1"]  # both first
    assert sum(command[0].endswith("squeue") for command in calls) == 3 and listed == []
    assert outcome == {0: {"job": "101", "ended": True}, 1: {"job": "102", "ended": True}}
    row = fold_row(plan, plan.runs[1], outcome[1])
    assert row["status"] == "failed (job 102 ended without results; see fold-1/slurm-102.out)"


def test_cv_two_folds_end_to_end(run_ftkit, tiny_model, tmp_path):
    data = labelled_file(tmp_path / "all.jsonl", {"Mechanical": 8, "Electrical": 6, "Software/Controls": 4})
    cv_dir = tmp_path / "cv"
    overrides = [o for o in tiny_overrides(tiny_model, cv_dir) if not o.startswith(("recipe.data.", "evaluate."))]
    result = run_ftkit("cv", "folds=2", *overrides, f"recipe.data.train={data}", "recipe.labels=auto")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    results = json.loads((cv_dir / "cv.json").read_text())
    assert [row["status"] for row in results["rows"]] == ["ok", "ok"]
    accuracies = [
        json.loads((cv_dir / f"fold-{i}" / "metrics.json").read_text())["finetuned"]["accuracy"] for i in (0, 1)
    ]
    assert results["summary"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert results["summary"]["accuracy"]["sd"] == pytest.approx(statistics.stdev(accuracies))
    report = (cv_dir / "cv.md").read_text()
    assert (
        report.count(f"| {cv_dir / 'fold-'}") == 2 and "| mean ± sd |" in report and " ± " in report.split("mean")[-1]
    )
    tests = [
        set(json.loads((cv_dir / f"fold-{i}" / "splits.json").read_text())["splits"]["test"]["ids"]) for i in (0, 1)
    ]
    assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 18
