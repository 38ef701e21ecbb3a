"""CPU threads for training: how many per process, and what an idle OpenMP thread does.

PyTorch runs each CPU operator on an OpenMP thread pool; every operator ends at a barrier where the threads that
finished wait for the slowest. OpenMP's default is to spin there. When another process takes one of the cores, the
thread on it is descheduled, and the threads that wait spin against that process for the core: measured on the
2-core machine this was built on, a 1.6 s training step took 18-31 s beside one single-threaded command.
With OMP_WAIT_POLICY=PASSIVE a waiting thread sleeps at once. benchmarks/cpu_threads.py measured, on 2 cores:
passive cut the slowdown beside a busy process from 3.2x to none, but doubled the step time on an idle machine
(2.00 s vs 0.92 s), so OpenMP's default stays the default and passive is an override (launcher.omp_wait_policy).
OpenMP reads the policy once, when torch loads, so configure() runs before anything imports torch, and the ranks a
launcher starts inherit it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

WAIT_POLICIES = ["passive", "active"]  # or None: OpenMP's own default (libgomp spins a while, then sleeps)


def available_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM or taskset limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def threads_per_process(cfg: Any) -> int | None:
    """launcher.cpu_threads; else OMP_NUM_THREADS where the user set it; else the available cores shared among the
    processes this machine starts. None under SLURM, whose nodes the submitting machine does not know (the job's
    launcher sets one thread per rank)."""
    if cfg.launcher.cpu_threads is not None:
        return int(cfg.launcher.cpu_threads)
    if cfg.launcher.name == "slurm":
        return None
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    processes = int(cfg.launcher.num_processes) if cfg.launcher.name != "local" else 1
    return max(1, available_cores() // processes)


def configure(cfg: Any) -> dict[str, Any]:
    """Set OMP_WAIT_POLICY and OMP_NUM_THREADS for this process and the ones it starts; what was chosen."""
    threads, policy = threads_per_process(cfg), cfg.launcher.omp_wait_policy
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules and cfg.launcher.name == "local":
        # A check needed torch already (bf16 on CPU): the thread count still applies (set_threads), the policy
        # only to processes started from here on.
        log.info("OpenMP was loaded before ftkit chose its settings: OMP_WAIT_POLICY applies to new processes only")
    return {"threads": threads, "wait_policy": policy or "OpenMP's default"}


def set_threads(cfg: Any) -> None:
    """In the process that trains (torch loaded): the thread count, and one log line saying what was chosen."""
    import torch

    threads = threads_per_process(cfg)
    if threads is not None:
        torch.set_num_threads(threads)
    log.info(
        "CPU: %d threads per process (launcher.cpu_threads), OpenMP wait policy %s (launcher.omp_wait_policy)",
        torch.get_num_threads(),
        os.environ.get("OMP_WAIT_POLICY", "unset: OpenMP's default").lower(),
    )
