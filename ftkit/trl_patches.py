"""One narrow speed fix for TRL on CPU, applied by ftkit.train before the trainer is built.

TRL's fused LM-head loss scores only the positions that carry a label when the device runs Triton (CUDA, XPU),
and every position elsewhere, to keep tile shapes fixed for compilers such as Neuron's. A CPU has no such
compiler, and for classification almost every position is prompt: scoring all of them through the
49k-row LM head, forward and backward, was ~15% of a training step here. The loss is the same either way
(tests/test_train.py checks it), so on CPU ftkit asks TRL for the compact path. If a TRL release renames the hook,
this does nothing and training runs at TRL's own speed.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ftkit")


def score_only_labelled_positions_on_cpu() -> bool:
    """Make TRL's fused loss skip unlabelled positions on CPU too; True when the hook was found and patched."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        log.debug("TRL has no _use_triton hook; CPU training scores every position")
        return False
    if getattr(original, "ftkit_patched", False):
        return True

    def compact_on_cpu(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu.ftkit_patched = True  # type: ignore[attr-defined]
    compact_on_cpu.ftkit_original = original  # type: ignore[attr-defined]  # lets a test compare with TRL's own path
    # Only trl.trainer.utils' name is rebound: the kernels module keeps its own reference, so CPU still runs
    # the plain-torch tiles, just on fewer rows.
    trl_utils._use_triton = compact_on_cpu
    return True
