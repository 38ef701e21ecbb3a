"""launcher=slurm: render configs/slurm/sbatch.template into <run dir>/launch.sbatch and submit it with sbatch.

The job runs one `accelerate launch` per node (srun --ntasks-per-node=1); each starts launcher.num_processes ranks
of launcher.backend. The rendezvous is the allocation's first node: MASTER_ADDR from SLURM_JOB_NODELIST, and a
port that is free there when the job starts (the batch script runs on that node). Every rank runs `ftkit train`
with the submitting command's overrides (launcher=slurm included) plus hydra.run.dir=<run dir>, so all of them
write into one run directory; they see LOCAL_RANK and train instead of submitting again.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from ftkit.errors import FtkitError
from ftkit.launch.accelerate import accelerate_command, launch_files
from ftkit.launch.ranks import world_size
from ftkit.run_dir import SBATCH_SCRIPT, SLURM_LOG

log = logging.getLogger("ftkit")

# accelerate launch's multi-node flags, as shell variables that each node's srun task expands for itself.
MACHINE = {
    "num_machines": "$SLURM_NNODES",
    "machine_rank": "$SLURM_NODEID",
    "main_process_ip": "$MASTER_ADDR",
    "main_process_port": "$MASTER_PORT",
}
FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def template_path() -> Path:
    return launch_files() / "slurm" / "sbatch.template"


def render_sbatch(cfg: DictConfig, run_dir: Path, overrides: list[str], write_files: bool = True) -> str:
    """The batch script for this run: #SBATCH resources, env setup, rendezvous, and the srun launch line.

    run_dir: absolute, as every node sees it. write_files=False (dry run) names a DeepSpeed config without writing it.
    """
    launcher = cfg.launcher
    # sbatch expands %j (the job id); %% is a %
    log_file = str(run_dir).replace("%", "%%") + "/" + SLURM_LOG.format("%j")
    values = {
        "header": f"Written by `ftkit train launcher=slurm` from ftkit/launch/configs/slurm/sbatch.template for: "
        f"ftkit train {shlex.join(overrides)}".replace("\n", "\\n"),
        "script": shlex.quote(str(run_dir / SBATCH_SCRIPT)),
        "nodes": str(launcher.nodes),
        "procs_per_node": str(launcher.num_processes),
        "world_size": str(world_size(cfg)),
        "job_name": sbatch_value("launcher.job_name", launcher.job_name),
        "time": sbatch_value("launcher.time", launcher.time),
        "log": sbatch_value("hydra.run.dir", log_file),
        "workdir": sbatch_value("the working directory", str(Path.cwd())),
        "sbatch_options": "\n".join(f"#SBATCH {option}" for option in sbatch_options(cfg)),
        "env_setup": "\n".join(launcher.env_setup) or "# (none: launcher.env_setup is empty)",
        "master_port": str(launcher.main_process_port or f'"$({shlex.quote(sys.executable)} -c "{FREE_PORT}")"'),
        "run_dir": shlex.quote(str(run_dir)),
        "srun_options": f"--cpus-per-task={launcher.cpus_per_task} " if launcher.cpus_per_task else "",
        "launch": shlex.quote(node_launch_command(cfg, run_dir, overrides, write_files)),
    }
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template_path().read_text())


def sbatch_options(cfg: DictConfig) -> list[str]:
    """The #SBATCH options that depend on the config: resources when set, then launcher.sbatch_extra as given."""
    launcher = cfg.launcher
    options = {
        "cpus-per-task": launcher.cpus_per_task,
        "gpus-per-node": launcher.gpus_per_node or None,
        "mem": launcher.mem,
        "partition": launcher.partition,
        "account": launcher.account,
    }
    lines = [f"--{key}={sbatch_value(f'launcher.{key}', value)}" for key, value in options.items() if value]
    for extra in launcher.sbatch_extra:
        extra = single_line("launcher.sbatch_extra", str(extra)).strip().removeprefix("#SBATCH").strip()
        lines.append(extra if extra.startswith("-") else f"--{extra}")
    return lines


def node_launch_command(cfg: DictConfig, run_dir: Path, overrides: list[str], write_files: bool = True) -> str:
    """`exec python -m accelerate.commands.launch ... -m ftkit.cli train <overrides> hydra.run.dir=<run_dir>`.

    Every word is shell-quoted except the SLURM variables of MACHINE, which stay "$VAR" so that each node's task
    expands its own (machine_rank = $SLURM_NODEID).
    """
    command = accelerate_command(cfg, run_dir, overrides, machine=MACHINE, write_files=write_files)
    variables = set(MACHINE.values())
    return "exec " + " ".join(f'"{word}"' if word in variables else shlex.quote(word) for word in command)


def sbatch_value(key: str, value: object) -> str:
    """A value for an #SBATCH line: one line, double-quoted when it has spaces."""
    text = single_line(key, str(value))
    if '"' in text:
        raise FtkitError(f"{key}={text!r} has a double quote", f"give {key} without double quotes", where=key)
    return f'"{text}"' if any(char.isspace() for char in text) else text


def single_line(key: str, text: str) -> str:
    if "\n" in text or "\r" in text:
        raise FtkitError(
            f"{key}={text!r} spans lines, and an #SBATCH option must fit on one", f"give {key} on one line", where=key
        )
    return text


def write_and_submit(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> str | None:
    """Write <run_dir>/launch.sbatch; unless launcher.submit is false, submit it. Returns the job id (or None)."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / SBATCH_SCRIPT
    script.write_text(render_sbatch(cfg, run_dir, overrides))
    script.chmod(0o755)
    if not cfg.launcher.submit:
        log.info("wrote %s (launcher.submit=false); submit it with: sbatch %s", script, shlex.quote(str(script)))
        return None
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise FtkitError(
            "launcher=slurm submits the job with `sbatch`, which is not on PATH here (this is not a SLURM login "
            f"node, or SLURM's client tools are not installed); the batch script is written: {script}",
            "run the command on a machine of the cluster that has sbatch, or add launcher.submit=false to only "
            f"write the script and submit it yourself with `sbatch <run dir>/{SBATCH_SCRIPT}`",
            where="launcher",
        )
    try:
        result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as error:
        raise FtkitError(
            f"sbatch did not answer within {error.timeout:.0f} s (slurmctld unreachable?)",
            f"check the cluster with `sinfo`, then submit the written script: sbatch {script}",
            where="launcher",
        ) from None
    if result.returncode != 0:
        said = " ".join((result.stderr or result.stdout).split()) or f"exit status {result.returncode}"
        raise FtkitError(
            f"sbatch refused {script}: {said}",
            "check launcher.partition, launcher.account, launcher.time, launcher.gpus_per_node, launcher.mem and "
            "launcher.sbatch_extra against what the cluster offers (sinfo; sacctmgr show assoc user=$USER), "
            "then run the command again",
            where="launcher",
        )
    job_id = result.stdout.strip().split(";")[0]
    log.info(
        "submitted SLURM job %s (%d node(s) x %d rank(s)); run directory %s\n  follow it: tail -f %s\n  "
        "queue: squeue -j %s   (cancel: scancel %s)",
        job_id,
        cfg.launcher.nodes,
        cfg.launcher.num_processes,
        run_dir,
        shlex.quote(str(run_dir / SLURM_LOG.format(job_id))),
        job_id,
        job_id,
    )
    return job_id
