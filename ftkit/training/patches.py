"""The process-wide patches ftkit installs into TRL and transformers: all of them here, all from one call.

ftkit.training.run calls install(trainer) once the trainer is built; nothing else patches a library.

1. TRL's fused LM-head loss scores only the positions that carry a label when the device runs Triton (CUDA, XPU),
   and every position elsewhere, to keep tile shapes fixed for compilers such as Neuron's. A CPU has no such
   compiler, and for classification almost every position is prompt: scoring all of them through the 49k-row LM
   head, forward and backward, was ~15% of a training step here. The loss is the same either way
   (tests/test_train.py checks it), so on CPU ftkit asks TRL for the compact path. If a TRL release renames the
   hook, this does nothing and training runs at TRL's own speed.
2. Padding-free rows (TRL's decision: trainer.padding_free, or bfd packing): transformers' "sdpa" attention runs on
   each example's slice of the row (ftkit.training.packed_attention) instead of the whole row under a mask.
"""

from __future__ import annotations

import logging
from typing import Any

from ftkit.training.packed_attention import attend_within_examples

log = logging.getLogger("ftkit")


def install(trainer: Any) -> None:
    """Every patch the built trainer calls for."""
    score_only_labelled_positions_on_cpu()
    # TRL's own decision (padding_free, or bfd packing; wrapped packing keeps rows apart and sends no boundaries)
    if trainer.padding_free:
        attend_within_examples()
        if trainer.model.config._attn_implementation == "sdpa":
            log.info("Padding-free rows: sdpa attention runs on each example's slice of the row")


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
