#!/usr/bin/env bash
# The GPU acceptance check, in one prepared script (at most ~8 minutes on one H100):
#   bash benchmarks/gpu_check.sh [--wheelhouse DIR] [--results FILE]     on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu-smoke [--model-path DIR]          the same cases at toy size on the CPU
# What it runs and how the table reads: benchmarks/gpu_check.py. A GPU machine without network takes ftkit's
# dependencies from a wheelhouse carried along (benchmarks/gpu_wheelhouse.sh fills one on a machine with network, with
# the default model's config and tokenizer: --model-path .gpu/smollm2-135m trains it with random weights there).
set -euo pipefail
cd "$(dirname "$0")/.."
wheelhouse=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "$wheelhouse" ] && python=.venv/bin/python
if [ -n "$wheelhouse" ]; then
    # ftkit's dependencies from the wheelhouse, then ftkit itself from this checkout (not editable: conf/ and
    # recipes/ install inside the package), all into one folder put first on the path.
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ftkit-site \
        "$wheelhouse"/*.whl
    "$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/ftkit-site .
    export PYTHONPATH="/tmp/ftkit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$python" benchmarks/gpu_check.py "${args[@]}"
