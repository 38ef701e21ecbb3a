"""The generators in tools/datasets reproduce the bundled data sets of recipes/data byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BUNDLED = REPO / "recipes" / "data"
GENERATORS = sorted(path for path in (REPO / "tools" / "datasets").glob("*.py") if not path.name.startswith("_"))


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda path: path.stem)
def test_generator_writes_the_bundled_files(generator: Path, tmp_path: Path):
    bundled = BUNDLED / generator.stem
    result = subprocess.run(
        [sys.executable, str(generator), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(path.name for path in bundled.iterdir() if path.is_file() and path.name != "README.md")
    differing = [name for name in written if (tmp_path / name).read_bytes() != (bundled / name).read_bytes()]
    assert differing == [], f"not what recipes/data/{generator.stem}/ holds: {differing}"


def test_recipes_data_holds_data_only():
    assert GENERATORS, "no generator found in tools/datasets"
    assert sorted(str(path.relative_to(REPO)) for path in BUNDLED.rglob("*.py")) == []
