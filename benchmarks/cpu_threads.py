"""CPU training beside a busy neighbour: seconds per step alone and beside one busy single-threaded process (at
normal priority, and niced), for a fixed thread count with OpenMP's default wait policy (ftkit before the threads
followed the load), the same with the passive wait policy, ftkit's default (the thread count follows the load,
ftkit.launch.cpu_threads) and one thread (the best a run can do while another process holds a core).

Each case is a real `ftkit train` of the default recipe and model for --steps steps (one log line per step; no
evaluation), in a fresh process, so OpenMP reads its settings as a user's run would. The neighbour is
`python -c "while True: pass"`, started just before ftkit and kept busy for the whole run, as it is and under
`nice -n 19`. A step's time is the median interval between consecutive step lines of train.log (the first
--warmup steps left out). Prints a markdown table (appended to --results when given) with each time against the
first case's time alone.

  .venv/bin/python benchmarks/cpu_threads.py --steps 24 --results outputs/benchmarks/cpu_threads.md

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
CORES = len(os.sched_getaffinity(0))
# name -> the launcher overrides of that case
CASES = {
    f"{CORES} threads, OpenMP default wait (before)": [f"launcher.cpu_threads={CORES}"],
    f"{CORES} threads, passive wait": [f"launcher.cpu_threads={CORES}", "launcher.omp_wait_policy=passive"],
    "threads follow the load (ftkit's default)": [],
    "1 thread (the floor beside a busy core)": ["launcher.cpu_threads=1"],
}
# neighbour -> the command it runs (None: alone); the niced one is what the issue saw slow a run down
NEIGHBOURS = {
    "alone": None,
    "beside one busy process": [sys.executable, "-c", "while True: pass"],
    "beside one busy niced process": ["nice", "-n", "19", sys.executable, "-c", "while True: pass"],
}


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


def one_run(case: int, launcher: list[str], steps: int, warmup: int, neighbour: list[str] | None, work: Path) -> float:
    run_dir = work / f"case{case}-{len(os.listdir(work))}"
    command = [
        str(FTKIT),
        "train",
        *launcher,
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
    busy = subprocess.Popen(neighbour) if neighbour else None
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
    parser.add_argument("--steps", type=int, default=24, help="training steps per run (default: 24)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median (default: 5)")
    parser.add_argument("--results", type=Path, help="markdown file to append the table to")
    args = parser.parse_args()
    if args.steps < args.warmup + 4:
        parser.error(f"--steps must be at least --warmup + 4 = {args.warmup + 4}")

    rows, before = [], None
    with tempfile.TemporaryDirectory(prefix="ftkit-cpu-threads-") as work:
        for number, (name, launcher) in enumerate(CASES.items()):
            seconds = {
                where: one_run(number, launcher, args.steps, args.warmup, command, Path(work))
                for where, command in NEIGHBOURS.items()
            }
            alone = seconds["alone"]
            before = alone if before is None else before  # the first case: the fixed count, OpenMP's default
            cells = [f"{alone:.2f}"] + [f"{s:.2f} ({s / before:.2f}x)" for w, s in seconds.items() if w != "alone"]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(
        [
            f"CPU training step, default recipe and model, {CORES} cores, {time.strftime('%Y-%m-%d')}: median "
            f"seconds per step over steps {args.warmup + 1}-{args.steps}; in brackets, against the first row alone",
            "",
            "| threads | " + " | ".join(NEIGHBOURS) + " |",
            "| --- |" + " --- |" * len(NEIGHBOURS),
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
