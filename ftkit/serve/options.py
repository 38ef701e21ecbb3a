"""`ftkit serve` flags: parsed with argparse, every bad value turned into one ftkit error paragraph (exit 2).

serve takes flags rather than Hydra overrides: it composes no new config, it replays each run's own
(ftkit.config.compose.run_config), so the prompts, labels and base model are the ones each adapter was trained with.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ftkit.errors import FtkitError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EXAMPLES = """examples:
  ftkit serve --run outputs/tickets/2026-11-22/10-00-00
  ftkit serve --run a=outputs/tickets/2026-11-22/10-00-00:0.9 --run b=outputs/tickets/2026-11-23/09-00-00:0.1
  FTKIT_API_KEY=secret ftkit serve --run outputs/ner/2026-11-22/11-00-00 --host 0.0.0.0 --port 8080
"""


@dataclass
class RunSpec:
    """One served variant: its name (the OpenAI `model`), run directory and traffic weight."""

    name: str | None
    run_dir: Path
    weight: float


@dataclass
class ServeOptions:
    runs: list[RunSpec]
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_tokens_limit: int = 512
    default_max_tokens: int = 128
    max_prompt_tokens: int = 2048
    max_body_bytes: int = 1_000_000
    max_inputs: int = 64
    log_level: str = "info"
    threads: int | None = None


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises FtkitError (one paragraph, exit 2) instead of printing usage and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FtkitError(message, "see `ftkit serve --help` for the flags and examples", where="ftkit serve")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ftkit serve",
        description="Serve one run, or several adapters of one base model, over an OpenAI-compatible HTTP API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="[NAME=]RUN_DIR[:WEIGHT]",
        help="a run directory to serve (repeat for A/B); NAME is its model id, WEIGHT its share of unrouted traffic",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $FTKIT_API_KEY)")
    p.add_argument("--max-batch-size", type=int, default=16, help="requests gathered into one forward pass")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before new ones get 503")
    p.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens a request may ask for")
    p.add_argument(
        "--default-max-tokens", type=int, default=None, help="max_tokens when a request gives none (128, or the limit)"
    )
    p.add_argument("--max-prompt-tokens", type=int, default=2048, help="longest prompt (chat template applied)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body")
    p.add_argument("--max-inputs", type=int, default=64, help="most texts in one classify/extract request")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the model (default: torch's, one per core); 1 on a CPU shared with other jobs",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def parse_run(spec: str) -> RunSpec:
    """NAME=DIR:WEIGHT, each part optional but DIR; a ':' suffix is a weight only when it reads as a number."""
    name, sep, rest = spec.partition("=")
    if not sep or "/" in name:
        name, rest = None, spec
    weight = 1.0
    head, colon, tail = rest.rpartition(":")
    if colon:
        try:
            weight = float(tail)
            rest = head
        except ValueError:
            pass
    if name is not None and not NAME.match(name):
        raise FtkitError(
            f"--run name {name!r} is not a valid model id",
            "use letters, digits, '.', '_' or '-' (up to 64), e.g. --run a=outputs/tickets/<date>/<time>",
            where="--run",
        )
    if not weight >= 0 or weight == float("inf"):
        raise FtkitError(
            f"--run {spec!r} has weight {tail}, which is not a share of traffic",
            "give a weight >= 0 after the last ':', e.g. a=<run dir>:0.3 (0: reachable only by name)",
            where="--run",
        )
    return RunSpec(name, Path(rest).expanduser(), weight)


def _at_least(value: float, low: float, flag: str, example: str) -> None:
    if value < low:
        raise FtkitError(f"{flag} is {value:g}, below its minimum {low:g}", f"use e.g. {flag} {example}", where=flag)


def parse(args: list[str]) -> ServeOptions:
    ns = parser().parse_args(args)
    runs = [parse_run(spec) for spec in ns.run]
    if not any(run.weight > 0 for run in runs):
        raise FtkitError(
            "every --run has weight 0, so a request that names no model has nowhere to go",
            "give at least one run a positive weight, e.g. --run a=<run dir>:1",
            where="--run",
        )
    _at_least(ns.port, 0, "--port", "8000")
    if ns.port > 65535:
        raise FtkitError(f"--port {ns.port} is not a TCP port", "use 1-65535, e.g. --port 8000", where="--port")
    _at_least(ns.max_batch_size, 1, "--max-batch-size", "16 (1 turns batching off)")
    _at_least(ns.max_wait_ms, 0, "--max-wait-ms", "10")
    _at_least(ns.max_queue, 1, "--max-queue", "256")
    _at_least(ns.max_tokens_limit, 1, "--max-tokens-limit", "512")
    if ns.default_max_tokens is None:
        ns.default_max_tokens = min(128, ns.max_tokens_limit)
    _at_least(ns.default_max_tokens, 1, "--default-max-tokens", "128")
    _at_least(ns.max_prompt_tokens, 1, "--max-prompt-tokens", "2048")
    _at_least(ns.max_body_bytes, 1024, "--max-body-bytes", "1000000")
    _at_least(ns.max_inputs, 1, "--max-inputs", "64")
    if ns.threads is not None:
        _at_least(ns.threads, 1, "--threads", "1")
    if ns.default_max_tokens > ns.max_tokens_limit:
        raise FtkitError(
            f"--default-max-tokens {ns.default_max_tokens} is above --max-tokens-limit {ns.max_tokens_limit}",
            "lower the default or raise the limit",
            where="--default-max-tokens",
        )
    api_key = ns.api_key if ns.api_key is not None else os.environ.get("FTKIT_API_KEY") or None
    if api_key is not None and not api_key.strip():
        raise FtkitError("--api-key is empty", "give a non-empty key, or leave --api-key out", where="--api-key")
    return ServeOptions(
        runs=runs,
        host=ns.host,
        port=ns.port,
        api_key=api_key,
        max_batch_size=ns.max_batch_size,
        max_wait_ms=ns.max_wait_ms,
        max_queue=ns.max_queue,
        max_tokens_limit=ns.max_tokens_limit,
        default_max_tokens=ns.default_max_tokens,
        max_prompt_tokens=ns.max_prompt_tokens,
        max_body_bytes=ns.max_body_bytes,
        max_inputs=ns.max_inputs,
        log_level=ns.log_level,
        threads=ns.threads,
    )
