"""What the dataset generators in tools/datasets share: their vocabulary files, command line and JSONL output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def _expand_numbers(node: Any) -> Any:
    """``{num: [lo, hi]}`` or ``{num: [lo, hi, step]}`` -> the whole numbers lo..hi as strings; the rest as is."""
    if isinstance(node, dict):
        if node.keys() == {"num"}:
            lo, hi, *step = node["num"]
            return [str(n) for n in range(lo, hi + 1, *step)]
        return {key: _expand_numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_numbers(item) for item in node]
    return node


def load_vocabulary(script: str) -> dict[str, Any]:
    """The vocabulary of a generator: the YAML file named like the script, next to it."""
    path = Path(script).with_suffix(".yaml")
    return _expand_numbers(yaml.safe_load(path.read_text(encoding="utf-8")))


def parse_args(script: str, description: str, default_seed: int) -> argparse.Namespace:
    """``--out`` (by default the bundled folder recipes/data/<script name>/) and ``--seed``."""
    bundled = REPO / "recipes" / "data" / Path(script).stem
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out", type=Path, default=bundled, help=f"folder to write into (default: {bundled.relative_to(REPO)})"
    )
    parser.add_argument("--seed", type=int, default=default_seed, help="random seed (default: %(default)s)")
    return parser.parse_args()


def write_jsonl_files(out: Path, files: Mapping[str, Sequence[Any]]) -> None:
    """Each ``name: records`` as out/<name>.jsonl, one JSON object a line; UTF-8 and LF on every platform, so the
    same records write the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        path = out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as file:
            file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        print(f"{path}: {len(records)} records")


def quotas(count: int, shares: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Records per kind for a split of count records, each kind its share of count (largest remainder)."""
    exact = {kind: count * share for kind, share in shares}
    result = {kind: int(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: exact[k] - result[k], reverse=True)[: count - sum(result.values())]:
        result[kind] += 1
    return result
