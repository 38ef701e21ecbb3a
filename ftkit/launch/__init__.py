"""Launching: ranks, launcher checks, accelerate / DeepSpeed commands, re-running under them, SLURM."""
