"""launch/cpu_threads.py: the OpenMP thread count and wait policy a CPU run gets, chosen before torch loads, and the
overrides; benchmarks/cpu_threads.py measures what the policy does beside a busy process."""

from __future__ import annotations

import logging
import os

import pytest

from ftkit.config.compose import compose
from ftkit.launch import cpu_threads
from tests.conftest import tiny_overrides


@pytest.fixture(autouse=True)
def clean_openmp_environment(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", cpu_threads.USER_FIXED):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("overrides", "environment", "threads", "policy"),
    [
        ([], {}, "cores", None),
        (["launcher=ddp", "launcher.num_processes=2", "launcher.omp_wait_policy=passive"], {}, "half", "PASSIVE"),
        (["launcher.cpu_threads=1", "launcher.omp_wait_policy=active"], {}, "1", "ACTIVE"),
        (["launcher.omp_wait_policy=passive"], {}, "cores", "PASSIVE"),
        ([], {"OMP_NUM_THREADS": "1"}, "1", None),  # the user's own setting is kept
        (["launcher.cpu_threads=2"], {"OMP_NUM_THREADS": "1"}, "2", None),  # ... unless the config says
        (["launcher=slurm"], {}, None, None),  # the nodes' cores are not known here
    ],
)
def test_configure_sets_openmp_for_this_process_and_its_ranks(monkeypatch, overrides, environment, threads, policy):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    cores = cpu_threads.available_cores()
    expected = {"cores": str(cores), "half": str(max(1, cores // 2))}.get(threads, threads)
    chosen = cpu_threads.configure(compose(overrides))
    assert os.environ.get("OMP_NUM_THREADS") == (expected if threads else environment.get("OMP_NUM_THREADS"))
    assert os.environ.get("OMP_WAIT_POLICY") == policy
    assert chosen["threads"] == (int(expected) if threads else None)


def test_the_run_logs_what_was_chosen(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_model,
        run_dir,
        "launcher.cpu_threads=1",
        "launcher.omp_wait_policy=passive",
        "trainer.max_steps=1",
        "evaluate.base=false",
    )
    result = run_ftkit("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "CPU: 1 threads per process (launcher.cpu_threads), OpenMP wait policy passive" in log


def test_step_seconds_reads_the_median_step_interval():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("cpu_bench", Path(__file__).parents[1] / "benchmarks/cpu_threads.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines = [
        f"[2026-12-07 03:00:{second:02d},000][ftkit][INFO] - step {step}: {{'loss': 0.5}}"
        for step, second in [(1, 0), (2, 9), (3, 10), (4, 12), (5, 13), (6, 15), (7, 30)]
    ]
    # after warm-up step 1: intervals 1, 2, 1, 2, 15 -> median 2
    assert bench.step_seconds("\n".join(["noise", *lines]), warmup=1) == 2.0


@pytest.mark.parametrize(
    ("others", "most", "cores", "expected"),
    [(0.0, 2, 2, 2), (0.4, 2, 2, 2), (0.6, 2, 2, 1), (1.0, 2, 2, 1), (2.0, 2, 2, 1), (1.0, 2, 8, 2), (5.2, 8, 8, 3)],
)
def test_threads_are_the_cores_other_processes_leave_free(others, most, cores, expected):
    assert cpu_threads.threads_for(others, most, cores) == expected


def test_other_load_counts_another_process_not_a_niced_one_nor_this_ones_threads():
    import subprocess
    import sys
    import threading
    import time

    def spin() -> None:
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            pass

    load = cpu_threads.OtherLoad()
    spinner = threading.Thread(target=spin)
    spinner.start()
    spinner.join()
    assert load.cores_busy() < 0.5  # this process's own busy thread is not another process
    for nice, counted in ((0, True), (19, False)):  # a niced process yields its core to this one: not counted
        neighbour = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)  # its start-up
            load.cores_busy()
            time.sleep(1.0)
            assert (load.cores_busy() > 0.6) is counted, f"nice {nice}"
        finally:
            neighbour.kill()
            neighbour.wait()


def test_follow_cpu_load_sets_and_logs_the_thread_count(caplog):
    import torch

    from ftkit.training.callbacks import FollowCpuLoad

    class Busy:  # another process keeps one core busy, whatever this one runs
        last = (0.0, 0.0, 0.0)

        def cores_busy(self) -> float:
            return 1.0

    running = torch.get_num_threads()
    torch.set_num_threads(2)
    follow = FollowCpuLoad(most=2, every=0.0)
    follow.load, follow.cores = Busy(), 2
    state = type("State", (), {"global_step": 7})()
    try:
        with caplog.at_level(logging.INFO, logger="ftkit"):
            follow.on_step_end(None, state, None)
        assert torch.get_num_threads() == 1
        assert "CPU threads" in caplog.text and "-> 1 at step 7: other processes kept 1.0 of 2 cores" in caplog.text
    finally:
        torch.set_num_threads(running)


@pytest.mark.parametrize(
    ("overrides", "environment", "follows"),
    [([], {}, True), (["launcher.cpu_threads=2"], {}, False), ([], {"OMP_NUM_THREADS": "2"}, False)],
)
def test_a_thread_count_the_user_fixed_is_not_followed(monkeypatch, overrides, environment, follows):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    cfg = compose(overrides)
    cpu_threads.configure(cfg)
    cpu_threads.configure(cfg)  # a rank configures again, with OMP_NUM_THREADS set by the first: still the user's
    assert cpu_threads.follows_load(cfg) is (follows and cpu_threads.OtherLoad.readable())
