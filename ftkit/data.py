"""Reading data files into records, with errors that name the file and line. Shared by every recipe."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError, closest

BUNDLED = "bundled:"


def resolve_path(spec: str, key: str) -> Path:
    """A data path from the config: a file path, or bundled:<recipe>/<file> for data shipped with ftkit."""
    if spec.startswith(BUNDLED):
        path = Path(str(resources.files("ftkit.recipes").joinpath("data", spec[len(BUNDLED) :])))
        if not path.is_file():
            shipped = sorted(f"{BUNDLED}{p.parent.name}/{p.name}" for p in path.parents[1].glob("*/*") if p.is_file())
            raise FtkitError(
                f"no bundled data file {spec!r}",
                f"use one that ships with ftkit ({', '.join(shipped)}) or a path to your own file",
                where=key,
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FtkitError(
            f"data file {spec!r} does not exist" + (" (it is a directory)" if path.is_dir() else ""),
            f"give {key} the path of a .jsonl or .csv file (relative paths start from {Path.cwd()})",
            where=key,
        )
    return path


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs from a JSONL or CSV file, chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise FtkitError(
            f"cannot tell the format of {path.name!r} from its suffix",
            "use a .jsonl file (one JSON object per line) or a .csv file with a header row",
            where=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise FtkitError(
            f"the file is not valid UTF-8 (byte 0x{error.object[error.start]:02x})",
            "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 in > out",
            where=f"{path}:{line}",
        ) from None
    records = _read_csv(path, text) if suffix == ".csv" else _read_jsonl(path, text)
    if not records:
        raise FtkitError("the file holds no records", "point to a file with at least one record", where=str(path))
    return records


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FtkitError(
                f"malformed JSON ({error.msg} at column {error.colno})",
                'make every line one complete JSON object, e.g. {"text": "...", "label": "..."}',
                where=f"{path}:{number}",
            ) from None
        if not isinstance(record, dict):
            raise FtkitError(
                f"the line holds a JSON {type(record).__name__}, not an object",
                "make every line one JSON object with named fields",
                where=f"{path}:{number}",
            )
        records.append((number, record))
    return records


def _read_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    records = []
    for row in reader:
        # The reader's line_num counts physical lines, so multi-line quoted fields still point to the right place.
        records.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
    return records


def require_text(record: dict[str, Any], field: str, where: str) -> str:
    """The non-empty string in record[field], or an error naming the field and the fields the record has."""
    if field not in record:
        raise FtkitError(
            f"the record has no {field!r} field (it has: {', '.join(map(repr, record)) or 'none'})",
            f"add the field, or name the right one with recipe.data.*_field; {closest(field, list(record))}",
            where=where,
        )
    value = record[field]
    if not isinstance(value, str) or not value.strip():
        raise FtkitError(
            f"field {field!r} must be non-empty text, got {value!r}",
            "fix or drop the record",
            where=where,
        )
    return value
