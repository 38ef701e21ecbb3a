"""Reading data into records, with errors that name the file and line (or dataset row). Shared by every recipe.

A data spec in a recipe config is one of
  - a path to a JSONL (one object per line) or CSV (header row) file;
  - bundled:<recipe>/<file>, a sample file shipped with ftkit (recipes/data/<recipe>/<file>);
  - hub:<dataset>[:<split>], a Hugging Face dataset read with datasets.load_dataset: a hub id, or a local folder
    of data files that load_dataset reads (e.g. hub:/data/fin:test). The split defaults to the one being loaded.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError, closest

BUNDLED = "bundled:"
HUB = "hub:"


def read_data(spec: str, key: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs from a data spec; `where` is file:line, or hub:<dataset>:<split>[row] for the hub."""
    if spec.startswith(HUB):
        return read_hub(spec, key, default_split=split)
    path = resolve_path(spec, key)
    return [(f"{path}:{line}", record) for line, record in read_records(path)]


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
    text = read_utf8(path)
    records = _read_csv(path, text) if suffix == ".csv" else _read_jsonl(path, text)
    if not records:
        raise FtkitError("the file holds no records", "point to a file with at least one record", where=str(path))
    return records


def read_utf8(path: Path) -> str:
    """A data file's text (a UTF-8 byte-order mark is dropped); not UTF-8 -> an error naming the line."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise FtkitError(
            f"the file is not valid UTF-8 (byte 0x{error.object[error.start]:02x})",
            "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 in > out",
            where=f"{path}:{line}",
        ) from None


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


def read_hub(spec: str, key: str, default_split: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows of hub:<dataset>[:<split>] through datasets.load_dataset; Hub and split problems become FtkitError."""
    dataset_id, _, split = spec[len(HUB) :].partition(":")
    split = split or default_split
    example = f"{HUB}zeroshot/twitter-financial-news-sentiment:validation"
    if not dataset_id.strip():
        raise FtkitError(
            f"the data spec {spec!r} names no dataset", f"write {HUB}<dataset id>[:<split>], e.g. {example}", where=key
        )
    from datasets import load_dataset  # heavy (pyarrow, pandas): only once data is really read

    source = f"{HUB}{dataset_id}:{split}"
    try:
        dataset = load_dataset(dataset_id, split=split)
    except ConnectionError as error:  # offline (HF_HUB_OFFLINE=1) or no network, and not in the local cache
        raise FtkitError(
            f"cannot load {dataset_id!r}: the Hugging Face Hub is unreachable and the dataset is not in the local "
            f"cache ({str(error).splitlines()[0]})",
            "connect to the Hub (and unset HF_HUB_OFFLINE), or load it once where the Hub is reachable so the cache "
            f"holds it, or save the split as a JSONL/CSV file (Dataset.to_json) and give {key} its path",
            where=key,
        ) from None
    except FileNotFoundError as error:  # no such dataset (or a private one without a token), no such local folder
        raise FtkitError(
            f"no dataset {dataset_id!r} on the Hub or on disk ({str(error).splitlines()[0]})",
            "check the dataset id (owner/name, as on huggingface.co/datasets), log in with `hf auth login` for "
            "private or gated datasets, or give a local folder of data files",
            where=key,
        ) from None
    except ValueError as error:  # an unknown split, or a dataset that needs a config name
        raise FtkitError(
            f"datasets cannot load split {split!r} of {dataset_id!r}: {str(error).splitlines()[0]}",
            f"name an existing split: {HUB}{dataset_id}:<split>; a dataset that needs a config name cannot be read "
            f"through {HUB}, so save the split as a JSONL/CSV file (Dataset.to_json) and give {key} its path",
            where=key,
        ) from None
    except OSError as error:  # other Hub HTTP errors: gated repositories, authentication, server errors
        raise FtkitError(
            f"the Hugging Face Hub refused {dataset_id!r}: {str(error).splitlines()[0]}",
            "accept the dataset's terms on huggingface.co and log in with `hf auth login`, or use a local file",
            where=key,
        ) from None
    rows = [(f"{source}[{index}]", dict(row)) for index, row in enumerate(dataset)]
    if not rows:
        raise FtkitError(f"split {split!r} holds no records", "point to a split with at least one record", where=key)
    return rows


def require_field(record: dict[str, Any], field: str, where: str) -> Any:
    """record[field], or an error naming the field and the fields the record has."""
    if field not in record:
        raise FtkitError(
            f"the record has no {field!r} field (it has: {', '.join(map(repr, record)) or 'none'})",
            f"add the field, or name the right one with recipe.data.*_field; {closest(field, list(record))}",
            where=where,
        )
    return record[field]


def require_text(record: dict[str, Any], field: str, where: str) -> str:
    """The non-empty string in record[field], or an error naming the field and the fields the record has."""
    value = require_field(record, field, where)
    if not isinstance(value, str) or not value.strip():
        raise FtkitError(
            f"field {field!r} must be non-empty text, got {value!r}",
            "fix or drop the record",
            where=where,
        )
    return value
