"""CPU threads for training: how many per process, and what an idle OpenMP thread does.

PyTorch runs each CPU operator on an OpenMP thread pool; every operator ends at a barrier where the threads that
finished wait for the slowest. OpenMP's default is to spin there. When another process takes one of the cores, the
thread on it is descheduled, and the threads that wait spin against that process for the core: measured on the
2-core machine this was built on, a 1.6 s training step took 18-31 s beside one single-threaded command.
With OMP_WAIT_POLICY=PASSIVE a waiting thread sleeps at once, but on an idle machine that doubled the step time
(benchmarks/cpu_threads.py, docs/performance.md), so OpenMP's default stays the default and passive is an override
(launcher.omp_wait_policy).
OpenMP reads the policy once, when torch loads, so configure() runs before anything imports torch, and the ranks a
launcher starts inherit it.

What keeps both speeds is fewer threads while a core is taken: with launcher.cpu_threads unset, the training loop
measures every few seconds how many cores other processes kept busy (OtherLoad: the machine's busy CPU time from
/proc/stat less this process's own, niced processes left out) and runs on the cores they leave free (threads_for,
at least one, at most the count chosen at the start; ftkit.training.callbacks.FollowCpuLoad). A thread then never
waits at a barrier for a thread that lost its core. launcher.cpu_threads=<n> fixes the count instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
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


# "1" when the user fixed the thread count (launcher.cpu_threads, or OMP_NUM_THREADS exported before ftkit started):
# written by the first configure, inherited by the ranks, whose OMP_NUM_THREADS configure itself has set.
USER_FIXED = "FTKIT_CPU_THREADS_FIXED"


def configure(cfg: Any) -> dict[str, Any]:
    """Set OMP_WAIT_POLICY and OMP_NUM_THREADS for this process and the ones it starts; what was chosen."""
    if USER_FIXED not in os.environ:
        given = os.environ.get("OMP_NUM_THREADS", "")
        fixed = cfg.launcher.cpu_threads is not None or (given.isdigit() and int(given) > 0)
        os.environ[USER_FIXED] = "1" if fixed else "0"
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


def follows_load(cfg: Any) -> bool:
    """Whether the thread count follows the load while training: a CPU run whose count the user did not fix
    (launcher.cpu_threads, an exported OMP_NUM_THREADS), on a machine whose CPU times this process can read (/proc)."""
    import torch

    fixed = cfg.launcher.cpu_threads is not None or os.environ.get(USER_FIXED) == "1"
    return not fixed and not torch.cuda.is_available() and OtherLoad.readable()


def threads_for(others_busy: float, most: int, cores: int) -> int:
    """The threads to run: the cores other processes leave free (a core counts as taken from half its time on), at
    least 1 and at most `most`, the count chosen at the start."""
    free = int(cores - others_busy + 0.5)
    return max(1, min(most, free))


class OtherLoad:
    """Cores kept busy by other processes between two readings: the busy time of every CPU (/proc/stat: user,
    system, irq, softirq, steal) less this process's own CPU time (all its threads), over the wall time between.

    Niced processes' time (/proc/stat's nice column) is left out while this process is not niced itself: the
    scheduler gives them a core only when this process leaves it idle, so they take nothing from its threads, and
    counting them would hand them the core they only borrowed."""

    STAT = "/proc/stat"

    def __init__(self) -> None:
        self.last = self._reading()

    @classmethod
    def readable(cls) -> bool:
        return os.path.isfile(cls.STAT)

    @classmethod
    def _reading(cls) -> tuple[float, float, float]:
        with open(cls.STAT) as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        ticks = os.sysconf("SC_CLK_TCK")
        own = os.times()
        niced = os.getpriority(os.PRIO_PROCESS, 0) > 0  # then this process's own time is in the nice column
        busy = user + system + irq + softirq + steal + (nice if niced else 0)
        return time.monotonic(), busy / ticks, own.user + own.system

    def cores_busy(self) -> float:
        """Other processes' busy cores since the last call (or since construction)."""
        now = self._reading()
        (then, busy_then, own_then), self.last = self.last, now
        elapsed = now[0] - then
        if elapsed <= 0:
            return 0.0
        return max(0.0, (now[1] - busy_then) - (now[2] - own_then)) / elapsed
