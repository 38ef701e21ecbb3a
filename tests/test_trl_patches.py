"""The CPU speed fix must not change what is learnt: same loss, same gradients, as TRL's own path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def loss_and_grads(model_dir, input_ids, labels):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.entropy.detach(), grads


def test_compact_lm_head_matches_trl_default(tiny_model, monkeypatch):
    import trl.trainer.utils as trl_utils

    from ftkit.training.patches import score_only_labelled_positions_on_cpu

    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (3, 12))
    labels = input_ids.clone()
    labels[:, :8] = -100  # prompt positions, as completion-only loss masks them
    labels[2, 8:] = -100  # one fully masked row: still a valid, differentiable zero contribution

    # Record how many positions go through the LM head, to see which path TRL took.
    original = trl_utils._ChunkedLogProbFunction
    scored_rows: list[int] = []

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored_rows.append(hidden.shape[0])
            return original.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    # An earlier in-process training run may have patched the hook already: start from TRL's own, and let
    # monkeypatch put back whatever was there after the test.
    trl_own = getattr(trl_utils._use_triton, "ftkit_original", trl_utils._use_triton)
    monkeypatch.setattr(trl_utils, "_use_triton", trl_own)
    assert not trl_utils._use_triton(torch.device("cpu"))

    default = loss_and_grads(tiny_model, input_ids, labels)
    assert score_only_labelled_positions_on_cpu()
    assert score_only_labelled_positions_on_cpu()  # idempotent: a second call does not wrap again
    assert trl_utils._use_triton(torch.device("cpu"))
    compact = loss_and_grads(tiny_model, input_ids, labels)

    labelled = int((labels[:, 1:] != -100).sum())
    assert scored_rows == [3 * 11, labelled]  # TRL's CPU default scores every shifted position; ftkit's only labels

    torch.testing.assert_close(compact[0], default[0])
    torch.testing.assert_close(compact[1], default[1])
    assert compact[2].keys() == default[2].keys()
    for name, grad in default[2].items():
        torch.testing.assert_close(compact[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
