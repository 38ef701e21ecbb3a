"""Reporting: the run report (metrics.json, report.md, plots) and experiment tracking (W&B, TensorBoard)."""
