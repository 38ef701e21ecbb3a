"""Preprocessed training data, cached across runs: a second run on the same data skips TRL's tokenizing.

TRL's SFTTrainer prepares every dataset it is given (chat template, tokenizing, completion / assistant masks turned
into labels, truncation, packing) in `_prepare_dataset`, on every run. FtkitSFTTrainer sends that step through a
cache: the key is a sha256 over what decides its output, namely the examples themselves (after the recipe turned
records into examples, so any change of data or recipe settings changes it), the tokenizer (vocabulary, merges and
the rest of tokenizer.json, chat template, special tokens), the SFTConfig settings that preparation reads and the
trl / transformers / datasets / tokenizers versions. The value is TRL's own output, saved with save_to_disk under
$FTKIT_CACHE/datasets/<key>/ (default ~/.cache/ftkit), so a hit trains on exactly what a fresh preparation gives.

Everything TRL decides in __init__ from the raw dataset (conversational or not, completion-only loss, the
training chat template) still sees the raw dataset: only the prepared result comes from the cache. (Handing TRL
a prepared dataset with dataset_kwargs={"skip_prepare_dataset": True} instead would make those decisions on the
prepared columns, which differ after packing.)

Only rank 0 writes, into a temporary folder renamed into place, so a reader never sees half an entry; other ranks
read a finished entry or prepare for themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ftkit.launch.ranks import is_main_rank

log = logging.getLogger("ftkit")

KEY_VERSION = 1  # bump when what the key covers changes
# SFTConfig fields that _prepare_dataset reads (padding_free does not change it, but costs nothing to include)
SETTINGS = [
    "max_length",
    "packing_strategy",
    "padding_free",
    "assistant_only_loss",
    "dataset_text_field",
    "eos_token",
    "pad_token",
    "truncation_mode",
    "shuffle_dataset",
]
PACKAGES = ["trl", "transformers", "datasets", "tokenizers"]


def cache_folder() -> Path:
    from ftkit.cache import cache_dir

    return cache_dir() / "datasets"


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What of the tokenizer decides token ids: its full serialization (vocab, merges, normalizer, added tokens...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers: tokenizer.json as a string
    serialized = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "class": type(tokenizer).__name__,
        "serialized": hashlib.sha256(serialized.encode()).hexdigest(),
        "chat_template": tokenizer.chat_template,
        "special_tokens": {
            name: str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
    }


def preparation_key(
    dataset: Any,
    tokenizer: Any,
    args: Any,
    packing: bool,
    completion_only_loss: bool,
    training_chat_template: str | None,
) -> str:
    """sha256 hex over everything that decides what TRL's _prepare_dataset makes of `dataset`."""
    examples = json.dumps(dataset.to_list(), sort_keys=True, ensure_ascii=False, default=str)
    settings = {name: getattr(args, name, None) for name in SETTINGS}
    settings["seed"] = args.seed if args.shuffle_dataset else None  # shuffling is part of preparation
    described = {
        "key_version": KEY_VERSION,
        "examples": hashlib.sha256(examples.encode()).hexdigest(),
        "features": str(dataset.features),
        "tokenizer": tokenizer_identity(tokenizer),
        # TRL's resolved choices: completion-only loss (None in SFTConfig means "by dataset format") and the
        # chat template it swaps in for assistant_only_loss
        "completion_only_loss": completion_only_loss,
        "training_chat_template": training_chat_template,
        "packing": packing,  # for evaluation: eval_packing when set
        "settings": settings,
        "versions": {name: version(name) for name in PACKAGES},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def load(folder: Path) -> Any | None:
    """The cached dataset in `folder`, or None when there is none (or it cannot be read: then it is prepared anew)."""
    if not (folder / "state.json").is_file():
        return None
    from datasets import load_from_disk

    try:
        return load_from_disk(str(folder))
    except Exception as error:  # a damaged entry: preparing again is always correct
        log.warning("Cannot read the preprocessed data in %s (%s); preparing it again", folder, error)
        return None


def store(dataset: Any, folder: Path) -> bool:
    """Save `dataset` as `folder`, atomically; False (with a warning) when the cache cannot be written."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        dataset.save_to_disk(str(partial))
    except OSError as error:  # a read-only or full cache must not stop the run
        log.warning("Cannot store the preprocessed data in %s (%s); training goes on without", folder.parent, error)
        return False
    try:
        partial.rename(folder)
    except OSError:  # another process stored the same entry first
        shutil.rmtree(partial, ignore_errors=True)
    return True


def every_rank_has(found: bool) -> bool:
    """Whether every process of a multi-process launch found the entry (then all skip preparing, else all prepare).

    TRL's preparation waits at barriers (the main process goes first), so one rank skipping it while another
    prepares would hang both: e.g. a node-local FTKIT_CACHE that holds the entry on one node only.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return found
    from accelerate import PartialState

    flag = torch.tensor([int(found)], device=PartialState().device)  # on the GPU under NCCL
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def cached_lengths(tokenizer: Any, examples: list[dict[str, Any]], count: Callable[[], list[int]]) -> list[int]:
    """The length check's token counts of `examples` (count() on a miss), kept in datasets/lengths-<key>.json."""
    described = {
        "key_version": KEY_VERSION,
        "examples": hashlib.sha256(json.dumps(examples, sort_keys=True, ensure_ascii=False).encode()).hexdigest(),
        "tokenizer": tokenizer_identity(tokenizer),
        "versions": {name: version(name) for name in PACKAGES},
    }
    key = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    file = cache_folder() / f"lengths-{key}.json"
    try:
        lengths = json.loads(file.read_text())
        if isinstance(lengths, list) and len(lengths) == len(examples):
            log.debug("Token counts of %d training examples (length check) reused from %s", len(lengths), file)
            return lengths
    except (OSError, ValueError):  # no entry yet, or a damaged one: count again
        pass
    lengths = count()
    if is_main_rank():
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            partial = file.with_name(f"{file.name}.{os.getpid()}")
            partial.write_text(json.dumps(lengths))
            partial.replace(file)  # atomic: a reader sees the whole list or none
        except OSError as error:
            log.warning("Cannot store the length check's token counts in %s (%s)", file.parent, error)
    return lengths
