"""Multi-process launches on this CPU machine (DDP, DeepSpeed ZeRO-2), the launch checks, and the dry run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit import cli
from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.launch import ranks, relaunch
from ftkit.launch.accelerate import launch_files, write_deepspeed_config
from ftkit.launch.checks import check_machine
from ftkit.run_dir import log_file_name
from tests.conftest import REPO, tiny_overrides

RANK_LINE = re.compile(r"rank (\d) of (\d) \((\w+)\): trained (\d+) steps; trainable weights sha256 (\w+)")


def rank_lines(run_dir: Path) -> dict[int, tuple[str, ...]]:
    """{rank: (world size, distributed type, steps, digest)} from train.log and train.rank<N>.log."""
    found = {}
    for log in run_dir.glob("train*.log"):
        for match in RANK_LINE.finditer(log.read_text()):
            found[int(match[1])] = (match[2], match[3], match[4], match[5])
            assert log.name == ("train.log" if match[1] == "0" else f"train.rank{match[1]}.log")
    return found


def assert_two_ranks_trained_into_one_run_dir(tmp_path: Path, run_dir: Path, kind: str) -> None:
    ranks = rank_lines(run_dir)
    assert set(ranks) == {0, 1}, ranks
    assert ranks[0] == ranks[1], "both ranks must end with the same adapter weights"
    world, distributed, steps, _ = ranks[0]
    assert (world, distributed) == ("2", kind)
    # 48 examples, 8 per rank per step, 2 ranks: 3 steps (one process alone would take 6).
    assert steps == "3"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["global_step"] == 3
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "report.md").is_file()
    # No other run directory: the launching process and both ranks shared the one given.
    assert not (tmp_path / "outputs").exists()


def test_ddp_two_cpu_ranks_train_one_adapter_into_one_run_dir(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "launcher=ddp", "launcher.num_processes=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_ranks_trained_into_one_run_dir(tmp_path, run_dir, "MULTI_CPU")
    assert "launching 2 processes" in (run_dir / "train.log").read_text()
    assert "name: ddp" in (run_dir / "config.yaml").read_text()


def test_deepspeed_zero2_on_two_cpu_ranks(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "launcher=deepspeed_zero2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_ranks_trained_into_one_run_dir(tmp_path, run_dir, "DEEPSPEED")
    rendered = json.loads((run_dir / "deepspeed.json").read_text())
    assert rendered["zero_optimization"]["stage"] == 2 and rendered["train_micro_batch_size_per_gpu"] == 8


def test_launch_files_work_with_accelerate_launch_directly(tiny_model, tmp_path):
    """A user's own `accelerate launch --config_file <ftkit/launch/configs/accelerate/ddp.yaml> -m ftkit.cli train`."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "FTKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ddp = "ftkit/launch/configs/accelerate/ddp.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ddp]
    command += ["--num_processes", "2", "--main_process_port", "0", "-m", "ftkit.cli", "train"]
    result = subprocess.run(
        [*command, *tiny_overrides(tiny_model, run_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_ranks_trained_into_one_run_dir(tmp_path, run_dir, "MULTI_CPU")


@pytest.mark.parametrize("stage", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_rendered_deepspeed_configs_load_in_deepspeed(stage, tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig

    settings = ["trainer.per_device_train_batch_size=3", "trainer.gradient_accumulation_steps=4", "trainer.bf16=true"]
    cfg = compose([f"launcher=deepspeed_{stage}", *settings])
    path = write_deepspeed_config(cfg, tmp_path)
    loaded = DeepSpeedConfig(str(path))
    assert loaded.zero_optimization_stage == int(stage[4])
    assert loaded.train_micro_batch_size_per_gpu == 3 and loaded.gradient_accumulation_steps == 4
    assert loaded.bfloat16_config.enabled and not loaded.float16_config.enabled
    assert ("offload" in stage) == (loaded.zero_config.offload_optimizer is not None)
    # The templates keep "auto" for the user's own accelerate launch, and nothing else is left to fill.
    template = json.loads((launch_files() / "deepspeed" / f"{stage}.json").read_text())
    assert template["train_micro_batch_size_per_gpu"] == "auto"
    assert "auto" not in path.read_text()


@pytest.mark.parametrize(
    ("overrides", "env", "fragments"),
    [
        (["peft.method=qlora", "launcher=deepspeed_zero3"], {}, ["ZeRO-3", "deepspeed_zero2", "launcher=ddp"]),
        (["peft.method=qlora", "launcher=fsdp"], {}, ["not supported yet", "bnb_4bit_quant_storage", "peft=lora"]),
        (
            ["launcher=ddp", "launcher.name=slurm", "launcher.backend=deepspeed_zero3", "peft.method=qlora"],
            {},
            ["ZeRO-3", "deepspeed_zero2"],
        ),
        (["launcher=fsdp"], {}, ["FSDP", "launcher=ddp"]),
        (["launcher=deepspeed_zero2_offload"], {}, ["nothing to offload", "launcher=deepspeed_zero2"]),
        (["launcher=ddp", "launcher.num_processes=64"], {}, ["64 CPU ranks", "at most"]),
        (["trainer.fp16=true"], {}, ["fp16", "CUDA"]),
        (["launcher.num_processes=2"], {}, ["launcher=local runs one process", "launcher=ddp"]),
        (["launcher=ddp", "launcher.name=mpi"], {}, ["launcher.name='mpi'", "ddp"]),
        ([], {"WORLD_SIZE": "2"}, ["hydra.run.dir", "launcher=ddp"]),
    ],
)
def test_launch_mistakes_exit_2_before_anything_loads(run_ftkit, tmp_path, overrides, env, fragments):
    result = run_ftkit("train", *overrides, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not (tmp_path / "outputs").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, run_dir, "launcher=deepspeed_zero2")
    result = run_ftkit("train", *overrides, "dry_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for section in ("== Config ==", "== Launch ==", "== Data", "== Parameters ==", "== Memory estimate"):
        assert section in out
    assert "accelerate.commands.launch" in out and "ftkit/launch/configs/accelerate/deepspeed_zero2.yaml" in out
    assert f"hydra.run.dir={run_dir}" in out  # named in the launch line, not created
    # Train split: the first 48 tickets; the counts are the tokenizer's, checked against a real run below.
    assert re.search(r"train\s+\|\s+48\s+\|", out)
    assert not run_dir.exists() and not (tmp_path / "outputs").exists()

    trainable = int(re.search(r"trainable \(lora\)\s+\|\s+([\d,]+)", out)[1].replace(",", ""))
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "trainer.max_steps=1", "evaluate.base=false"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["trainable_parameters"] == trainable


@pytest.fixture()
def no_deepspeed(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if DeepSpeed were not installed, whether or not it is."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name.split(".")[0] == "deepspeed" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert importlib.util.find_spec("deepspeed") is None


@pytest.fixture()
def in_process_train(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`ftkit train` in this process: in tmp_path, with sys.argv (which train rewrites for Hydra) put back after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for name in ranks.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_printing_a_config_needs_no_deepspeed(no_deepspeed, in_process_train, tmp_path, capsys):
    cli.main(["train", "launcher=deepspeed_zero2", "--cfg", "job"])
    assert "name: deepspeed_zero2" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_the_config_rules_ask_nothing_of_this_machine(no_deepspeed):
    """eval / predict / export check a run's config too: a DeepSpeed or fp16 run trained elsewhere must pass here."""
    for overrides in (["launcher=deepspeed_zero2"], ["++trainer.fp16=true"], ["launcher=fsdp"]):
        check(compose(overrides))
    with pytest.raises(FtkitError, match="needs DeepSpeed, which is not installed"):
        check_machine(compose(["launcher=deepspeed_zero2"]))
    with pytest.raises(FtkitError, match="needs DeepSpeed"):  # a SLURM job's backend too
        check_machine(compose(["launcher=slurm", "launcher.backend=deepspeed_zero3"]))
    import torch

    if not torch.cuda.is_available():  # on a GPU, fp16 is what the machine can run
        with pytest.raises(FtkitError, match="trainer.fp16=true needs a CUDA GPU"):
            check_machine(compose(["++trainer.fp16=true"]))


def test_a_run_refuses_what_the_machine_lacks_before_launching(no_deepspeed, monkeypatch, tmp_path):
    """relaunch, which every run (and every sweep job) passes, checks the machine before it starts anything."""

    def launched(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"launched without checking the machine: {args}")

    monkeypatch.setattr(relaunch, "accelerate_command", launched)  # the launch starts from its command
    with pytest.raises(FtkitError, match="needs DeepSpeed"):
        relaunch.relaunch(compose(["launcher=deepspeed_zero2"]), tmp_path / "run", ["launcher=deepspeed_zero2"])
    assert not (tmp_path / "run").exists()
    cfg = compose(["launcher=ddp", "launcher.config_file=no_such_accelerate.yaml"])
    with pytest.raises(FtkitError, match="launcher.config_file=no_such_accelerate.yaml is not a file"):
        relaunch.relaunch(cfg, tmp_path / "run", [])


def test_a_dry_run_refuses_what_the_machine_lacks(no_deepspeed, in_process_train, monkeypatch, tmp_path, capsys):
    from ftkit.commands import dry_run

    def planned(*args: object) -> None:
        raise AssertionError("the dry run started without checking the machine")

    monkeypatch.setattr(dry_run, "dry_run", planned)
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "launcher=deepspeed_zero2", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"])
    assert stop.value.code == 2
    assert "needs DeepSpeed, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["launcher.time=abc"], ["launcher.time='abc'", "not a SLURM time limit"]),
        (["launcher.time=25:99:99"], ["launcher.time='25:99:99'", "below 60"]),
        (["launcher.time=-1"], ["launcher.time='-1'"]),
        (["launcher.time=1-24"], ["launcher.time='1-24'"]),  # days-hours: hours below 24
        (["launcher.time=1:2:3:4"], ["launcher.time='1:2:3:4'"]),
        (["launcher.time=90:75"], ["launcher.time='90:75'"]),  # minutes:seconds
        (["launcher.nodes=0"], ["launcher.nodes", ">= 1"]),
        (["launcher.nodes=-2"], ["launcher.nodes", ">= 1"]),
        (["launcher.gpus_per_node=-1"], ["launcher.gpus_per_node", ">= 0"]),
        (["launcher.cpus_per_task=0"], ["launcher.cpus_per_task", ">= 1"]),
        (["launcher.mem=lots"], ["launcher.mem='lots'", "64G"]),
        (["launcher.mem=64GB"], ["launcher.mem='64GB'"]),
        (["launcher.mem=-4G"], ["launcher.mem='-4G'"]),
        (["launcher.main_process_port=65536"], ["launcher.main_process_port=65536", "not a TCP port"]),
        (["launcher.main_process_port=-1"], ["launcher.main_process_port=-1", "not a TCP port"]),
        (["launcher.backend=mpi"], ["launcher.backend='mpi'"]),
        (["launcher.partition='gpu\nbig'"], ["launcher.partition", "spans lines"]),
        (["launcher.job_name='a\"b'"], ["launcher.job_name", "double quote"]),
        (["launcher.sbatch_extra=['--qos=high\n--x']"], ["launcher.sbatch_extra", "spans lines"]),
    ],
)
def test_launcher_values_no_run_can_mean_are_refused(overrides, fragments):
    with pytest.raises(FtkitError) as refused:
        check(compose(["launcher=slurm", *overrides]))
    for fragment in fragments:
        assert fragment in str(refused.value), (fragment, str(refused.value))
    assert "Fix:" in str(refused.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["launcher.time=90"],  # minutes
        ["launcher.time=0"],  # no limit
        ["launcher.time=30:00"],  # minutes:seconds
        ["launcher.time=48:00:00"],  # hours past a day are fine as hours:minutes:seconds
        ["launcher.time=2-12"],
        ["launcher.time=2-12:30"],
        ["launcher.time=2-12:30:59"],
        ["launcher.time=UNLIMITED"],
        ["launcher.mem=64G", "launcher.cpus_per_task=8", "launcher.gpus_per_node=0", "launcher.nodes=4"],
        ["launcher.mem=512"],  # megabytes
        ["launcher.mem=0"],  # all of the node's memory
        ["launcher.main_process_port=29500"],
        ["launcher.main_process_port=0"],  # like null: a free port
        ["launcher.main_process_port=65535"],
        ["launcher.job_name='tickets v2'", "launcher.partition=gpu", "launcher.sbatch_extra=['--qos=high']"],
    ],
)
def test_launcher_values_a_run_can_mean_pass(overrides):
    check(compose(["launcher=slurm", *overrides]))


def test_an_accelerate_config_file_must_be_there_at_run_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(["launcher=slurm", "launcher.config_file=mine.yaml"])
    check(cfg)  # printing or evaluating such a run elsewhere needs no file
    with pytest.raises(FtkitError, match="launcher.config_file=mine.yaml is not a file here"):
        check_machine(cfg)
    (tmp_path / "mine.yaml").write_text("distributed_type: MULTI_GPU\n")
    check_machine(cfg)


@pytest.fixture()
def rank_environment(monkeypatch: pytest.MonkeyPatch):
    """Set WORLD_SIZE / RANK / LOCAL_RANK for one test, none of them set otherwise."""
    for name in ranks.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_variables(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_variables


def test_no_launcher_means_one_process_of_its_own(rank_environment):
    assert ranks.rank_variables() == (1, 0, None)
    assert ranks.launched_world_size() == 1 and ranks.local_rank() is None and ranks.rank() == 0
    assert not ranks.in_launched_rank() and ranks.is_main_rank()
    assert ranks.log_file_name() == log_file_name(0)


def test_a_launched_rank_reads_its_variables(rank_environment):
    rank_environment(WORLD_SIZE="4", RANK="3", LOCAL_RANK="1")
    assert ranks.rank_variables() == (4, 3, 1)
    assert ranks.launched_world_size() == 4 and ranks.in_launched_rank() and not ranks.is_main_rank()
    assert ranks.log_file_name() == log_file_name(3)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
        ({"WORLD_SIZE": ""}, "WORLD_SIZE=''"),
        ({"WORLD_SIZE": "1.5"}, "WORLD_SIZE='1.5'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'"),
        ({"RANK": "first"}, "RANK='first'"),
        ({"RANK": "-1"}, "RANK='-1'"),
        ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1'"),
        ({"LOCAL_RANK": "gpu0"}, "LOCAL_RANK='gpu0'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "5"}, "LOCAL_RANK=5"),
        ({"RANK": "1"}, "WORLD_SIZE is unset"),
    ],
)
def test_garbage_rank_variables_are_refused_by_every_reader(rank_environment, variables, named):
    rank_environment(**variables)
    readers = [ranks.rank_variables, ranks.launched_world_size, ranks.rank, ranks.local_rank, ranks.in_launched_rank]
    for reader in [*readers, ranks.is_main_rank, ranks.log_file_name, lambda: check(compose([]))]:
        with pytest.raises(FtkitError) as refused:
            reader()
        assert named in str(refused.value) and "environment variable" in str(refused.value)
