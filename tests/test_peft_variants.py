"""peft=qlora / dora / none through `ftkit train` and `ftkit eval` on the tiny random Llama (CPU, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ftkit.config.compose import compose
from tests.conftest import tiny_overrides


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score_matrix(rows: list[dict]) -> torch.Tensor:
    labels = sorted(rows[0]["scores"])
    return torch.tensor([[row["scores"][label] for label in labels] for row in rows])


def assert_eval_reproduces(run_ftkit, run_dir: Path, out: Path) -> None:
    """`ftkit eval run=<dir>` loads what the run produced: same accuracy and scores as its own evaluation."""
    result = run_ftkit("eval", f"run={run_dir}", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())["finetuned"]
    evaluated = json.loads((out / "metrics.json").read_text())["metrics"]
    assert evaluated["examples"] == 24
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"])
    finetuned = score_matrix(read_jsonl(run_dir / "predictions" / "finetuned.jsonl"))
    torch.testing.assert_close(score_matrix(read_jsonl(out / "predictions.jsonl")), finetuned, atol=1e-5, rtol=0)
    # ... and those are the trained weights, not the base model's: the base scored differently.
    base = score_matrix(read_jsonl(run_dir / "predictions" / "base.jsonl"))
    assert (base - finetuned).abs().max() > 1e-2


def linear_weights(model_dir: Path) -> int:
    """Parameters in the tiny model's linear layers: what QLoRA stores in 4 bits (the tied head stays full)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def test_qlora_trains_on_cpu_in_less_weight_memory_and_eval_reproduces_it(run_ftkit, tiny_model, tmp_path):
    runs = {}
    for method in ("lora", "qlora"):
        runs[method] = tmp_path / method
        # Base evaluation first, then training: on CPUs with AVX512-bf16, bitsandbytes' inference-only weight
        # repacking would otherwise break the backward pass (and fail on this model's 32-wide layers).
        extra = ("trainer.learning_rate=5e-3", f"peft={method}")
        result = run_ftkit("train", *tiny_overrides(tiny_model, runs[method], *extra))
        assert result.returncode == 0, result.stderr[-3000:]
    lora, qlora = (json.loads((runs[m] / "metrics.json").read_text())["train"] for m in ("lora", "qlora"))
    assert qlora["global_step"] == 6 and qlora["train_loss"] > 0
    assert qlora["trainable_parameters"] == lora["trainable_parameters"]  # the same LoRA adapters ...
    # ... on a base whose linear layers are stored in 4 bits instead of 32: at least 3.5 bytes less per weight.
    # (The tiny model is mostly its embedding, which QLoRA keeps in full precision, so the total shrinks little.)
    saved = (lora["weights_mb"] - qlora["weights_mb"]) * 2**20
    assert saved >= 3.5 * linear_weights(tiny_model)
    assert "| model weights (MB)" in (runs["qlora"] / "report.md").read_text()
    config = json.loads((runs["qlora"] / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not config["use_dora"]

    assert_eval_reproduces(run_ftkit, runs["qlora"], tmp_path / "qlora-eval")


def test_dora_trains_a_magnitude_per_output_feature(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    extra = ("peft=dora", "trainer.learning_rate=5e-3", "evaluate.base=false", "trainer.max_steps=2")
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, *extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as saved:
        sizes = {key: saved.get_tensor(key).numel() for key in saved.keys()}  # noqa: SIM118 (not a dict)
    magnitudes = {k: n for k, n in sizes.items() if "lora_magnitude_vector" in k}
    assert len(magnitudes) == 14  # 7 projections x 2 layers
    trainable = json.loads((run_dir / "metrics.json").read_text())["train"]["trainable_parameters"]
    assert trainable == sum(sizes.values())


def test_full_fine_tuning_saves_the_model_and_eval_reproduces_it(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, "peft=none", "trainer.learning_rate=1e-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run_dir / "model" / name).is_file(), name
    assert not (run_dir / "adapter").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())["train"]
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert metrics["trainable_parameters"] == base.num_parameters()  # every weight trained
    tuned = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert not torch.equal(tuned.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)

    assert_eval_reproduces(run_ftkit, run_dir, tmp_path / "eval")
    predicted = run_ftkit("predict", f"run={run_dir}", stdin='{"text": "pump seal leaking"}\n')
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout.splitlines()[-1])["prediction"]["label"]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["peft=none", "peft.top_layers=1"], ["peft.top_layers", "peft=none trains every weight"]),
        (["peft=none", "model.dtype=float16"], ["model.dtype", "model.dtype=float32"]),
        pytest.param(
            ["peft=qlora", "model.dtype=float16"],
            ["model.dtype", "without a GPU", "model.dtype=auto"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="float16 is a fine QLoRA base on a GPU"),
        ),
        (["peft=dora", "peft.bias=everything"], ["peft.bias", "lora_only"]),
        (["peft=none", "peft.loraplus_lr_ratio=16"], ["peft.loraplus_lr_ratio", "peft=none trains every weight"]),
        (["peft.loraplus_lr_ratio=-2"], ["peft.loraplus_lr_ratio must be a positive number"]),
        (["peft=qlora", "peft.target_modules=[]"], ["peft.target_modules is empty", "all-linear"]),
    ],
)
def test_peft_mistakes_exit_2_before_anything_loads(run_ftkit, tiny_model, tmp_path, overrides, fragments):
    run_dir = tmp_path / "run"
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, *overrides))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert not run_dir.exists()  # refused before Hydra made a run directory


def test_unknown_target_module_names_the_models_layers(run_ftkit, tiny_model, tmp_path):
    extra = ("peft=lora", "peft.target_modules=[q_proj,qkv_proj]", "evaluate.base=false")
    result = run_ftkit("train", *tiny_overrides(tiny_model, tmp_path / "run", *extra))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "'qkv_proj'" in result.stderr and "'q_proj'" not in result.stderr
    assert "peft.target_modules=[down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj]" in result.stderr


def test_adapter_config_per_method(tiny_model):
    from transformers import AutoModelForCausalLM

    from ftkit.training.models import adapter_config

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft = compose(["peft=dora"]).peft
    assert adapter_config(peft, model).use_dora is True
    lora = adapter_config(compose(["peft=qlora"]).peft, model)
    assert lora.use_dora is False and lora.r == 16 and lora.target_modules == "all-linear"
    assert adapter_config(compose(["peft=none"]).peft, model) is None
    top = adapter_config(compose(["peft=dora", "peft.top_layers=1"]).peft, model)
    assert top.use_dora is True and top.layers_to_transform == [1]


def test_loraplus_gives_b_matrices_the_larger_learning_rate(tiny_model, tmp_path):
    from ftkit.recipes import get_recipe_class
    from ftkit.training.callbacks import StopOnSignal
    from ftkit.training.models import load_model_and_tokenizer
    from ftkit.training.run import build_trainer, load_splits, training_arguments

    overrides = tiny_overrides(tiny_model, tmp_path / "run", "peft.loraplus_lr_ratio=8", "trainer.learning_rate=1e-3")
    cfg = compose([o for o in overrides if not o.startswith("hydra.")])
    recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
    splits = load_splits(recipe, cfg)
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.peft)
    args = training_arguments(cfg, recipe, tmp_path)
    trainer = build_trainer(cfg, args, recipe, model, tokenizer, splits, StopOnSignal())
    optimizer = trainer.create_optimizer()

    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trained = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(map(id, trained.values())) == set(lr_of)  # every trainable weight is optimized, nothing else
    for name, param in trained.items():
        assert lr_of[id(param)] == pytest.approx(8e-3 if "lora_B" in name else 1e-3), name
    assert any("lora_B" in name for name in trained) and any("lora_A" in name for name in trained)
