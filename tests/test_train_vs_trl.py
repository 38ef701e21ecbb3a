"""benchmarks/train_vs_trl.py end to end on a tiny model: ftkit train and the plain TRL script on equal settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_sentiment import TWITTER_IDS, write_int_csv


def test_ftkit_and_the_plain_trl_script_train_the_same_adapter_at_equal_settings(tiny_model, tmp_path):
    records = [json.loads(line) for line in (REPO / "recipes/data/sentiment/train.jsonl").read_text().splitlines()]
    data = tmp_path / "sent_all.csv"
    write_int_csv(data, records[:90], TWITTER_IDS)
    results = tmp_path / "results.md"
    work = tmp_path / "work"
    command = [
        sys.executable,
        str(REPO / "benchmarks/train_vs_trl.py"),
        f"--train={data}",
        "--recipe=sentiment",
        "--label-map={0: negative, 1: positive, 2: neutral}",
        "--train-size=32",
        "--test-size=12",
        f"--model-path={tiny_model}",
        "--variants=ftkit-random,plain,ftkit-padding-free",
        f"--work-dir={work}",
        f"--results={results}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTKIT_CACHE": str(tmp_path / "cache")}
    env.pop("FTKIT_DEBUG", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]

    # Both sides trained on the same examples in the same order with the same settings: the same tokens, steps
    # and (up to float reordering: ftkit's loss skips unlabelled positions) the same LoRA weights. Padding-free
    # flattens the same random batches into rows, so it trains the same weights too.
    runs = [json.loads(line.split("benchmark: ", 1)[1]) for line in result.stdout.splitlines() if '"variant"' in line]
    assert [run["variant"] for run in runs] == ["ftkit-random", "plain", "ftkit-padding-free"]
    assert runs[0]["tokens"] == runs[1]["tokens"] == runs[2]["tokens"] > 0
    plain_adapter = load_file(work / "plain-seed42-1" / "adapter" / "adapter_model.safetensors")
    for variant in ("ftkit-random", "ftkit-padding-free"):
        ftkit_adapter = load_file(work / f"{variant}-seed42-1" / "adapter" / "adapter_model.safetensors")
        assert ftkit_adapter.keys() == plain_adapter.keys()
        for name, weight in ftkit_adapter.items():
            torch.testing.assert_close(weight, plain_adapter[name], atol=1e-4, rtol=1e-3, msg=f"{variant} {name}")
        assert any(weight.abs().sum() > 0 for name, weight in ftkit_adapter.items() if "lora_B" in name)  # trained

    report = results.read_text()
    assert "| variant | tokens/s ratio to the plain TRL script |" in report
    assert "| plain TRL script (TRL defaults; gradient checkpointing off, fp32) | 1.00x |" in report
