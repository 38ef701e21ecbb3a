"""ftkit's cache folder ($FTKIT_CACHE, default ~/.cache/ftkit): GGUF conversions and tokenized datasets.

Light on purpose (no torch): the config checks ask whether it is usable before anything loads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ftkit.errors import FtkitError


def cache_dir() -> Path:
    return Path(os.environ.get("FTKIT_CACHE", Path.home() / ".cache" / "ftkit")).expanduser()


def check_cache_dir() -> None:
    """A cache that is a file, or cannot be created or written, would fail a run midway (after the model loaded)."""
    folder = cache_dir()
    fix = "point FTKIT_CACHE at a folder you can write (export FTKIT_CACHE=$HOME/.cache/ftkit), or unset it"
    where = "environment variable FTKIT_CACHE" if "FTKIT_CACHE" in os.environ else str(folder)
    if folder.exists() and not folder.is_dir():
        raise FtkitError(f"ftkit's cache {folder} is a file, not a folder", fix, where=where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FtkitError(
            f"cannot write into ftkit's cache {folder} ({error.strerror or error})", fix, where=where
        ) from None


def file_sha256(path: Path) -> str:
    """A file's sha256, read in 1 MiB blocks: a GGUF conversion's cache key, a data file's identity in a split."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
