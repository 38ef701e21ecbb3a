"""SDPA over a padding-free row one example at a time, so that flattening a batch saves time on a CPU too.

TRL's padding-free collator flattens a batch into one row and sends the example boundaries (cu_seq_lens_q/k) that
FlashAttention's varlen kernel reads. Under sdpa, transformers ignores them: it rebuilds the boundaries from the
position ids and runs attention over the whole row under a dense block-diagonal mask. On a CPU that costs ~3x the
attention of the padded batch (8 examples of ~52 tokens: 417^2 scores instead of 8 x 72^2), which ate what the
padding saved (docs/performance.md: 202 vs 200 tokens/s). Here each example's slice of the row goes through
transformers' own sdpa_attention_forward with a plain causal mask: the same scores and the same result, since the
block-diagonal mask allows exactly those, without the off-diagonal blocks.

The split is taken only where it is exact: one row, keys the same tokens as queries (no KV cache), causal
attention, no position bias, and no sliding window shorter than the longest example. Everything else goes to
transformers' sdpa unchanged. Generation and ftkit's scoring never send cu_seq_lens, so only padding-free and
packed training batches (and their evaluation loss) take this path.
"""

from __future__ import annotations

from typing import Any

import torch


def attend_within_examples() -> None:
    """Register the per-example split as transformers' "sdpa" attention (once per process)."""
    from transformers import AttentionInterface
    from transformers.integrations import sdpa_attention

    current = AttentionInterface._global_mapping["sdpa"]
    if getattr(current, "ftkit_original", None) is not None:
        return
    original = sdpa_attention.sdpa_attention_forward

    def sdpa_within_examples(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        bounds = _example_bounds(module, query, key, kwargs)
        if bounds is None:
            return original(module, query, key, value, attention_mask, **kwargs)
        kwargs = {name: arg for name, arg in kwargs.items() if not name.startswith(("cu_seq_lens", "max_length"))}
        outputs = [
            original(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **kwargs)[0]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return torch.cat(outputs, dim=1), None  # (1, tokens, heads, head_dim), as sdpa returns it

    sdpa_within_examples.ftkit_original = original  # type: ignore[attr-defined]
    AttentionInterface.register("sdpa", sdpa_within_examples)


def _example_bounds(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> list[int] | None:
    """The examples' start offsets plus the row's end, or None where splitting the row would not be exact."""
    starts_q, starts_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if starts_q is None or starts_k is None or query.shape[0] != 1:
        return None
    causal = kwargs.get("is_causal")
    if (getattr(module, "is_causal", True) if causal is None else causal) is not True:
        return None
    if any(kwargs.get(name) is not None for name in ("position_bias", "s_aux", "sinks", "softcap")):
        return None
    bounds, length = starts_q.tolist(), query.shape[2]
    if bounds != starts_k.tolist() or key.shape[2] != length or bounds[0] != 0 or bounds[-1] != length:
        return None
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    if window is not None and longest > window - 1:
        return None
    return bounds
