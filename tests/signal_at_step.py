"""Run `ftkit <args>` and have the process signal itself once training reaches a step (tests of resume/interrupts).

    python tests/signal_at_step.py <step> <SIGKILL|SIGTERM|SIGINT> train <overrides...>

Sending the signal from inside the training loop makes the moment exact: a test that signalled from outside
would race the tiny model, which trains a step in milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from transformers import TrainerCallback

import ftkit.training.run
from ftkit.cli import main


class SignalAtStep(TrainerCallback):
    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def build_trainer_that_signals(*args: Any, **kwargs: Any) -> Any:
    trainer = build_trainer(*args, **kwargs)
    trainer.add_callback(SignalAtStep(STEP, SIGNAL))
    return trainer


if __name__ == "__main__":
    STEP, SIGNAL = int(sys.argv[1]), getattr(signal, sys.argv[2])  # read before ftkit hands sys.argv to Hydra
    build_trainer = ftkit.training.run.build_trainer
    ftkit.training.run.build_trainer = build_trainer_that_signals
    main(sys.argv[3:])
