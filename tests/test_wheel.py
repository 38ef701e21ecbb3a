"""The wheel, installed (not editable) into a fresh virtualenv, is a whole ftkit: every module, the Hydra configs, the
launch files and the bundled data ship, and its `ftkit` command runs from anywhere.

The fresh venv borrows this environment's dependencies (torch is not downloaded again) through a .pth file that
only names this environment's site-packages directory: Python adds such a directory to sys.path without running
the .pth files inside it, so the editable install's finder (__editable__.ftkit-*.pth) never loads there. The test
proves it anyway: every ftkit module must be imported from the fresh venv's site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

# What the wheel is built from, and where each source folder lands inside it (pyproject's package-dir).
SHIPPED = {"ftkit": "ftkit", "conf": "ftkit/conf", "recipes": "ftkit/recipes"}
BUILD_FILES = ("pyproject.toml", "README.md")
NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# Run in the fresh venv: import every ftkit module and say where each came from, and where the data files are.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import ftkit
modules = [info.name for info in pkgutil.walk_packages(ftkit.__path__, "ftkit.", onerror=lambda name: 1 / 0)]
for name in modules:
    importlib.import_module(name)
from ftkit.launch.accelerate import launch_files
from ftkit.launch.slurm import template_path
print(json.dumps({
    "walked": modules,
    "loaded": {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
               if name == "ftkit" or name.startswith("ftkit.")},
    "launch_files": str(launch_files()),
    "sbatch_template": template_path().read_text()[:200],
}))
"""


def test_wheel_installed_in_a_fresh_venv_is_a_whole_ftkit(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and egg-info behind there
    for name in SHIPPED:
        shutil.copytree(REPO / name, source / name, ignore=NOT_SOURCE)
    for name in BUILD_FILES:
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("ftkit-*.whl")

    # Every file of ftkit/, conf/ and recipes/ is in the wheel, under the name the installed package uses.
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{target}/{file.relative_to(source / folder).as_posix()}"
        for folder, target in SHIPPED.items()
        for file in (source / folder).rglob("*")
        if file.is_file()
    }
    assert expected - in_wheel == set(), "not in the wheel (pyproject's packages / package-data miss them)"
    for needed in ("ftkit/serve/server.py", "ftkit/conf/train.yaml", "ftkit/launch/configs/slurm/sbatch.template"):
        assert needed in in_wheel

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Only now the dependencies: with them on the path at install time pip would see the editable ftkit as installed.
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "dependencies_of_the_test.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing there may be importable by accident
    elsewhere.mkdir()
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "FTKIT_DEBUG", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", FTKIT_CACHE=str(tmp_path / "cache"), PATH=f"{venv / 'bin'}:{env['PATH']}")

    def run(*command: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    result = run(python, "-c", IMPORT_ALL)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    # Every module the wheel holds was found and imported, each from the fresh venv's site-packages.
    shipped_modules = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in in_wheel
        if name.endswith(".py")
    }
    assert shipped_modules == {"ftkit", *report["walked"]}
    for name, file in report["loaded"].items():
        assert file is not None and Path(file).is_relative_to(purelib), f"{name} came from {file}, not the fresh venv"
        assert not Path(file).is_relative_to(REPO), f"{name} came from the checkout: {file}"
    assert Path(report["launch_files"]).is_relative_to(purelib)
    assert (Path(report["launch_files"]) / "accelerate" / "ddp.yaml").is_file()
    assert "#!/bin/bash" in report["sbatch_template"]

    # The console script is the fresh venv's (its interpreter is the one checked above), and it runs from anywhere.
    ftkit = venv / "bin" / "ftkit"
    assert ftkit.read_text().splitlines()[0].startswith(f"#!{venv / 'bin' / 'python'}")
    result = run(ftkit, "train", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "name: tickets" in result.stdout and "launcher:" in result.stdout  # the packaged conf/ composed
    result = run(ftkit, "train", "launcher=slurm", "launcher.nodes=2", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nodes: 2" in result.stdout
    result = run(ftkit, "serve", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: ftkit serve" in result.stdout and "--run" in result.stdout
    result = run(ftkit, "export", "--help")
    assert result.returncode == 0 and "usage: ftkit export" in result.stdout, result.stderr[-3000:]
