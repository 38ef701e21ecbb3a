"""`ftkit serve`: parse the flags, check the port, load the runs, then serve until interrupted."""

from __future__ import annotations

import logging
import os
import socket

from ftkit.errors import FtkitError

log = logging.getLogger("ftkit")


def main(args: list[str]) -> None:
    """Parse the flags, check the port is free, load the runs, then serve until interrupted."""
    from ftkit.serve.options import is_loopback, parse

    opts = parse(args)  # refuses a non-loopback host without a key unless --allow-unauthenticated
    check_port(opts.host, opts.port)
    if opts.api_key is None and not is_loopback(opts.host):
        log.warning(
            "serving on %s without an API key (--allow-unauthenticated): anyone who can reach it can use it", opts.host
        )

    if opts.threads is not None:
        # Before torch loads, so every thread's OpenMP pool gets it (the model runs in worker threads). On a CPU
        # shared with other jobs, more threads than free cores spin against each other: one thread was 20x faster
        # than two on the 2-core machine the benchmark ran on while other jobs used it.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(opts.threads)
        import torch

        torch.set_num_threads(opts.threads)

    import uvicorn

    from ftkit.serve.app import create_app
    from ftkit.serve.variants import load

    served = load(opts.runs)
    app = create_app(served, opts)
    log.info(
        "ftkit serve on http://%s:%d (docs at /docs): %s; batching up to %d requests / %g ms; requests time out "
        "after %g s",
        opts.host,
        opts.port,
        ", ".join(served.variants),
        opts.max_batch_size,
        opts.max_wait_ms,
        opts.request_timeout_s,
    )
    uvicorn.run(app, host=opts.host, port=opts.port, log_level=opts.log_level, access_log=opts.log_level == "debug")


def check_port(host: str, port: int) -> None:
    """Refuse a port in use (or an address not on this machine) before minutes of model loading, not after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise FtkitError(
                f"cannot listen on {host}:{port} ({error.strerror or error})",
                "pick a free port with --port, or an address of this machine with --host (127.0.0.1 by default)",
                where="--host/--port",
            ) from None
