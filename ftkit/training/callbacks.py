"""Trainer callbacks: log lines into train.log, SIGINT / SIGTERM turned into save-and-stop, CPU threads that follow
the machine's load.

LogToFile copies Trainer's log dicts (loss, learning rate, eval loss) into ftkit's log, hence train.log.

StopOnSignal: on SIGINT / SIGTERM finish the step, save a checkpoint, stop, and say how to resume. A cluster's
scheduler sends SIGTERM before it kills a job (SLURM at its time limit or on preemption), and Ctrl-C sends SIGINT;
either would otherwise lose everything since the last checkpoint. The same signal a second time is not caught: it
stops the process at once, as the user asked twice.

FollowCpuLoad: every few seconds of CPU training, as many threads as other processes leave cores free
(ftkit.launch.cpu_threads explains why, and what was measured).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

log = logging.getLogger("ftkit")

CAUGHT = (signal.SIGINT, signal.SIGTERM)


class LogToFile(TrainerCallback):
    """Copy Trainer's log lines (loss, learning rate, eval loss) into train.log."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            log.info(
                "step %d: %s",
                state.global_step,
                {k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()},
            )


class FollowCpuLoad(TrainerCallback):
    """At the end of a step, at most every `every` seconds: torch's thread count becomes cpu_threads.threads_for the
    cores other processes kept busy since the last look; each change is logged."""

    def __init__(self, most: int, every: float = 2.0) -> None:
        from ftkit.launch.cpu_threads import OtherLoad, available_cores

        self.most, self.every, self.cores = most, every, available_cores()
        self.load = OtherLoad()
        self.looked = self.load.last[0]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import time

        from ftkit.launch.cpu_threads import threads_for

        if time.monotonic() - self.looked < self.every:
            return
        others = self.load.cores_busy()
        self.looked = self.load.last[0]
        wanted, running = threads_for(others, self.most, self.cores), torch.get_num_threads()
        if wanted != running:
            torch.set_num_threads(wanted)
            log.info(
                "CPU threads %d -> %d at step %d: other processes kept %.1f of %d cores busy (launcher.cpu_threads=%d "
                "fixes the count)",
                running,
                wanted,
                state.global_step,
                others,
                self.cores,
                self.most,
            )


class StopOnSignal(TrainerCallback):
    """Turns a signal into Trainer's own save-and-stop; ftkit.training.run then exits 128 + the signal's number."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False  # set once every rank has agreed to stop at this step
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # Python only delivers signals there
            self._previous = {signum: signal.signal(signum, self._caught) for signum in CAUGHT}

    def _caught(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a different second signal, e.g. torchrun passing on the SIGTERM it got
            return
        self.signum = signum
        # The same signal again (Ctrl-C twice) takes its default action: stop now.
        signal.signal(signum, self._previous.pop(signum))
        log.warning("%s: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._stop_requested(args):
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The step's checkpoint is written; skip the end-of-epoch evaluation and a second save of the same step.
        if self.stopping:
            control.should_evaluate = False
            control.should_save = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._restore()

    def _stop_requested(self, args: Any) -> bool:
        """Every rank stops at the same step (a rank that stopped alone would leave the others waiting)."""
        requested = self.signum is not None
        if args.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([int(requested)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and self.signum is None:
                self.signum = signal.SIGTERM  # another rank was signalled; exit as it will
            requested = bool(flag.item())
        return requested

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def resume_command(checkpoint: Path) -> str:
    """The command that continues from checkpoint, with a path as short as the current directory allows."""
    try:
        shown = checkpoint.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = checkpoint.resolve()
    return f"ftkit train resume={shown}"
