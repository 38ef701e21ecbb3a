#!/usr/bin/env bash
# Fill .gpu/ for benchmarks/gpu_check.sh on a GPU machine without network (run here, where PyPI is reachable):
#   .gpu/wheels/          ftkit's dependencies that a CUDA PyTorch image lacks, as Python 3.12 x86-64 wheels
#   .gpu/smollm2-135m/    the default model's config.json and tokenizer (its 98 MB GGUF is over the 64 MiB a call
#                         may carry; gpu_check.py gives the model random weights there, which time and size the same)
# Then, on the GPU machine:  bash benchmarks/gpu_check.sh --wheelhouse .gpu/wheels --model-path .gpu/smollm2-135m
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
mkdir -p .gpu/wheels
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
download=("$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64 -d .gpu/wheels)
# What the image has (torch, transformers, accelerate, peft, numpy, pandas, pyarrow, ...) is not carried.
# flash-attn is not among them: PyPI has only its sources, which build for hours; the check runs it where installed.
"${download[@]}" trl datasets dill multiprocess hydra-core omegaconf bitsandbytes gguf seqeval rouge-score nltk
# Only sources on PyPI: built here into pure-Python wheels (DeepSpeed compiles its ops when first used).
"$python" -m pip wheel -q --no-deps -w .gpu/wheels "antlr4-python3-runtime==4.9.3" deepspeed
"$python" - <<'PY'
from pathlib import Path
from transformers import AutoTokenizer
from ftkit.config.compose import compose
from ftkit.training.models import model_source_and_config
source, config = model_source_and_config(compose([]))
target = Path(".gpu/smollm2-135m")
config.save_pretrained(target)
AutoTokenizer.from_pretrained(**source).save_pretrained(target)
print(f"wrote {target}")
PY
du -sh .gpu
