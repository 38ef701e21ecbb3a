"""`ftkit export` on tiny trained runs: a merged model that loads alone, the adapter alone, QLoRA, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from tests.conftest import tiny_overrides


def ftkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real `ftkit` console script (as conftest's run_ftkit, usable from a module-scoped fixture)."""
    env = {k: v for k, v in os.environ.items() if k != "FTKIT_DEBUG"}
    env.update(FTKIT_CACHE=str(cwd / "cache"), HF_HUB_OFFLINE="1")
    command = [str(Path(sys.executable).with_name("ftkit")), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished LoRA run and one QLoRA run of the tiny model (about 40 s each on a CPU)."""
    folder = tmp_path_factory.mktemp("export-runs")
    trained = {}
    for method in ("lora", "qlora"):
        run_dir = folder / method
        extra = ("trainer.learning_rate=5e-3", f"peft={method}")
        result = ftkit("train", *tiny_overrides(tiny_model, run_dir, *extra), cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]
        trained[method] = run_dir
    return trained


def prompt_logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    """Logits at every position of four real test prompts under the chat template, concatenated."""
    recipe = get_recipe_class("tickets")(compose([]).recipe)
    outputs = []
    for record in recipe.load_split("test")[:4]:
        ids = tokenizer.apply_chat_template(recipe.prompt(record["text"]), add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in transformers 5
        with torch.no_grad():
            outputs.append(model(torch.tensor([ids])).logits[0].float())
    return torch.cat(outputs)


def adapter_on_base(tiny_model: Path, adapter: Path) -> torch.Tensor:
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    return prompt_logits(model, AutoTokenizer.from_pretrained(adapter))


def test_merged_export_loads_alone_and_matches_base_plus_adapter(runs, tiny_model):
    run_dir = runs["lora"]
    result = ftkit("export", f"run={run_dir}", cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "export"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert "tokenizer_config.json" in os.listdir(out) and not (out / "adapter_config.json").exists()
    assert "model.safetensors" in result.stderr and "MB" in result.stderr and "merged" in result.stderr
    # A standalone folder: nothing in it points back at the base model's folder.
    for file in out.glob("*.json"):
        assert str(tiny_model) not in file.read_text(), file.name

    card = (out / "README.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "**accuracy**" in card and f"{metrics['finetuned']['accuracy']:.4f}" in card
    assert f"{metrics['base']['macro_f1']:.4f}" in card and "learning_rate: 0.005" in card
    assert "AutoModelForCausalLM.from_pretrained" in card

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert next(merged.parameters()).dtype == torch.float32
    logits = prompt_logits(merged, AutoTokenizer.from_pretrained(out))
    expected = adapter_on_base(tiny_model, run_dir / "adapter")
    print(f"merged vs base + adapter: max |logit diff| {(logits - expected).abs().max():.2e}")  # measured: ~1e-7
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # ... and the adapter mattered: the base alone is far from it.
    base = prompt_logits(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(out))
    assert (base - expected).abs().max() > 1e-2


def test_adapter_export_reloads_on_the_base(runs, tiny_model):
    run_dir = runs["lora"]
    result = ftkit("export", f"run={run_dir}", "merge=false", cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "export-adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists() and not (out / "training_args.bin").exists()
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and str(tiny_model) in card and "tiny-llama" in card
    logits = adapter_on_base(tiny_model, out)
    torch.testing.assert_close(logits, adapter_on_base(tiny_model, run_dir / "adapter"), atol=0, rtol=0)


def test_qlora_export_merges_into_the_dequantized_base(runs, tiny_model):
    from ftkit.config.compose import run_config
    from ftkit.run_dir import RunDir
    from ftkit.training.models import load_trained

    run_dir = runs["qlora"]
    result = ftkit("export", f"run={run_dir}", cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "export"
    card = (out / "README.md").read_text()
    assert "de-quantized" in card and "4-bit" in card and "full precision" in card
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = prompt_logits(merged, tokenizer)
    # Exactly the adapter on the full-precision base: it was merged there, not into 4-bit weights.
    torch.testing.assert_close(logits, adapter_on_base(tiny_model, run_dir / "adapter"), atol=1e-5, rtol=0)

    # Against the model the run trained and scored (4-bit base + adapter, as `ftkit eval` loads it), the merged
    # model differs by the 4-bit (NF4) rounding of the base's linear weights, so no tight tolerance holds. Measured
    # on this model: max |logit diff| ~0.06, on logits within +-0.6, while training moved them by ~0.8 from the
    # base's. The bounds are loose but meaningful: well under the adapter's own effect, and small in absolute terms.
    quantized, _ = load_trained(run_config(RunDir(run_dir), []), RunDir(run_dir))
    trained = prompt_logits(quantized, tokenizer)
    base = prompt_logits(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), tokenizer)
    gap, adapter_effect = (logits - trained).abs().max().item(), (base - trained).abs().max().item()
    print(f"QLoRA merged vs 4-bit + adapter: max |logit diff| {gap:.3e}; base vs 4-bit + adapter {adapter_effect:.3e}")
    assert gap < 0.15
    assert gap < adapter_effect / 4


def test_full_fine_tuning_run_is_exported_as_saved(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    extra = ("peft=none", "evaluate.base=false", "trainer.max_steps=2")
    result = ftkit("train", *tiny_overrides(tiny_model, run_dir, *extra), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = ftkit("export", f"run={run_dir}", f"out={tmp_path / 'exported'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "exported"
    saved = (run_dir / "model" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == saved and (out / "generation_config.json").is_file()
    assert not (out / "training_args.bin").exists() and "fully fine-tuned" in (out / "README.md").read_text()
    # There is no adapter to export alone.
    result = ftkit("export", f"run={run_dir}", "merge=false", cwd=tmp_path)
    assert result.returncode == 2 and "no adapter" in result.stderr and "Traceback" not in result.stderr


def test_refusals_exit_2_without_traceback_and_touch_nothing(runs, tmp_path):
    run_dir = runs["lora"]
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = ftkit("export", f"run={run_dir}", f"out={out}", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    not_a_run = tmp_path / "somewhere"
    not_a_run.mkdir()
    (not_a_run / "config.yaml").write_text("a: 1\n")
    result = ftkit("export", f"run={not_a_run}", cwd=tmp_path)
    assert result.returncode == 2 and "not a finished ftkit run" in result.stderr
    assert "Traceback" not in result.stderr and not (not_a_run / "export").exists()

    result = ftkit("export", f"run={run_dir}", "merge=maybe", f"out={tmp_path / 'new'}", cwd=tmp_path)
    assert result.returncode == 2 and "merge=maybe" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()
