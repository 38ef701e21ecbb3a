"""Multi-process launches on this CPU machine (DDP, DeepSpeed ZeRO-2), the launch checks, and the dry run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.config.compose import compose
from ftkit.launch.accelerate import launch_files, write_deepspeed_config
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
