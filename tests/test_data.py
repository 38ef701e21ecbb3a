"""Data files: bundled tickets data, the readers (CSV, JSONL, bundled:, hub: folders) and record checks, and bad
records rejected with file:line through `ftkit train`."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftkit.config.compose import compose
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.tasks.readers import bundled_names, read_hub, read_records, resolve_path
from tests.conftest import REPO
from tests.test_config import assert_user_error


def tickets_recipe(*overrides: str):
    cfg = compose(list(overrides))
    return get_recipe_class("tickets")(cfg.recipe)


def test_bundled_tickets_data():
    recipe = tickets_recipe("recipe.data.max_train_examples=null")
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    assert sum(len(records) for records in splits.values()) >= 600
    for records in splits.values():
        assert set(Counter(r["label"] for r in records)) == set(recipe.labels)
    texts = [r["text"] for records in splits.values() for r in records]
    assert len(texts) == len(set(texts)), "a ticket appears twice"
    assert len(recipe.labels) >= 5


def test_max_train_examples_caps_only_the_train_split():
    recipe = tickets_recipe("recipe.data.max_train_examples=50")
    assert len(recipe.load_split("train")) == 50
    assert len(recipe.load_split("test")) == 120


def test_to_example_is_a_conversational_prompt_completion():
    recipe = tickets_recipe()
    example = recipe.to_example({"text": "hyd hose weeping at HPU-3", "label": "Hydraulic/Pneumatic"})
    assert example["prompt"][0]["role"] == "system"
    assert example["prompt"][-1] == {"role": "user", "content": "hyd hose weeping at HPU-3"}
    assert example["completion"] == [{"role": "assistant", "content": "Hydraulic/Pneumatic"}]


def test_parse_output():
    recipe = tickets_recipe()
    assert recipe.parse_output(" electrical\n") == "Electrical"
    assert recipe.parse_output("Safety/Facilities, because the guard is missing") == "Safety/Facilities"
    assert recipe.parse_output("no idea") is None


def test_csv_with_custom_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('body,category\n"bearing, drive end",Mechanical\nfuse blown,Electrical\n')
    recipe = tickets_recipe(
        f"recipe.data.train={path}", "recipe.data.text_field=body", "recipe.data.label_field=category"
    )
    assert [r["label"] for r in recipe.load_split("train")] == ["Mechanical", "Electrical"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_record_missing_text_field_names_file_and_line(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    write_jsonl(data, [{"text": "fuse blown", "label": "Electrical"}, {"body": "belt slipping", "label": "Mechanical"}])
    result = run_ftkit("train", f"recipe.data.train={data}", "evaluate.base=false")
    assert_user_error(result, f"{data}:2", "no 'text' field", "Fix:")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("adapter"))


def test_label_outside_the_set_names_file_and_line(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    write_jsonl(
        data,
        [
            {"text": "fuse blown", "label": "Electrical"},
            {"text": "ok", "label": "Mechanical"},
            {"text": "belt slipping", "label": "Mechanicl"},
        ],
    )
    result = run_ftkit("train", f"recipe.data.train={data}")
    assert_user_error(result, f"{data}:3", "'Mechanicl' is not one of recipe.labels", "did you mean 'Mechanical'")


def test_malformed_json_and_missing_file(run_ftkit, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a", "label": "Electrical"}\n{"text": "b", \n')
    assert_user_error(run_ftkit("train", f"recipe.data.test={data}"), f"{data}:2", "malformed JSON")
    assert_user_error(run_ftkit("train", "recipe.data.train=nope.jsonl"), "recipe.data.train", "does not exist")


def test_config_holds_bundled_paths():
    cfg = compose([])
    assert OmegaConf.select(cfg, "recipe.data.train") == "bundled:tickets/train.jsonl"


def test_hub_spec_reads_a_folder_of_data_files_through_datasets(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep the test's cache here
    folder = tmp_path / "tickets_dataset"
    folder.mkdir()
    write_jsonl(
        folder / "train.jsonl", [{"text": "fuse blown", "label": "Electrical"}, {"text": "belt", "label": "Mechanical"}]
    )
    write_jsonl(
        folder / "test.jsonl", [{"text": "PLC fault", "label": "Software/Controls"}, {"text": "x", "label": "Pump"}]
    )
    # Without a split the spec reads the split being loaded (train here); with one, that split.
    recipe = tickets_recipe(f"recipe.data.train=hub:{folder}", f"recipe.data.test=hub:{folder}:test")
    train = recipe.load_split("train")
    assert [r["label"] for r in train] == ["Electrical", "Mechanical"]
    assert train[1]["source"] == f"hub:{folder}:train[1]"
    with pytest.raises(FtkitError, match="'Pump' is not one of recipe.labels") as error:
        recipe.load_split("test")
    assert error.value.where == f"hub:{folder}:test[1]"


def test_hub_spec_mistakes(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "only_train"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "fuse blown", "label": "Electrical"}])
    with pytest.raises(FtkitError, match=r"cannot load split 'validation'.*\['train'\]") as error:
        tickets_recipe(f"recipe.data.validation=hub:{folder}").load_split("validation")
    assert error.value.where == "recipe.data.validation"
    with pytest.raises(FtkitError, match="names no dataset"):
        tickets_recipe("recipe.data.train=hub:").load_split("train")
    with pytest.raises(FtkitError, match="no dataset .* on the Hub or on disk"):
        tickets_recipe(f"recipe.data.train=hub:{tmp_path / 'missing'}").load_split("train")


# ---- readers: file-level mistakes refused at file:line, odd-but-valid files read right ----------------------------


def test_a_csv_field_longer_than_the_csv_default_limit_reads_whole(tmp_path):
    import csv

    long_text = "pump P-4 cavitating " * 10_000  # 200,000 characters: over csv's default 131,072
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long_text}",Mechanical\nfuse blown,Electrical\n')
    before = csv.field_size_limit()
    records = read_records(path)
    assert [(line, len(record["text"])) for line, record in records] == [(2, len(long_text)), (3, 10)]
    assert csv.field_size_limit() == before  # the process-wide limit is left as it was


def test_a_long_csv_field_is_then_judged_by_the_length_check(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from ftkit.training.data_checks import check_lengths

    path = tmp_path / "long.csv"
    path.write_text('text,label\nfuse blown,Electrical\n"' + "pump P-4 cavitating " * 8_000 + '",Mechanical\n')
    cfg = compose([f"recipe.data.train={path}"])
    recipe = get_recipe_class("tickets")(cfg.recipe)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(FtkitError, match="1 of 2 training examples is longer than model.max_length") as error:
        check_lengths(recipe, cfg, tokenizer, recipe.load_split("train"), cache=False)
    assert error.value.where == f"{path}:3"


def test_csv_quoted_line_breaks_are_kept_and_rows_located_where_they_start(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('text,label\r\n"belt slipping\r\non conveyor C-3",Mechanical\r\n\r\nfuse blown,Electrical\r\n')
    assert read_records(path) == [
        (2, {"text": "belt slipping\non conveyor C-3", "label": "Mechanical"}),
        (5, {"text": "fuse blown", "label": "Electrical"}),
    ]


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("text,label,text\na,b,c\n", 1, "names the column 'text' twice (columns 1 and 3)"),
        ("text,label\na,b\nc,d,e\n", 3, "the row has 3 fields and the header has 2"),
        ("text,label\na,b\nc\n", 3, "the row has 1 field and the header has 2"),
        ('text,label\na,b\n"c,d\ne,f\n', 3, "unexpected end of data"),
        ('text,label\n"a"b,c\n', 2, "malformed CSV"),
        ("text\tlabel\na\tb\n", 1, "separate its columns with tabs"),
    ],
)
def test_csv_structure_mistakes_are_refused_at_their_line(tmp_path, content, line, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        read_records(path)
    assert error.value.where == f"{path}:{line}"


def test_a_blank_header_name_may_repeat_and_no_row_value_is_lost(tmp_path):
    path = tmp_path / "trailing.csv"
    path.write_text("text,label,,\nfuse blown,Electrical,,\n")
    assert read_records(path) == [(2, {"text": "fuse blown", "label": "Electrical", "": ""})]


def test_jsonl_lines_are_split_at_newlines_only(tmp_path):
    # U+2028, U+2029 and U+0085 are line breaks to str.splitlines, and valid unescaped inside a JSON string
    path = tmp_path / "odd.jsonl"
    path.write_text('{"text": "a\u2028b\u2029c\x85d", "label": "Electrical"}\r\n\r\n{"text": "d", "label": }\r\n')
    with pytest.raises(FtkitError, match="malformed JSON") as error:
        read_records(path)
    assert error.value.where == f"{path}:3"
    path.write_text('\ufeff{"text": "a\u2028b", "label": "Electrical"}\r\n')  # a leading BOM is dropped
    assert read_records(path) == [(1, {"text": "a\u2028b", "label": "Electrical"})]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "a", "label": NaN}', "holds NaN"),
        ('{"text": "a", "label": -Infinity}', "holds -Infinity"),
        ('{"text": "a", "text": "b", "label": "c"}', "has the key 'text' twice"),
        ('{"text": "a", "meta": {"k": 1, "k": 2}}', "has the key 'k' twice"),
        ('\ufeff{"text": "a"}', "byte-order mark"),
    ],
)
def test_json_python_reads_but_json_has_not_is_refused(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "Electrical"}\n' + line + "\n")
    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        read_records(path)
    assert error.value.where == f"{path}:2"


def test_whole_json_documents_get_their_own_fix(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    with pytest.raises(FtkitError, match=r"one JSON array \(2 items\), not JSON Lines") as error:
        read_records(path)
    assert "jq -c '.[]' records.json > records.jsonl" in error.value.fix
    path.write_text('{\n "text": "a"\n}\n{\n "text": "b"\n}\n')
    with pytest.raises(FtkitError, match="holds only '{'.*pretty-printed"):
        read_records(path)


@pytest.mark.parametrize(
    ("data", "name", "problem"),
    [
        (gzip.compress(b'{"text": "a"}\n'), "t.jsonl", "gzip-compressed"),
        (b"PK\x03\x04rest", "t.csv", "a zip archive"),
        ('{"text": "a"}\n'.encode("utf-16"), "t.jsonl", "UTF-16"),
        (b'{"text": "a"}\n{"text": "\x00"}\n', "t.jsonl", "NUL byte"),
        (b"{}", "t.jsonl.gz", "is compressed (.gz)"),
        (b"{}", "t.parquet", "cannot tell the format"),
    ],
)
def test_files_that_are_not_utf8_text_are_refused(tmp_path, data, name, problem):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        read_records(path)
    assert error.value.where.startswith(str(path))


def test_an_unreadable_file_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "locked.jsonl"
    path.write_text('{"text": "a", "label": "Electrical"}\n')
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make the read fail as it does for other users

        def refuse(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(FtkitError, match=r"cannot read the file \(Permission denied\)") as error:
        read_records(path)
    assert error.value.where == str(path) and "chmod" in error.value.fix


def test_a_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(FtkitError, match="is a directory, not a data file") as error:
        resolve_path(str(tmp_path), "recipe.data.train")
    assert error.value.where == "recipe.data.train"


# ---- bundled: the recipes' own data files, and nothing else ----------------------------------------------------------


def test_bundled_names_are_the_recipes_data_files_only():
    names = bundled_names()
    assert "tickets/train.jsonl" in names and "ner/train.conll" in names
    assert all(Path(name).suffix in (".jsonl", ".csv", ".conll", ".json") and name.count("/") == 1 for name in names)
    assert resolve_path("bundled:tickets/train.jsonl", "k") == REPO / "recipes" / "data" / "tickets" / "train.jsonl"


@pytest.mark.parametrize(
    "spec",
    [
        "bundled:",
        "bundled:..",
        "bundled:../..",
        "bundled:../../.git/HEAD",
        "bundled:tickets/../../__init__.py",
        "bundled:tickets/README.md",
        "bundled:tickets",
        "bundled:/etc/passwd",
    ],
)
def test_bundled_refuses_anything_but_a_shipped_data_file(spec):
    with pytest.raises(FtkitError) as error:
        resolve_path(spec, "recipe.data.train")
    message = str(error.value)
    assert f"no bundled data file {spec!r}" in message and "bundled:tickets/train.jsonl" in message
    for outside in (".git", ".venv", "README", "__init__", "pyproject"):
        assert outside not in message.replace(spec, "")


# ---- hub: folders whose files are broken -----------------------------------------------------------------------------


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.mark.parametrize(
    ("name", "data", "where", "problem"),
    [
        ("train.jsonl", b'{"text": "a", "label": "Electrical"}\n{"text": \n', "train.jsonl:2", "malformed JSON"),
        ("train.csv", b"text,label\na,Electrical\nb,Mechanical,x\n", "train.csv:3", "the row has 3 fields"),
        ("train.parquet", b"not parquet", "train.parquet", "the Parquet file cannot be read"),
        ("train.csv", "text,label\n\xe9t\xe9,x\n".encode("latin-1"), "train.csv:2", "not valid UTF-8"),
    ],
)
def test_hub_folder_with_a_broken_file_names_the_file(tmp_path, hub_cache, name, data, where, problem):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / name).write_bytes(data)
    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        read_hub(f"hub:{folder}", "recipe.data.train", "train")
    assert error.value.where == f"{folder}/{where}"


def test_hub_folder_broken_in_another_split_file_names_that_file(tmp_path, hub_cache):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a", "label": "Electrical"}\n')
    (folder / "test.jsonl").write_text('{"text": "b", "label": "Mechanical"}\n["not", "an object"]\n')
    with pytest.raises(FtkitError, match="not an object") as error:
        read_hub(f"hub:{folder}", "recipe.data.train", "train")  # datasets builds every split of the folder
    assert error.value.where == f"{folder}/test.jsonl:2"


def test_hub_folder_error_ftkit_cannot_place_still_names_the_folder(tmp_path, hub_cache):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.arrow").write_bytes(b"not an arrow stream")
    with pytest.raises(FtkitError, match="datasets cannot read") as error:
        read_hub(f"hub:{folder}", "recipe.data.train", "train")
    assert error.value.where == "recipe.data.train" and str(folder) in error.value.fix


# ---- record values: JSON types checked strictly (bool is an int in Python) ---------------------------------------


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        ({"start": True, "end": 7, "type": "Chemical"}, "has start true, which is a boolean"),
        ({"start": 0, "end": False, "type": "Chemical"}, "has end false, which is a boolean"),
        ({"start": 0, "end": 7.0, "type": "Chemical"}, "has end 7.0, which is a number"),
        ({"start": "0", "end": 7, "type": "Chemical"}, 'has start "0", which is a string'),
        ({"start": None, "end": 7, "type": "Chemical"}, "has start null, which is null"),
        ({"start": 0, "end": 7, "type": ""}, "has no type"),
        ([0, 7, "Chemical"], "is a list, not an object"),
    ],
)
def test_ner_span_offsets_must_be_json_integers(span, problem):
    from ftkit.tasks.bio import sentence_from_char_spans

    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        sentence_from_char_spans("Aspirin eased the headache", [span], None, "f.jsonl:4")
    assert error.value.where == "f.jsonl:4"
    tokens, tags, _ = sentence_from_char_spans(
        "Aspirin eased the headache", [{"start": 0, "end": 7, "type": "Chemical"}], None, "f.jsonl:4"
    )
    assert tags[:2] == ["B-Chemical", "O"]


def test_conll_lines_must_keep_the_files_column_count(tmp_path):
    from ftkit.tasks.bio import read_conll

    path = tmp_path / "t.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nAspirin NN B-NP B-Chemical\neased VB B-VP O\n\nNew York B-LOC\n")
    with pytest.raises(FtkitError, match="has 3 columns, and the file's first token line \\(line 3\\) has 4") as error:
        read_conll(path)
    assert error.value.where == f"{path}:6"
    path.write_text("Aspirin\tB-Chemical\r\neased\tO\r\n\r\nNew York\tB-LOC\r\n")  # tabs: a token may hold a space
    assert [s.tokens for s in read_conll(path)] == [["Aspirin", "eased"], ["New York"]]


# ---- prompt templates: the fields they name are checked on each record as it is read -----------------------------


def test_prompt_template_fields_come_from_the_records(tmp_path):
    data = tmp_path / "t.jsonl"
    write_jsonl(data, [{"text": "fuse blown", "label": "Electrical", "site": "Plant 2"}])
    recipe = tickets_recipe(f"recipe.data.train={data}", "recipe.prompt_template='{text} (site: {site})'")
    (record,) = recipe.load_split("train")
    assert recipe.to_example(record)["prompt"][-1]["content"] == "fuse blown (site: Plant 2)"
    assert recipe.serves == ()  # /v1/classify sends only a text, so it cannot fill {site}
    assert recipe.input_record({"text": "x", "site": 3}, "in:1") == {"text": "x", "fields": {"site": 3}}
    with pytest.raises(FtkitError, match=r"uses \{site\}, and only a text was given"):
        recipe.prompt("fuse blown")
    assert tickets_recipe().serves == ("classify",)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            {"text": "fuse blown", "label": "Electrical"},
            "uses {site}, and the record has no 'site' field (it has: 'text', 'label')",
        ),
        ({"text": "fuse blown", "label": "Electrical", "site": True}, "is a boolean (True), not text or a number"),
        ({"text": "fuse blown", "label": "Electrical", "site": None}, "is null (None)"),
        ({"text": "fuse blown", "label": "Electrical", "site": {"a": 1}}, "is an object"),
    ],
)
def test_prompt_template_field_missing_or_not_text_is_refused_at_the_record(tmp_path, record, problem):
    data = tmp_path / "t.jsonl"
    write_jsonl(data, [{"text": "ok", "label": "Mechanical", "site": "Plant 1"}, record])
    recipe = tickets_recipe(f"recipe.data.train={data}", "recipe.prompt_template='{text} (site: {site})'")
    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        recipe.load_split("train")
    assert error.value.where == f"{data}:2"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{text} {", "is not a valid template"),
        ("{text} {0}", "placeholder {0}"),
        ("{text} {}", "placeholder {}"),
        ("{text} {site.name}", "placeholder {site.name}"),
        ("{text!r}", "placeholder {text!r}"),
        ("{text:>40}", "placeholder {text:>40}"),
        ("{text} -> {label}", "uses {label}, the label field"),
        ("{body}", "has no {text} placeholder"),
    ],
)
def test_prompt_template_syntax_is_checked_with_the_config(template, problem):
    from ftkit.config.checks import check

    with pytest.raises(FtkitError, match=re.escape(problem)) as error:
        check(compose([f"recipe.prompt_template='{template}'"]))
    assert error.value.where == "recipe.prompt_template"
