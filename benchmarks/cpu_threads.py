"""CPU training beside a busy neighbour: seconds per step alone and beside one busy single-threaded process,
with OpenMP's default wait policy (what ftkit did before launcher.omp_wait_policy) and with ftkit's (passive).

Each of the four cases is a real `ftkit train` of the default recipe and model for --steps steps (one log line per
step; no evaluation), in a fresh process, so OpenMP reads its settings as a user's run would. The neighbour is
`python -c "while True: pass"`: one process that keeps one core busy for the whole run. A step's time is the median
interval between consecutive step lines of train.log (the first --warmup steps left out). Prints a markdown table
(appended to --results when given) with the slowdown beside the neighbour for each policy.

  .venv/bin/python benchmarks/cpu_threads.py --steps 16 --results outputs/benchmarks/cpu_threads.md

Run it on a machine that nothing else uses: the neighbour is the only load it should see.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

FTKIT = Path(sys.executable).with_name("ftkit")
STEP_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[ftkit\]\[INFO\] - step (\d+): \{'loss'")
POLICIES = {"OpenMP default (before)": "null", "passive (ftkit's default)": "passive"}


def step_seconds(log: str, warmup: int) -> float:
    """The median time between consecutive training-step log lines, after `warmup` steps."""
    stamps = [
        (int(match[2]), datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"))
        for match in map(STEP_LINE.match, log.splitlines())
        if match
    ]
    stamps = [stamp for step, stamp in sorted(stamps) if step > warmup]
    if len(stamps) < 3:
        raise SystemExit(f"too few step lines in train.log ({len(stamps)}): raise --steps")
    return statistics.median((b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False))


def one_run(policy: str, steps: int, warmup: int, neighbour: bool, work: Path) -> float:
    run_dir = work / f"{policy}-{'busy' if neighbour else 'alone'}"
    command = [
        str(FTKIT),
        "train",
        f"launcher.omp_wait_policy={policy}",
        f"trainer.max_steps={steps}",
        "trainer.logging_steps=1",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
        "evaluate.base=false",
        "evaluate.baselines=[]",
        "evaluate.max_examples=8",
        f"hydra.run.dir={run_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    try:
        started = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"ftkit train failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        print(f"  {run_dir.name}: {time.monotonic() - started:.0f} s in all", file=sys.stderr)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    from ftkit.run_dir import log_file_name

    return step_seconds((run_dir / log_file_name(0)).read_text(), warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="training steps per run (default: 16)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the median (default: 3)")
    parser.add_argument("--results", type=Path, help="markdown file to append the table to")
    args = parser.parse_args()
    if args.steps < args.warmup + 4:
        parser.error(f"--steps must be at least --warmup + 4 = {args.warmup + 4}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="ftkit-cpu-threads-") as work:
        for name, policy in POLICIES.items():
            alone = one_run(policy, args.steps, args.warmup, False, Path(work))
            busy = one_run(policy, args.steps, args.warmup, True, Path(work))
            rows.append(f"| {name} | {alone:.2f} | {busy:.2f} | {busy / alone:.2f}x |")
    cores = len(os.sched_getaffinity(0))
    table = "\n".join(
        [
            f"CPU training step, default recipe and model, {cores} cores, {time.strftime('%Y-%m-%d')}: median "
            f"seconds per step over steps {args.warmup + 1}-{args.steps}",
            "",
            "| OpenMP wait policy | alone | beside one busy process | slowdown |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
    print(table)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as out:
            out.write(table + "\n\n")


if __name__ == "__main__":
    main()
