"""benchmarks/gpu_check.sh --cpu-smoke: the GPU acceptance script's cases at toy size on the CPU, so that the script
that runs once on a lent GPU keeps working."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_check_cpu_smoke_runs_every_case(tiny_model, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "FTKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    results = tmp_path / "gpu.md"
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--cpu-smoke",
            "--model-path",
            str(tiny_model),
            "--results",
            str(results),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = results.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == [
        "LoRA, sdpa, padded",
        "LoRA, sdpa, padding-free",
        "QLoRA (NF4), sdpa, padded",
        "LoRA, ZeRO-2 on 1 device, sdpa",
    ]
    for row in rows:
        tokens = float(row.split("|")[2].replace(",", ""))
        assert tokens > 0, row
        assert row.split("|")[4].strip() == "n/a"  # no MFU on a CPU


def test_a_config_only_folder_gets_random_weights(tiny_model, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    config_only = tmp_path / "config-only"
    shutil.copytree(tiny_model, config_only, ignore=shutil.ignore_patterns("*.safetensors"))
    built = gpu_check.with_weights(config_only, tmp_path)
    assert built != config_only and any(built.glob("*.safetensors"))
    assert gpu_check.with_weights(tiny_model, tmp_path) == tiny_model
