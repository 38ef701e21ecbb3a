"""Load benchmark for `ftkit serve`: a bounded number of concurrent clients for a bounded time, on loopback.

For each server setting (dynamic batching on: --max-batch-size 16, off: --max-batch-size 1) it starts a real
`ftkit serve` on a free loopback port, waits for /health, warms up, then has --clients concurrent clients send
requests back to back for --seconds per endpoint (classify: one bundled ticket text per request; chat: the same
text as a user message, temperature 0, --max-tokens new tokens). It reports throughput, latency p50/p95/p99 and
the mean batch size the server ran (from its /metrics), and prints markdown rows (appended to --results if given):

  | endpoint | batching | clients | seconds | requests | errors | requests/s | p50 ms | p95 ms | p99 ms | mean batch |

Example (the embedded default run; ~4 min on 2 CPU cores):

  .venv/bin/python benchmarks/serve_load.py --run outputs/tickets/2026-11-28/12-18-46 \\
      --clients 16 --seconds 45 --endpoints classify,chat --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TEXTS = [json.loads(line)["text"] for line in (REPO / "recipes/data/tickets/test.jsonl").read_text().splitlines()]
SETTINGS = {"on": ["--max-batch-size", "16", "--max-wait-ms", "10"], "off": ["--max-batch-size", "1"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: str, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    ftkit = str(Path(sys.executable).with_name("ftkit"))
    command = [ftkit, "serve", "--run", run, "--port", str(port), "--log-level", "warning", *extra]
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the server did not come up in 600 s; see {log}")


def body(endpoint: str, index: int, max_tokens: int) -> tuple[str, dict]:
    text = TEXTS[index % len(TEXTS)]
    if endpoint == "classify":
        return "/v1/classify", {"input": text}
    chat = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0}
    return "/v1/chat/completions", chat


async def drive(url: str, endpoint: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """clients loops sending requests until the deadline; latency of each finished request, and errors."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                path, payload = body(endpoint, next(counter), max_tokens)
                started = time.perf_counter()
                response = await http.post(path, json=payload)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def mean_batch(url: str, kind: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    total = sum(float(v) for v in re.findall(rf'ftkit_batch_size_sum{{kind="{kind}",[^}}]*}} ([\d.e+]+)', text))
    count = sum(float(v) for v in re.findall(rf'ftkit_batch_size_count{{kind="{kind}",[^}}]*}} ([\d.e+]+)', text))
    return total / count if count else 0.0


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a tickets run directory (classification)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--endpoints", default="classify,chat")
    parser.add_argument("--settings", default="on,off", help="batching settings to compare: on, off")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per chat request")
    parser.add_argument("--results", default=None, help="markdown file to append the rows to")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads (model CPU threads)")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.seconds <= 600:
        raise SystemExit("keep the load bounded: 1-256 clients, 1-600 seconds")

    rows = []
    for setting in args.settings.split(","):
        extra = SETTINGS[setting] + (["--threads", str(args.threads)] if args.threads else [])
        # The server's own log, kept out of the working tree and the run directory
        process, url = start_server(args.run, extra, Path(tempfile.gettempdir()) / f"serve_load_{setting}.log")
        try:
            for endpoint in args.endpoints.split(","):
                asyncio.run(drive(url, endpoint, 2, 3, args.max_tokens))  # warm-up, not measured
                result = asyncio.run(drive(url, endpoint, args.clients, args.seconds, args.max_tokens))
                lat = sorted(result["latencies"])
                if not lat:
                    raise SystemExit(f"no request succeeded ({result['errors']} errors)")
                ms = [1000 * percentile(lat, q) for q in (50, 95, 99)]
                row = (
                    f"| {endpoint} | {setting} | {args.clients} | {result['elapsed']:.0f} | {len(lat)} | "
                    f"{result['errors']} | {len(lat) / result['elapsed']:.2f} | {ms[0]:.0f} | {ms[1]:.0f} | "
                    f"{ms[2]:.0f} | {mean_batch(url, endpoint):.1f} |"
                )
                print(row, flush=True)
                rows.append(row)
        finally:
            process.terminate()
            process.wait(timeout=60)
    if args.results:
        with open(args.results, "a") as out:
            out.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
