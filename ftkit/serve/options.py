"""`ftkit serve` flags: parsed with argparse, every bad value turned into one ftkit error paragraph (exit 2).

serve takes flags rather than Hydra overrides: it composes no new config, it replays each run's own
(ftkit.config.compose.run_config), so the prompts, labels and base model are the ones each adapter was trained with.
Every numeric flag must be a finite number in its range (argparse's float() takes 'nan' and 'inf'), and an address
other than loopback needs an API key or an explicit --allow-unauthenticated, all refused here, before any loading.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
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
  ftkit serve --run outputs/ner/2026-11-22/11-00-00 --host 10.0.0.5 --allow-unauthenticated   # a trusted network
"""
KEY_CHARS = re.compile(r"[!-~](?:[ -~]*[!-~])?")  # printable ASCII, no space at either end (the token is stripped)


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
    request_timeout_s: float = 300.0
    allow_unauthenticated: bool = False


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
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535 (default 8000)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY', printable ASCII (default: $FTKIT_API_KEY); needed off loopback",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback --host without an API key (anyone who can reach it can use it)",
    )
    p.add_argument("--max-batch-size", type=int, default=16, help="requests gathered into one forward pass")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill (default 10)")
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=300.0,
        help="a request unanswered after this many seconds gets 504; a stream ends with an error event (default 300)",
    )
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
    """value must be a finite number >= low ('nan' compares false with everything, so test it first)."""
    if not math.isfinite(value):
        raise FtkitError(f"{flag} is {value}, not a finite number", f"use e.g. {flag} {example}", where=flag)
    if value < low:
        raise FtkitError(f"{flag} is {value:g}, below its minimum {low:g}", f"use e.g. {flag} {example}", where=flag)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach host; a name other than localhost counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(flag: str | None) -> str | None:
    """The key from --api-key, else $FTKIT_API_KEY (where empty means none), refused unless printable ASCII."""
    if flag is not None:
        key, where = flag, "--api-key"
        if not key.strip():
            raise FtkitError("--api-key is empty", "give a non-empty key, or leave --api-key out", where=where)
    else:
        key, where = os.environ.get("FTKIT_API_KEY") or None, "FTKIT_API_KEY"
    if key is not None and not KEY_CHARS.fullmatch(key):
        odd = sorted({repr(c) for c in key if not " " <= c <= "~"})
        problem = f"holds {', '.join(odd)}" if odd else "starts or ends with a space"
        raise FtkitError(
            f"the API key {problem}; a Bearer token must be printable ASCII (the openai client cannot send others, "
            "and a space at either end is dropped by the server)",
            "use printable ASCII without spaces at the ends, e.g. one from "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            where=where,
        )
    return key


def parse(args: list[str]) -> ServeOptions:
    ns = parser().parse_args(args)
    runs = [parse_run(spec) for spec in ns.run]
    if not any(run.weight > 0 for run in runs):
        raise FtkitError(
            "every --run has weight 0, so a request that names no model has nowhere to go",
            "give at least one run a positive weight, e.g. --run a=<run dir>:1",
            where="--run",
        )
    if not 1 <= ns.port <= 65535:
        raise FtkitError(f"--port {ns.port} is not a TCP port", "use 1-65535, e.g. --port 8000", where="--port")
    _at_least(ns.max_batch_size, 1, "--max-batch-size", "16 (1 turns batching off)")
    _at_least(ns.max_wait_ms, 0, "--max-wait-ms", "10")
    _at_least(ns.request_timeout_s, 0, "--request-timeout-s", "300")
    if ns.request_timeout_s == 0:
        fix = "use e.g. --request-timeout-s 300"
        raise FtkitError("--request-timeout-s is 0, so every request would time out", fix, where="--request-timeout-s")
    if ns.max_wait_ms / 1000 >= ns.request_timeout_s:
        raise FtkitError(
            f"--max-wait-ms {ns.max_wait_ms:g} is not below --request-timeout-s {ns.request_timeout_s:g} "
            f"({ns.request_timeout_s * 1000:g} ms), so a lone request would time out waiting for its batch to fill",
            "lower --max-wait-ms (10 by default) or raise --request-timeout-s",
            where="--max-wait-ms",
        )
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
    api_key = _api_key(ns.api_key)
    if api_key is None and not ns.allow_unauthenticated and not is_loopback(ns.host):
        raise FtkitError(
            f"--host {ns.host} is not a loopback address and no API key is set, so anyone who can reach the server "
            "could use its models",
            "set a key with --api-key KEY or FTKIT_API_KEY=KEY (clients send 'Authorization: Bearer KEY'), or pass "
            "--allow-unauthenticated if the network is trusted, or bind --host 127.0.0.1",
            where="--host",
        )
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
        request_timeout_s=ns.request_timeout_s,
        allow_unauthenticated=ns.allow_unauthenticated,
    )
