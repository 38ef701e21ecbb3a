"""The ftkit commands: train, eval / predict, export, and what train uses (dry run, resume, sweeps)."""
