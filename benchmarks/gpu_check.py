"""The GPU acceptance check (benchmarks/gpu_check.sh runs it): ftkit's default recipe on one CUDA GPU, as a table
docs/performance.md can take.

Cases, each a real `ftkit train` of --steps steps (no evaluation, no checkpoint) in its own process:
  - bf16 + sdpa, padded batches; the same with flash_attention_2 when flash-attn is installed;
  - bf16 + sdpa (and flash), padding-free batches (trainer.padding_free=true): tokens/s against padded;
  - QLoRA (4-bit NF4 base, bf16 compute) against LoRA: peak GPU memory;
  - DeepSpeed ZeRO-2 on one GPU (launcher=deepspeed_zero2 launcher.num_processes=1).
Model FLOPs utilisation counts LoRA's cost per trained token as 2/3 of full fine-tuning's 6 N (4 N: the frozen base
needs no weight gradients), N the base model's parameters, against the GPU's dense bf16 peak.

--cpu-smoke runs the same cases at toy size on the CPU (fp32; flash attention is skipped, ZeRO-2 runs on one CPU
rank) so that a test can keep the script working on machines without a GPU; --model-path then names a small model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Dense bf16 tensor-core peak (FLOP/s) by GPU name; a GPU not listed gets no MFU column value.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def cases(gpu: bool) -> list[tuple[str, list[str]]]:
    """(name, overrides) of each case; flash attention only where flash-attn is installed (and on a GPU)."""
    precision = ["model.dtype=bfloat16", "trainer.bf16=true"] if gpu else ["model.dtype=float32"]
    kernels = ["sdpa"] + (["flash_attention_2"] if gpu and importlib.util.find_spec("flash_attn") else [])
    listed = []
    for kernel in kernels:
        attention = [f"model.attn_implementation={kernel}", *precision]
        listed.append((f"LoRA, {kernel}, padded", attention))
        listed.append((f"LoRA, {kernel}, padding-free", [*attention, "trainer.padding_free=true"]))
    listed.append(
        (
            "QLoRA (NF4), sdpa, padded",
            ["peft=qlora", "model.attn_implementation=sdpa", *precision]
            + (["peft.compute_dtype=bfloat16"] if gpu else []),
        )
    )
    listed.append(
        (
            "LoRA, ZeRO-2 on 1 device, sdpa",
            ["launcher=deepspeed_zero2", "launcher.num_processes=1", "model.attn_implementation=sdpa", *precision],
        )
    )
    return listed


def base_parameters(model_path: str | None) -> int:
    """The base model's parameter count, from its config on the meta device (nothing loaded)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.config.compose import compose
    from ftkit.training.models import model_source_and_config

    _, config = model_source_and_config(
        compose([f"model.path={model_path}", "model.gguf_file=null"] if model_path else [])
    )
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def with_weights(folder: Path, work: Path) -> Path:
    """`folder` if it holds weights; else a copy with random weights from its config.json (the default model's
    98 MB GGUF does not travel to a GPU machine that has no network; speed and memory do not depend on the values)."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return folder
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target = work / "random-weights"
    shutil.copytree(folder, target)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(target)
    print(f"{folder} has no weights: random ones from its config.json in {target}", file=sys.stderr)
    return target


def run_case(overrides: list[str], common: list[str], run_dir: Path) -> dict:
    command = [sys.executable, "-m", "ftkit.cli", "train", *common, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    from ftkit.run_dir import RunDir

    train = json.loads(RunDir(run_dir).metrics_file.read_text())["train"]
    return {**train, "wall_seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same cases at toy size on the CPU")
    parser.add_argument("--steps", type=int, help="training steps per case (default: 60 on a GPU, 2 for --cpu-smoke)")
    parser.add_argument("--batch-size", type=int, help="examples per step (default: 16 on a GPU, 2 for --cpu-smoke)")
    parser.add_argument("--model-path", help="a model folder instead of the default SmolLM2-135M")
    parser.add_argument("--results", type=Path, help="markdown file to append the table to")
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    if not gpu and not args.cpu_smoke:
        parser.error("no CUDA GPU here: run with --cpu-smoke for the toy-size check on the CPU")
    steps = args.steps or (60 if gpu else 2)
    batch = args.batch_size or (16 if gpu else 2)
    common = [
        f"trainer.max_steps={steps}",
        f"trainer.per_device_train_batch_size={batch}",
        "trainer.logging_steps=1",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
        "evaluate.base=false",
        "evaluate.baselines=[]",
        "evaluate.max_examples=8",
    ]
    device = torch.cuda.get_device_name(0) if gpu else "CPU (--cpu-smoke)"
    peak = next((flops for name, flops in PEAK_BF16.items() if name in device), None) if gpu else None

    rows = []
    with tempfile.TemporaryDirectory(prefix="ftkit-gpu-check-") as work:
        model_path = str(with_weights(Path(args.model_path), Path(work))) if args.model_path else None
        if model_path:
            common += [f"model.path={model_path}", "model.gguf_file=null", "model.name=given-model"]
        flops_per_token = 4 * base_parameters(model_path)  # LoRA: 2/3 of full fine-tuning's 6 N
        for index, (name, overrides) in enumerate(cases(gpu)):
            print(f"{name} ...", file=sys.stderr, flush=True)
            found = run_case(overrides, common, Path(work) / f"case-{index}")
            if "error" in found:
                rows.append(f"| {name} | failed: {found['error']} | | | |")
                continue
            tokens = found["tokens_per_second"] or 0
            memory = found.get("peak_gpu_mb") if gpu else found["peak_rss_mb"]
            mfu = f"{100 * tokens * flops_per_token / peak:.1f}%" if peak else "n/a"
            rows.append(f"| {name} | {tokens:,.0f} | {memory:,.0f} | {mfu} | {found['wall_seconds']:.0f} |")
    memory_name = "peak GPU memory (MB)" if gpu else "peak RSS (MB)"
    table = "\n".join(
        [
            f"{device}, {steps} steps of {batch} examples, {time.strftime('%Y-%m-%d')} (benchmarks/gpu_check.sh)",
            "",
            f"| case | training tokens/s | {memory_name} | MFU (LoRA = 4 N FLOPs/token) | seconds in all |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    print(table)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as out:
            out.write(table + "\n\n")
    if any("failed:" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
