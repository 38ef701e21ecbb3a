"""A non-editable install (a built wheel) carries the config tree and the bundled data."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_wheel_install_composes_and_finds_bundled_data(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", REPO], check=True)
    (wheel,) = (tmp_path / "wheel").glob("ftkit-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True)
    code = (
        "import ftkit, ftkit.conf; from ftkit.config.compose import compose; from ftkit.config.checks import check;"
        "from ftkit.recipes import get_recipe_class;"
        "cfg = compose(['peft.r=4', 'logger=wandb', 'hydra/sweeper=lora_search', 'hydra/launcher=slurm_jobs']);"
        "check(cfg);"
        "recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe);"
        "print(ftkit.conf.__file__); print(len(recipe.load_split('test')), cfg.peft.r)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    conf_file, counts = result.stdout.splitlines()
    assert conf_file.startswith(str(target))
    assert counts == "120 4"
