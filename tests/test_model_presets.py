"""The model presets in conf/model: each composes (alone and with trainer=gpu), names LoRA targets its architecture
has, and trains. No download: each architecture family is built tiny, with random weights, from its config class."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.config.overrides import rewrite_trainer_overrides
from tests.conftest import SMOLLM2_GGUF, smollm2_folder, tiny_overrides

PRESETS_DIR = Path(__file__).parents[1] / "conf" / "model"
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
HUB_PRESETS = [name for name in PRESETS if name != "smollm2_135m"]  # the default comes from a PyPI package
FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3"]


def preset(name: str) -> dict:
    return yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())


def test_presets_cover_the_families_people_fine_tune():
    assert len(HUB_PRESETS) >= 14
    assert {preset(name)["architecture"]["model_type"] for name in HUB_PRESETS} == set(FAMILIES)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_opens_with_its_command(name):
    first_line = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith(f"# ftkit train model={name}")
    cfg = compose([f"model={name}"])
    check(cfg)
    assert cfg.peft.target_modules == cfg.model.lora_target_modules  # the preset's choice reaches LoRA
    if name in HUB_PRESETS:
        assert "/" in cfg.model.path and cfg.model.revision and isinstance(cfg.model.gated, bool)
        assert cfg.model.dtype == "auto" and cfg.model.parameters_b > 0
        assert cfg.model.attn_implementation in ("auto", "eager")


@pytest.mark.parametrize("name", PRESETS)
def test_gpu_trainer_composes_with_every_preset(name):
    cfg = compose([f"model={name}", "trainer=gpu"])
    check(cfg)
    assert cfg.trainer.bf16 is True and cfg.trainer.padding_free is True
    large = (cfg.model.parameters_b or 0) >= 7
    assert cfg.trainer.activation_checkpointing is large
    assert cfg.trainer.use_liger_kernel is (__import__("importlib").util.find_spec("liger_kernel") is not None)


def test_gated_preset_says_how_to_get_access():
    from ftkit.errors import FtkitError
    from ftkit.training.models import loading_errors

    cfg = compose(["model=llama3_2_1b"])
    gated = "gated: accept its licence on https://huggingface.co/meta-llama/.*HF_TOKEN"
    with pytest.raises(FtkitError, match=gated), loading_errors(cfg.model, cfg.model.path):
        raise OSError("You are trying to access a gated repo. Make sure to have access to it.")
    qwen = compose(["model=qwen2_5_0_5b"]).model
    with pytest.raises(FtkitError) as plain, loading_errors(qwen, "Qwen/Qwen2.5-0.5B-Instruct"):
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    assert "gated" not in str(plain.value) and "network access" in str(plain.value)


def tiny_of(name: str, folder: Path) -> Path:
    """A 2-layer random model of the preset's architecture (its config class, its attention layout) with SmolLM2's
    tokenizer and chat template, saved as an HF folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    architecture = dict(preset(name)["architecture"])
    model_type = architecture.pop("model_type")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    grouped = architecture["num_key_value_heads"] < architecture["num_attention_heads"]
    sizes = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2 if grouped else 4,
        "max_position_embeddings": 512,
        "tie_word_embeddings": architecture["tie_word_embeddings"],
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if "head_dim" in architecture:
        sizes["head_dim"] = 16
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **sizes)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# One preset per family: the smallest, so that the names and settings tested are the ones users run.
FAMILY_PRESETS = {
    family: min(
        (n for n in HUB_PRESETS if preset(n)["architecture"]["model_type"] == family),
        key=lambda n: preset(n)["parameters_b"],
    )
    for family in FAMILIES
}


@pytest.mark.parametrize("family", FAMILIES)
def test_preset_lora_attaches_trains_a_step_and_reloads(family, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftkit.recipes import get_recipe_class
    from ftkit.training.callbacks import StopOnSignal
    from ftkit.training.models import load_model_and_tokenizer
    from ftkit.training.run import build_trainer, load_splits, training_arguments

    name = FAMILY_PRESETS[family]
    folder = tiny_of(name, tmp_path / "model")
    overrides = tiny_overrides(
        folder,
        tmp_path / "run",
        "trainer.max_steps=1",
        "trainer.warmup_steps=0",
        "trainer.per_device_train_batch_size=4",
    )
    overrides = [o for o in overrides if not o.startswith(("hydra.", "model.name", "model.gguf_file"))]
    cfg = compose(rewrite_trainer_overrides([f"model={name}", *overrides]))
    check(cfg)
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = load_splits(recipe, cfg)
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.peft)
    args = training_arguments(cfg, recipe, tmp_path / "out")
    trainer = build_trainer(cfg, args, recipe, model, tokenizer, splits, StopOnSignal())

    # The preset's target modules are every linear layer of the architecture but the output head: LoRA wraps each.
    targets = set(cfg.model.lora_target_modules)
    head = trainer.model.get_output_embeddings()
    wrapped = {n.rsplit(".", 1)[-1] for n, m in trainer.model.named_modules() if hasattr(m, "lora_A")}
    linear = set()  # every linear layer's name, a wrapped one's (its base_layer) included
    for n, m in trainer.model.named_modules():
        if isinstance(m, torch.nn.Linear) and m is not head and "lora_" not in n:
            parts = n.split(".")
            linear.add(parts[-2] if parts[-1] == "base_layer" else parts[-1])
    assert wrapped == targets
    assert linear == targets

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert trainer.state.global_step == 1
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the step changed the adapter

    adapter = tmp_path / "adapter"
    trainer.model.save_pretrained(adapter)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), str(adapter)).eval()
    trainer.model.eval()
    ids = tokenizer("a printer on floor 3 is jammed", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, trainer.model(ids).logits, atol=1e-5, rtol=0)


def test_dry_run_plans_a_hub_preset_offline(run_ftkit):
    """The 8-GPU plan for a 7B preset, on a machine that cannot reach the hub: from the preset's architecture."""
    result = run_ftkit(
        "train",
        "model=qwen2_5_7b",
        "trainer=gpu",
        "launcher=deepspeed_zero2",
        "launcher.num_processes=8",
        "dry_run=true",
    )  # run_ftkit sets HF_HUB_OFFLINE=1: the hub id cannot be read
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "planned from model.architecture" in out
    assert "--num_processes 8" in out and "deepspeed" in out
    # This machine has no GPU: the plan says so, and is made all the same.
    assert "this machine could not start the run itself" in result.stderr and "8" in result.stderr
    assert "== Memory estimate per process" in out
    parameters = int(re.search(r"^model\s+\|\s+([\d,]+)", out, re.M).group(1).replace(",", ""))
    assert 7.0e9 < parameters < 8.0e9  # Qwen2.5-7B has 7.6 billion
