"""launcher=slurm: the rendered sbatch script, submission errors, and a real job on a single-node SLURM.

The real test starts SLURM on this machine with tests/slurm/start_slurm.sh (installs Debian's slurm-wlm and munge
once, as root) and trains the tiny model with DDP on two CPU ranks inside a batch job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftkit.config.compose import compose
from ftkit.launch.accelerate import accelerate_command
from ftkit.launch.slurm import render_sbatch
from tests.conftest import tiny_overrides

# A Hydra-quoted value with a quote, a variable, a command substitution and a `;`: it must reach the ranks as is.
TRICKY = """recipe.system_prompt="It's $HOME; `date` & $(id)" """.strip()
RANK_LINE = re.compile(r"rank (\d) of (\d) \((\w+)\): trained (\d+) steps; trainable weights sha256 (\w+)")


def script_lines(text: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix).strip() for line in text.splitlines() if line.startswith(prefix)]


def fake_bin(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return folder


def test_sbatch_options_follow_the_config(tmp_path):
    overrides = [
        "launcher=slurm",
        "launcher.nodes=2",
        "launcher.gpus_per_node=8",
        "launcher.num_processes=8",
        "launcher.cpus_per_task=64",
        "launcher.mem=500G",
        "launcher.time=02:30:00",
        "launcher.partition=gpu",
        "launcher.account=proj42",
        "launcher.job_name=tickets",
        'launcher.sbatch_extra=["--qos=high", "#SBATCH --exclusive"]',
        'launcher.env_setup=["module load cuda/12.4", "source /opt/venv/bin/activate"]',
    ]
    text = render_sbatch(compose(overrides), tmp_path / "run", overrides)
    assert text.startswith("#!/bin/bash\n")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert script_lines(text, "#SBATCH") == [
        "--job-name=tickets",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--time=02:30:00",
        f"--output={tmp_path}/run/slurm-%j.out",
        f"--error={tmp_path}/run/slurm-%j.out",
        f"--chdir={Path.cwd()}",
        "--export=ALL",
        "--cpus-per-task=64",
        "--gpus-per-node=8",
        "--mem=500G",
        "--partition=gpu",
        "--account=proj42",
        "--qos=high",
        "--exclusive",
    ]
    assert "\nmodule load cuda/12.4\nsource /opt/venv/bin/activate\n" in text
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' in text
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    assert srun.startswith("srun --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=64 bash -c 'exec ")
    for flag in ("--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port"):
        assert srun.count(flag) == 1
    assert "--num_processes 16 " in srun  # accelerate takes the world size: 2 nodes x 8

    # Defaults: no GPU, partition, account or memory request; a set port is written as is.
    overrides = ["launcher=slurm", "launcher.main_process_port=29555"]
    text = render_sbatch(compose(overrides), tmp_path / "run", overrides)
    assert script_lines(text, "#SBATCH")[8:] == []
    assert "\nMASTER_PORT=29555\n" in text
    assert "--cpus-per-task" not in text


def test_rendered_script_runs_one_launcher_per_node_with_the_same_overrides(tmp_path):
    """Run the script with fake srun/scontrol, then expand the launch line as node 1 of 2 would."""
    run_dir = tmp_path / "run dir $HOME"
    overrides = [
        "launcher=slurm",
        "launcher.nodes=2",
        "launcher.num_processes=2",
        "launcher.cpus_per_task=2",
        'launcher.env_setup=["export SETUP_RAN=yes"]',
        "model.path=/models/with space",
        TRICKY,
    ]
    cfg = compose(overrides)
    assert cfg.recipe.system_prompt == "It's $HOME; `date` & $(id)"
    script = tmp_path / "launch.sbatch"
    script.write_text(render_sbatch(cfg, run_dir, overrides))
    fakes = fake_bin(
        tmp_path / "bin", "scontrol", 'echo "scontrol $*" >"$FAKE_OUT/scontrol"; echo node-a; sleep 0.2; echo node-b'
    )
    fake_bin(fakes, "srun", 'printf "%s\\0" "$@" >"$FAKE_OUT/argv"; env >"$FAKE_OUT/env"')
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "FAKE_OUT": str(tmp_path)}
    env.update(SLURM_JOB_ID="7", SLURM_JOB_NODELIST="node-[a-b]")
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "rendezvous node-a:" in result.stdout and f"run directory {run_dir}" in result.stdout

    assert (tmp_path / "scontrol").read_text().strip() == "scontrol show hostnames node-[a-b]"
    srun_env = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line)
    assert srun_env["MASTER_ADDR"] == "node-a" and 1024 <= int(srun_env["MASTER_PORT"]) < 65536
    assert srun_env["SETUP_RAN"] == "yes" and srun_env["OMP_NUM_THREADS"] == "1"
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv[:-1] == ["--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=2", "bash", "-c"]
    assert argv[-1].startswith("exec ")

    # What node 1's task runs: its own SLURM variables expanded, every override word for word.
    node = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "MASTER_ADDR": "node-a", "MASTER_PORT": "29500"}
    expand = "set -- " + argv[-1].removeprefix("exec ") + '; printf "%s\\0" "$@"'
    words = subprocess.run(["bash", "-c", expand], env={**os.environ, **node}, capture_output=True, text=True)
    assert words.returncode == 0, words.stderr
    machine = {"num_machines": "2", "machine_rank": "1", "main_process_ip": "node-a", "main_process_port": "29500"}
    expected = accelerate_command(cfg, run_dir, overrides, machine=machine)
    assert words.stdout.split("\0")[:-1] == expected
    assert expected[-3:] == ["model.path=/models/with space", TRICKY, f"hydra.run.dir={run_dir}"]
    assert expected[:3] == [sys.executable, "-m", "accelerate.commands.launch"]


def test_deepspeed_backend_renders_its_config_into_the_run_dir(tmp_path):
    overrides = ["launcher=slurm", "launcher.backend=deepspeed_zero2", "launcher.num_processes=2"]
    cfg = compose(overrides)
    dry = render_sbatch(cfg, tmp_path / "run", overrides, write_files=False)
    assert not (tmp_path / "run").exists()
    text = render_sbatch(cfg, tmp_path / "run", overrides)
    assert text == dry
    assert f"--deepspeed_config_file {tmp_path}/run/deepspeed.json" in text and "/deepspeed_zero2.yaml " in text
    assert (tmp_path / "run" / "deepspeed.json").is_file()


def without_sbatch_path() -> str:
    """A PATH with the venv's tools (ftkit) and no sbatch."""
    return str(Path(sys.executable).parent)


def test_submit_false_only_writes_the_script(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model, run_dir, "launcher=slurm", "launcher.submit=false")
    result = run_ftkit("train", *overrides, env={"PATH": without_sbatch_path()})
    assert result.returncode == 0, result.stderr[-3000:]
    script = run_dir / "launch.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert f"sbatch {script}" in (run_dir / "train.log").read_text()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "adapter").exists()


def test_missing_sbatch_is_a_usage_error(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftkit(
        "train", *tiny_overrides(tiny_model, run_dir, "launcher=slurm"), env={"PATH": without_sbatch_path()}
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "`sbatch`, which is not on PATH" in result.stderr and "launcher.submit=false" in result.stderr
    assert (run_dir / "launch.sbatch").is_file()


@pytest.mark.parametrize(
    ("body", "returncode", "expected"),
    [
        (
            'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1',
            2,
            "sbatch refused",
        ),
        ('echo "42;cluster"', 0, "tail -f {run_dir}/slurm-42.out"),
    ],
    ids=["refused", "submitted"],
)
def test_sbatch_answer(run_ftkit, tiny_model, tmp_path, body, returncode, expected):
    run_dir = tmp_path / "run"
    fakes = fake_bin(tmp_path / "bin", "sbatch", f'echo "$*" >"{tmp_path}/sbatch-args"; {body}')
    overrides = tiny_overrides(tiny_model, run_dir, "launcher=slurm", "launcher.partition=nope")
    result = run_ftkit("train", *overrides, env={"PATH": f"{fakes}:{without_sbatch_path()}"})
    assert result.returncode == returncode, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert expected.format(run_dir=run_dir) in result.stdout + result.stderr
    assert (tmp_path / "sbatch-args").read_text().strip() == f"--parsable {run_dir / 'launch.sbatch'}"
    if returncode:
        assert "Invalid partition name specified" in result.stderr and "launcher.partition" in result.stderr
    else:
        assert "squeue -j 42" in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------------
# A real SLURM job
# --------------------------------------------------------------------------------------------------------


def wait_for_job(job_id: str, timeout: float) -> dict[str, str]:
    """Poll until the job leaves the queue; its final `scontrol show job` fields.

    A job pending for a reason that no wait can cure (more CPUs than the node has, ...) fails at once.
    """
    deadline, state = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
        state = queued.stdout.strip()
        if not state:
            break
        if state.startswith("PENDING") and state.split()[-1] not in ("None", "Priority", "Resources", "BeginTime"):
            subprocess.run(["scancel", job_id])
            pytest.fail(f"SLURM job {job_id} cannot start: {state} (cancelled)")
        time.sleep(2)
    else:
        subprocess.run(["scancel", job_id])
        pytest.fail(f"SLURM job {job_id} still queued after {timeout:.0f} s: {state} (cancelled)")
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in shown.split() if "=" in field)


def test_slurm_job_trains_two_ddp_ranks_into_one_run_dir(slurm_cluster, run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    cpus = min(2, len(os.sched_getaffinity(0)))
    slurm = ["launcher=slurm", "launcher.num_processes=2", f"launcher.cpus_per_task={cpus}", "launcher.time=00:10:00"]
    started = time.monotonic()
    result = run_ftkit("train", *tiny_overrides(tiny_model, run_dir, *slurm))
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"submitted SLURM job (\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    job = wait_for_job(match[1], timeout=300)
    output = run_dir / f"slurm-{match[1]}.out"
    tail = output.read_text()[-3000:] if output.is_file() else "(no job output)"
    print(f"SLURM job {match[1]}: {job.get('JobState')} in {time.monotonic() - started:.0f} s")
    assert (job.get("JobState"), job.get("ExitCode")) == ("COMPLETED", "0:0"), tail

    ranks = {}
    for log in ("train.log", "train.rank1.log"):
        for found in RANK_LINE.finditer((run_dir / log).read_text()):
            ranks[log] = found.groups()
    assert ranks["train.log"][:3] == ("0", "2", "MULTI_CPU"), tail
    assert ranks["train.rank1.log"][:3] == ("1", "2", "MULTI_CPU"), tail
    assert ranks["train.log"][3:] == ranks["train.rank1.log"][3:], "steps and adapter digests must be equal"
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["global_step"] == 3
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert "name: slurm" in (run_dir / "config.yaml").read_text()
    assert "rendezvous" in output.read_text() and not (tmp_path / "outputs").exists()
