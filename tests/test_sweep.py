"""Loggers (W&B offline, TensorBoard) and sweeps (grid, parallel grid, failed jobs, Optuna) on the tiny model."""

from __future__ import annotations

import csv
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ftkit.commands.sweep import minutes, write_leaderboard, write_result
from tests.conftest import REPO, tiny_overrides


def wandb_records(run_dir: Path) -> dict:
    """What W&B wrote for an offline run, read back from its .wandb file (a LevelDB-style log of protobufs)."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return wandb_file_records(path)


def wandb_file_records(path: Path) -> dict:
    """config, history, summary and run record of one offline run file."""
    from wandb.proto import wandb_internal_pb2

    found: dict = {"config": {}, "history": [], "summary": {}, "run": None}
    for raw in _log_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            found["config"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.config.update}
            )
        elif kind == "history":
            found["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "summary":
            found["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
        elif kind == "run":  # wandb.init's config travels in the run record
            found["run"] = record.run
            found["config"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.run.config.update}
            )
    return found


def _log_records(data: bytes, block: int = 32768) -> Iterator[bytes]:
    """The log's records: a 7-byte file header, then chunks of crc32 (4), length (2), type (1 full, 2-4 split)."""
    position, pending = 7, b""
    while position + 7 <= len(data):
        space = block - position % block
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if space < 7 or kind == 0:  # block trailer or zero padding
            position += space
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def no_wandb_credentials(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "WANDB_API_KEY": "", "NETRC": str(home / ".netrc"), "WANDB_MODE": ""}


def test_wandb_offline_run_holds_config_train_and_eval_metrics(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    env = {**no_wandb_credentials(tmp_path), "WANDB_MODE": "offline"}
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "logger=wandb", "logger.tags=[nightly]"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no credentials" not in result.stdout + result.stderr  # the user chose WANDB_MODE: no notice
    logged = wandb_records(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())

    assert logged["config"]["recipe"]["name"] == "tickets" and logged["config"]["peft"]["r"] == 16  # ftkit's config
    assert "learning_rate" in logged["config"]  # and Trainer's arguments, from its callback
    assert set(logged["run"].tags) == {"tickets", "tiny-llama", "lora", "nightly"}
    losses = [row["train/loss"] for row in logged["history"] if "train/loss" in row]
    assert losses and all(loss > 0 for loss in losses)
    assert any("eval/loss" in row for row in logged["history"])  # validation loss each epoch
    assert logged["summary"]["finetuned/accuracy"] == metrics["finetuned"]["accuracy"]
    assert logged["summary"]["base/accuracy"] == metrics["base"]["accuracy"]
    assert logged["summary"]["run/global_step"] == metrics["train"]["global_step"]
    assert {"plots/loss/_type", "plots/confusion_matrix/_type", "tables/finetuned_per_class/_type"} <= set(
        logged["summary"]
    )


def test_wandb_without_credentials_or_mode_logs_offline_and_does_not_block(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    env = no_wandb_credentials(tmp_path)
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "logger=wandb"), env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert said.count("no credentials") == 1 and "wandb sync" in said
    assert wandb_records(run_dir)["summary"]["finetuned/accuracy"] >= 0


def test_tensorboard_logger_writes_training_and_evaluation(run_ftkit, tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "logger=tensorboard"))
    assert result.returncode == 0, result.stderr[-3000:]
    tags: dict[str, set] = {"scalars": set(), "images": set()}
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] |= set(accumulator.Tags()[kind])
    assert {"train/loss", "eval/loss", "base/accuracy", "finetuned/accuracy", "run/train_minutes"} <= tags["scalars"]
    assert {"plots/loss", "plots/confusion_matrix"} <= tags["images"]


def leaderboard(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "leaderboard.csv").open() as handle:
        return list(csv.DictReader(handle))


def sweep(run_ftkit, tiny_model: Path, sweep_dir: Path, *args: str, env: dict[str, str] | None = None):
    """`ftkit train -m` on the tiny model into sweep_dir; returns the CompletedProcess."""
    overrides = [o for o in tiny_overrides(tiny_model, sweep_dir) if not o.startswith("hydra.run.dir=")]
    return run_ftkit("train", "-m", *overrides, *args, f"hydra.sweep.dir={sweep_dir}", env=env)


def test_grid_with_two_parallel_workers_gives_each_job_its_own_directory(run_ftkit, tiny_model, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        run_ftkit,
        tiny_model,
        sweep_dir,
        "trainer.learning_rate=1e-3,5e-3",
        "peft.r=4,8",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combinations = set()
    for job in jobs:  # each directory holds one run, of its own overrides
        config = yaml.safe_load((job / "config.yaml").read_text())
        combinations.add((config["trainer"]["learning_rate"], config["peft"]["r"]))
        assert (job / "adapter" / "adapter_config.json").exists() and (job / "metrics.json").exists()
        assert (job / "train.log").read_text().count("Summary") == 1
    assert combinations == {(1e-3, 4), (1e-3, 8), (5e-3, 4), (5e-3, 8)}

    rows = leaderboard(sweep_dir)
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    objectives = [float(row["validation accuracy"]) for row in rows]
    assert objectives == sorted(objectives, reverse=True)  # best first
    assert all(row["overrides"].startswith("trainer.learning_rate=") and "peft.r=" in row["overrides"] for row in rows)
    assert "model.path" not in rows[0]["overrides"]  # what every job shares is said once, not per row
    assert "Leaderboard:" in result.stdout + result.stderr
    assert (sweep_dir / "leaderboard.md").read_text().count("| ok |") == 4


def test_a_failing_job_is_a_row_not_the_end_of_the_sweep(run_ftkit, tiny_model, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        run_ftkit,
        tiny_model,
        sweep_dir,
        "recipe.data.train=missing.jsonl,bundled:tickets/train.jsonl",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = leaderboard(sweep_dir)
    assert [row["status"] for row in rows] == ["ok", "failed"]  # the failed job (job 0) comes last
    assert rows[1]["job"] == "0" and "missing.jsonl" in rows[1]["error"] and "does not exist" in rows[1]["error"]
    assert (sweep_dir / "1" / "metrics.json").exists()  # the job after the failure still ran


def test_optuna_sweep_of_three_trials_reports_the_best_overrides(run_ftkit, tiny_model, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        run_ftkit,
        tiny_model,
        sweep_dir,
        "hydra/sweeper=lora_search",
        "hydra.sweeper.n_trials=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"peft.r", "peft.alpha", "trainer.learning_rate"}
    rows = leaderboard(sweep_dir)
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)
    # the sweeper's best value is the leaderboard's top objective: both are the validation metric
    assert abs(best["best_value"] - float(rows[0]["validation accuracy"])) < 1e-9
    assert "Best parameters" in result.stdout + result.stderr


def test_submitit_sweep_runs_each_job_as_a_slurm_job(slurm_cluster, run_ftkit, tiny_model, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        run_ftkit,
        tiny_model,
        sweep_dir,
        "trainer.learning_rate=1e-3,5e-3",
        "hydra/launcher=slurm_jobs",
        "launcher.cpus_per_task=1",
        "launcher.time=00:10:00",
        "launcher.job_name=ftkit-sweep-test",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = leaderboard(sweep_dir)
    assert len(rows) == 2 and all(row["status"] == "ok" for row in rows), rows
    # submitit sends the sweep as one SLURM job array: one array task (<array id>_<index>) per sweep job
    tasks = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert len(tasks) == 2 and len({task.split("_")[0] for task in tasks}) == 1, tasks
    (script,) = (sweep_dir / ".submitit").glob("*/*_submission.sh")
    sbatch = script.read_text()
    assert "#SBATCH --array=0-1" in sbatch and "#SBATCH --time=10" in sbatch and "#SBATCH --cpus-per-task=1" in sbatch
    assert "#SBATCH --job-name=ftkit-sweep-test" in sbatch and "--gpus-per-node" not in sbatch  # no GPUs asked
    assert all((sweep_dir / str(job) / "metrics.json").exists() for job in (0, 1))


def test_wandb_sweep_definition_drives_ftkit_with_its_overrides():
    from ftkit.config.checks import check
    from ftkit.config.compose import compose
    from ftkit.config.overrides import rewrite_trainer_overrides
    from ftkit.recipes import get_recipe_class

    spec = yaml.safe_load((REPO / "ftkit" / "launch" / "configs" / "wandb" / "sweep.yaml").read_text())
    assert spec["program"] == "ftkit" and spec["command"][1:4] == ["ftkit", "train", "logger=wandb"]
    assert spec["command"][-1] == "${args_no_hyphens}"  # the agent's key=value pairs, as Hydra overrides
    first = {name: p["values"][0] if "values" in p else p["min"] for name, p in spec["parameters"].items()}
    cfg = compose(rewrite_trainer_overrides(["logger=wandb", *(f"{k}={v}" for k, v in first.items())]))
    check(cfg)  # every parameter is a valid ftkit key with a valid value
    assert spec["metric"]["name"] == f"validation/{get_recipe_class(cfg.recipe.name).primary_metric}"


@pytest.mark.parametrize(
    ("slurm_time", "expected"),
    [("45", 45), ("10:30", 11), ("01:00:00", 60), ("1-02:30:00", 1590), ("2-3", 2 * 1440 + 180), ("0-00:05", 5)],
)
def test_slurm_time_in_minutes_for_submitit(slurm_time, expected):
    assert minutes(slurm_time) == expected


def test_leaderboard_follows_the_recipes_direction_and_puts_failures_last(tmp_path):
    for job, objective in enumerate([3.0, 1.0, None, 2.0]):
        result = {"overrides": ["recipe=x", f"peft.r={job}"], "greater_is_better": False}
        if objective is None:
            result.update(status="failed", error="boom")
        else:
            result.update(status="ok", objective=objective, objective_metric="validation perplexity", test=objective)
        write_result(tmp_path / str(job), result)
    write_leaderboard(tmp_path)
    rows = leaderboard(tmp_path)
    assert [row["job"] for row in rows] == ["1", "3", "0", "2"]  # lower is better here; the failure last
    assert [row["rank"] for row in rows] == ["1", "2", "3", "-"] and rows[3]["error"] == "boom"
    assert [row["overrides"] for row in rows][:2] == ["peft.r=1", "peft.r=3"]
    assert "Every job: `recipe=x`" in (tmp_path / "leaderboard.md").read_text()
