"""Reading data into records, with errors that name the file and line (or dataset row). Shared by every recipe.

A data spec in a recipe config is one of
  - a path to a JSONL (one object per line) or CSV (header row) file;
  - bundled:<recipe>/<file>, a sample data file shipped with ftkit (recipes/data/<recipe>/<file>; nothing else);
  - hub:<dataset>[:<split>], a Hugging Face dataset read with datasets.load_dataset: a hub id, or a local folder
    of data files that load_dataset reads (e.g. hub:/data/fin:test). The split defaults to the one being loaded.

Refused, each at file:line: a file that cannot be read, is compressed or binary, is not UTF-8 (or holds a stray
byte-order mark or NUL byte); a JSON line that is malformed, not an object, repeats a key or holds NaN/Infinity;
a CSV row that is malformed or has another number of fields than its header, and a header that repeats a column.
Long CSV fields read in full (model.max_length and data_checks.too_long judge their length later).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import ListConfig

from ftkit.errors import FtkitError, closest

BUNDLED = "bundled:"
HUB = "hub:"
RECORD_SUFFIXES = (".jsonl", ".json", ".csv")
# The recipes' data files under recipes/data/<recipe>/ (their READMEs are documentation, not data).
BUNDLED_SUFFIXES = (*RECORD_SUFFIXES, ".conll")
# The csv module's default field limit (128 KiB) would refuse a long document; the largest C long it accepts.
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
# Leading bytes of files that are not text: what they are, and the command that makes a data file of them.
BINARY_MAGIC = {
    b"\x1f\x8b": ("gzip-compressed", "decompress it first: gunzip -k {name}"),
    b"PK\x03\x04": ("a zip archive", "unpack it first: unzip {name}"),
    b"BZh": ("bzip2-compressed", "decompress it first: bunzip2 -k {name}"),
    b"\xfd7zXZ\x00": ("xz-compressed", "decompress it first: unxz -k {name}"),
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", "decompress it first: unzstd {name}"),
    b"PAR1": ("a Parquet file", "read its folder with hub:<folder>, or convert it to JSONL"),
}
COMPRESSED_SUFFIXES = {".gz": "gunzip -k", ".zip": "unzip", ".bz2": "bunzip2 -k", ".xz": "unxz -k", ".zst": "unzstd"}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
JSON_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def read_data(spec: str, key: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs from a data spec; `where` is file:line, or hub:<dataset>:<split>[row] for the hub."""
    if spec.startswith(HUB):
        return read_hub(spec, key, default_split=split)
    path = resolve_path(spec, key)
    return [(f"{path}:{line}", record) for line, record in read_records(path)]


def bundled_dir() -> Path:
    return Path(str(resources.files("ftkit.recipes").joinpath("data")))


def bundled_names() -> list[str]:
    """The bundled: namespace: <recipe>/<file> for each data file shipped under recipes/data/, and nothing else."""
    return sorted(
        f"{path.parent.name}/{path.name}"
        for path in bundled_dir().glob("*/*")
        if path.is_file() and path.suffix.lower() in BUNDLED_SUFFIXES
    )


def check_split_specs(data: Any, example: str) -> None:
    """recipe.data.<train|validation|test>: each unset, a file path, or a non-empty list of them; example names a file
    for the fix."""
    for split in ("train", "validation", "test"):
        spec = data.get(split)
        paths = list(spec) if isinstance(spec, (list, ListConfig)) else [spec]
        if spec is not None and (not paths or not all(isinstance(p, str) and p.strip() for p in paths)):
            raise FtkitError(
                f"recipe.data.{split} must be a file path or a list of file paths, got {spec!r}",
                f"write recipe.data.{split}={example} or recipe.data.{split}=[a.jsonl,b.jsonl]",
                where=f"recipe.data.{split}",
            )


def configured_paths(data: Any, split: str) -> list[Path] | None:
    """The file(s) recipe.data.<split> names (one path or a list of them), resolved; None when it names none."""
    spec = data.get(split)
    if spec is None:
        return None
    many = isinstance(spec, (list, ListConfig))
    items = list(spec) if many else [spec]
    return [
        resolve_path(str(item), key=f"recipe.data.{split}" + (f"[{number}]" if many else ""))
        for number, item in enumerate(items)
    ]


def resolve_path(spec: str, key: str, expected: str = "a .jsonl or .csv file") -> Path:
    """A data path from the config: a file path, or bundled:<recipe>/<file> for data shipped with ftkit."""
    if spec.startswith(BUNDLED):
        name, shipped = spec[len(BUNDLED) :], bundled_names()
        # Matched by name, never joined as a path first: bundled:../.. must not reach the repository around it.
        if name not in shipped:
            near = closest(name, shipped)
            raise FtkitError(
                f"no bundled data file {spec!r}",
                f"use one that ships with ftkit ({', '.join(BUNDLED + n for n in shipped)}) or a path to your own "
                "file" + (f"; {near}" if near.startswith("did you mean") else ""),
                where=key,
            )
        return bundled_dir() / name
    if spec.startswith(HUB):
        raise FtkitError(
            f"this recipe reads data files, not {HUB} datasets ({spec!r})",
            f"save the split as a file (Dataset.to_json(...)) and give {key} {expected}",
            where=key,
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        raise FtkitError(
            f"{spec!r} is a directory, not a data file",
            f"give {key} {expected} inside it (a folder of data files is read as {HUB}<folder> where the recipe "
            "reads Hugging Face datasets)",
            where=key,
        )
    if not path.is_file():
        raise FtkitError(
            f"data file {spec!r} does not exist",
            f"give {key} the path of {expected} (relative paths start from {Path.cwd()})",
            where=key,
        )
    return path


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs from a JSONL or CSV file, chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise FtkitError(
            f"{path.name!r} is compressed ({suffix})",
            f"decompress it first ({COMPRESSED_SUFFIXES[suffix]} {path.name}) and give the .jsonl or .csv file",
            where=str(path),
        )
    if suffix not in RECORD_SUFFIXES:
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
    """A data file's text with \\n line ends (a leading UTF-8 byte-order mark dropped, CRLF and CR read as \\n).

    Not readable, compressed or binary, UTF-16, NUL bytes or not UTF-8 -> an FtkitError naming the file (and line).
    """
    try:
        data = path.read_bytes()
    except OSError as error:  # permissions, a directory, a file removed since it was resolved
        raise FtkitError(
            f"cannot read the file ({error.strerror or error})",
            "check that it is a file this user may read (ls -l; chmod a+r <file>)",
            where=str(path),
        ) from None
    for magic, (kind, fix) in BINARY_MAGIC.items():
        if data.startswith(magic):
            raise FtkitError(f"the file is {kind}, not text", fix.format(name=path.name), where=str(path))
    if data.startswith(UTF16_BOMS):
        raise FtkitError(
            "the file is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8",
            "re-save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 in > out",
            where=f"{path}:1",
        )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise FtkitError(
            "the file holds a NUL byte (binary data, or UTF-16 text without a byte-order mark)",
            "give a UTF-8 text file; convert UTF-16 with iconv -f utf-16 -t utf-8 in > out",
            where=f"{path}:{line}",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise FtkitError(
            f"the file is not valid UTF-8 (byte 0x{error.object[error.start]:02x})",
            "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 in > out",
            where=f"{path}:{line}",
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _RepeatedKey(Exception):
    pass


class _NotJson(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's fields; a key given twice is refused (json keeps the last one silently)."""
    record: dict[str, Any] = {}
    for name, value in pairs:
        if name in record:
            raise _RepeatedKey(name)
        record[name] = value
    return record


def _no_constant(name: str) -> Any:
    raise _NotJson(name)  # NaN, Infinity, -Infinity: Python's json reads them, JSON has no such values


def parse_json_line(line: str, where: str) -> Any:
    """One JSON value, strictly: repeated keys, NaN/Infinity and a stray byte-order mark are FtkitErrors at where."""
    if line.startswith("\ufeff"):
        raise FtkitError(
            "the line starts with a byte-order mark (U+FEFF), as where files with one were joined with cat",
            r"remove it, e.g. sed -i 's/^\xEF\xBB\xBF//' <file>",
            where=where,
        )
    try:
        return json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise FtkitError(
            f"malformed JSON ({error.msg} at column {error.colno})",
            'make every line one complete JSON object, e.g. {"text": "...", "label": "..."}',
            where=where,
        ) from None
    except _RepeatedKey as error:
        raise FtkitError(
            f"the JSON object has the key {error.args[0]!r} twice, and only the last would be read",
            f"keep one {error.args[0]!r} in each record",
            where=where,
        ) from None
    except _NotJson as error:
        raise FtkitError(
            f"the line holds {error.args[0]}, which is not a JSON value (Python's json.dumps writes it for "
            "float('nan') and float('inf'))",
            "write null or a number instead, or drop the record; json.dumps(..., allow_nan=False) catches it where "
            "the file is written",
            where=where,
        ) from None


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    # Split at \n only: str.splitlines also splits at U+2028, \x0c and others that JSON strings may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = parse_json_line(line, where)
        except FtkitError:
            if not records and "\n" in text.strip():  # the first record's line: perhaps a pretty-printed file
                _refuse_whole_json_document(path, text)
            if line.strip() in ("{", "["):
                raise FtkitError(
                    f"the line holds only {line.strip()!r}: the records are written over several lines "
                    "(pretty-printed), and JSON Lines needs one whole object per line",
                    f"write one record per line, e.g. jq -c . {path.name} > {path.stem}.compact.jsonl",
                    where=where,
                ) from None
            raise
        if not isinstance(record, dict):
            if not records and isinstance(record, list) and record and all(isinstance(r, dict) for r in record):
                _refuse_whole_json_document(path, text)
            raise FtkitError(
                f"the line holds a JSON {type(record).__name__}, not an object",
                "make every line one JSON object with named fields",
                where=where,
            )
        records.append((number, record))
    return records


def _refuse_whole_json_document(path: Path, text: str) -> None:
    """A file that is one JSON document (an array of records, or an object over several lines) gets its own fix."""
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, _RepeatedKey, _NotJson):
        return
    if isinstance(document, list):
        raise FtkitError(
            f"the file is one JSON array ({len(document)} items), not JSON Lines (one object per line)",
            f"write one record per line, e.g. jq -c '.[]' {path.name} > {path.stem}.jsonl",
            where=str(path),
        )
    raise FtkitError(
        "the file is one JSON value written over several lines, not JSON Lines (one object per line)",
        f"write each record as one JSON object on its own line, e.g. jq -c . {path.name} > {path.stem}.jsonl",
        where=str(path),
    )


def _read_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        return _csv_rows(path, text)
    finally:
        csv.field_size_limit(previous)  # the limit is process-wide: leave it as it was


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    # strict: a stray quote or a quoted field never closed is an error, not a field that swallows the rest
    reader = csv.reader(io.StringIO(text), strict=True)
    header: list[str] | None = None
    records = []
    next_line = 1  # the physical line the next row starts on (a quoted field may span lines)
    while True:
        line = next_line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise FtkitError(
                f"malformed CSV in the row that starts here ({error})",
                "quote a field that holds commas, quotes or line breaks, double each quote inside it (he said "
                '""hi"") and close every quoted field',
                where=f"{path}:{line}",
            ) from None
        next_line = reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        if header is None:
            header = _checked_header(row, f"{path}:{line}")
            continue
        if len(row) != len(header):
            raise FtkitError(
                f"the row has {_count(len(row), 'field')} and the header has {len(header)} ({', '.join(header)})",
                'quote a field that holds a comma ("fuse blown, again"), or give the row one value per column',
                where=f"{path}:{line}",
            )
        records.append((line, dict(zip(header, row, strict=True))))
    return records


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _checked_header(header: list[str], where: str) -> list[str]:
    """The CSV header: a column named twice is refused (a row's dict would keep only the last one's value)."""
    for index, name in enumerate(header):
        if name.strip() and name in header[:index]:
            raise FtkitError(
                f"the CSV header names the column {name!r} twice (columns {header.index(name) + 1} and {index + 1})",
                f"rename or remove one of the {name!r} columns: each row's {name!r} would be the last one's value",
                where=where,
            )
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        separator = "semicolons" if ";" in header[0] else "tabs"
        raise FtkitError(
            f"the CSV header is one column, {header[0]!r}: the file seems to separate its columns with {separator}",
            "save it with commas between columns (a .csv file is comma-separated)",
            where=where,
        )
    return header


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
    folder = Path(dataset_id).expanduser()
    try:
        dataset = load_dataset(dataset_id, split=split)
    except ConnectionError as error:  # offline (HF_HUB_OFFLINE=1) or no network, and not in the local cache
        raise FtkitError(
            f"cannot load {dataset_id!r}: the Hugging Face Hub is unreachable and the dataset is not in the local "
            f"cache ({_first_line(error)})",
            "connect to the Hub (and unset HF_HUB_OFFLINE), or load it once where the Hub is reachable so the cache "
            f"holds it, or save the split as a JSONL/CSV file (Dataset.to_json) and give {key} its path",
            where=key,
        ) from None
    except FileNotFoundError as error:  # no such dataset (or a private one without a token), no such local folder
        raise FtkitError(
            f"no dataset {dataset_id!r} on the Hub or on disk ({_first_line(error)})",
            "check the dataset id (owner/name, as on huggingface.co/datasets), log in with `hf auth login` for "
            "private or gated datasets, or give a local folder of data files",
            where=key,
        ) from None
    except Exception as error:  # noqa: BLE001 - datasets, pyarrow and pandas raise many types for one bad file
        if folder.is_dir():
            find_broken_file(folder)  # raises at the broken file (and line) where ftkit can find it
        cause = _root_cause(error)
        if isinstance(error, ValueError) and ("split" in str(error).lower() or "config" in str(error).lower()):
            raise FtkitError(
                f"datasets cannot load split {split!r} of {dataset_id!r}: {_first_line(error)}",
                f"name an existing split: {HUB}{dataset_id}:<split>; a dataset that needs a config name cannot be "
                f"read through {HUB}, so save the split as a JSONL/CSV file (Dataset.to_json) and give {key} its path",
                where=key,
            ) from None
        if isinstance(error, OSError) and not folder.is_dir():  # Hub HTTP errors: gated, authentication, server
            raise FtkitError(
                f"the Hugging Face Hub refused {dataset_id!r}: {_first_line(error)}",
                "accept the dataset's terms on huggingface.co and log in with `hf auth login`, or use a local file",
                where=key,
            ) from None
        raise FtkitError(
            f"datasets cannot read {dataset_id!r}: {type(cause).__name__}: {_first_line(cause)}",
            "repair or remove the broken data file"
            + (f" in {folder}" if folder.is_dir() else ", or save the split as a JSONL/CSV file and give its path")
            + "; FTKIT_DEBUG=1 shows datasets' own report",
            where=key,
        ) from error  # chained: FTKIT_DEBUG=1's traceback then shows what datasets said
    rows = [(f"{source}[{index}]", dict(row)) for index, row in enumerate(dataset)]
    if not rows:
        raise FtkitError(f"split {split!r} holds no records", "point to a split with at least one record", where=key)
    return rows


def find_broken_file(folder: Path) -> None:
    """Read the data files of a hub:<folder> the way ftkit reads its own: the first one that fails raises there.

    Only called once datasets.load_dataset has failed on the folder, whose own error names no file.
    """
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    for path in files:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".csv") or (suffix == ".json" and not _one_json_document(path)):
            read_records(path)
        elif suffix == ".parquet":
            import pyarrow
            import pyarrow.parquet

            try:
                pyarrow.parquet.read_metadata(path)
            except (pyarrow.ArrowException, OSError) as error:
                raise FtkitError(
                    f"the Parquet file cannot be read ({_first_line(error)})",
                    f"repair the file, or remove it from {folder}",
                    where=str(path),
                ) from None


def _one_json_document(path: Path) -> bool:
    """Whether a .json file is one JSON document (datasets reads an array of records, as well as JSON Lines)."""
    try:
        json.loads(read_utf8(path))
    except ValueError:
        return False
    return True


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain: datasets wraps the reader's error in 'An error occurred while ...'."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def is_integer(value: Any) -> bool:
    """A JSON integer. bool is an int subclass in Python, so true/false would otherwise pass as 1/0."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


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
