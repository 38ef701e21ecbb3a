"""NER mechanics without a model: alignment + scoring against seqeval, BIO <-> spans, parsing, readers' errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from ftkit.errors import FtkitError
from ftkit.recipes.ner import NerRecipe, NerRecipeConfig
from ftkit.tasks.bio import (
    align_entities,
    entity_metrics,
    read_conll,
    sentence_from_char_spans,
    spans_to_tags,
    tags_to_spans,
)


def make_recipe(**overrides: object) -> NerRecipe:
    cfg = OmegaConf.merge(
        OmegaConf.structured(NerRecipeConfig),
        {"name": "ner", "data": {"train": "unused"}, "entity_types": ["Disease", "Drug"], **overrides},
    )
    NerRecipe.check_config(cfg)
    return NerRecipe(cfg)


def record(text: str, tags: str) -> dict:
    tokens, tag_list = text.split(), tags.split()
    assert len(tokens) == len(tag_list)
    return {"text": text, "tokens": tokens, "tags": tag_list}


def prediction(output: str, recipe: NerRecipe) -> dict:
    entities = recipe.parse_output(output)
    return {"output": output, "parsed": entities is not None, "entities": entities or []}


# (sentence, gold tags, model answer, the predicted tags that answer must become)
CASES = [
    # exact match of a two-token entity at the very end of the sentence (no full stop after it)
    ("history of breast cancer", "O O B-Disease I-Disease", "Disease: breast cancer", "O O B-Disease I-Disease"),
    # partial overlap: the model names part of the gold entity -> one false positive and one false negative
    (
        "known type 2 diabetes mellitus .",
        "O B-Disease I-Disease I-Disease I-Disease O",
        "Disease: diabetes mellitus",
        "O O O B-Disease I-Disease O",
    ),
    # right span, wrong type
    ("started on aspirin today", "O O B-Drug O", "Disease: aspirin", "O O B-Disease O"),
    # duplicate mentions: named twice -> both occurrences in order; named once -> only the first
    (
        "asthma , then asthma again",
        "B-Disease O O B-Disease O",
        "Disease: asthma\nDisease: asthma",
        "B-Disease O O B-Disease O",
    ),
    ("gout and later gout", "B-Disease O O B-Disease", "- disease: gout", "B-Disease O O O"),
    # an answer line repeated with only one occurrence: the second has nothing left to take (unaligned)
    ("sepsis resolved", "B-Disease O", "Disease: sepsis\nDisease: sepsis", "B-Disease O"),
    # adjacent entities of one type stay two entities (B- B-)
    ("HIV AIDS coinfection", "B-Disease B-Disease O", "Disease: HIV\nDisease: AIDS", "B-Disease B-Disease O"),
    # unparseable answer: no entities predicted
    ("fever from pneumonia", "O O B-Disease", "The patient has pneumonia.", "O O O"),
    # the none answer when there is an entity, and when there is none
    ("lupus flare", "B-Disease O", "none", "O O"),
    ("no complaints today", "O O O", "None.", "O O O"),
    # case and spacing are forgiven ("(CD)" covers the bracket tokens, so it is wrong); a hallucination is dropped
    (
        "Crohn disease ( CD ) and gout",
        "B-Disease I-Disease O B-Disease O O B-Disease",
        "Disease: crohn disease\nDisease: (CD)\nDisease: migraine",
        "B-Disease I-Disease B-Disease I-Disease I-Disease O O",
    ),
]


def test_cases_agree_with_seqeval_on_the_expected_tags():
    recipe = make_recipe()
    records = [record(text, gold) for text, gold, _, _ in CASES]
    predictions = [prediction(answer, recipe) for _, _, answer, _ in CASES]
    expected_tags = [tags.split() for *_, tags in CASES]
    # Alignment turns each answer into exactly the tags written above.
    for pred, rec, tags in zip(predictions, records, expected_tags, strict=True):
        spans, _ = align_entities([(e["text"], e["type"]) for e in pred["entities"]], rec["tokens"])
        assert spans_to_tags(len(rec["tokens"]), spans) == tags, rec["text"]
    metrics = recipe.score(predictions, records)
    gold = [r["tags"] for r in records]
    assert metrics["micro_precision"] == pytest.approx(precision_score(gold, expected_tags))
    assert metrics["micro_recall"] == pytest.approx(recall_score(gold, expected_tags))
    assert metrics["micro_f1"] == pytest.approx(f1_score(gold, expected_tags))
    report = classification_report(gold, expected_tags, output_dict=True, zero_division=0)
    for kind in ("Disease", "Drug"):
        assert metrics["per_class"][kind]["precision"] == pytest.approx(report[kind]["precision"])
        assert metrics["per_class"][kind]["recall"] == pytest.approx(report[kind]["recall"])
        assert metrics["per_class"][kind]["f1"] == pytest.approx(report[kind]["f1-score"])
        assert metrics["per_class"][kind]["support"] == report[kind]["support"]
    assert metrics["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    # By hand: 15 gold entities (14 Disease, 1 Drug); 11 predicted; 8 exactly right (breast cancer, asthma x2,
    # the first gout, sepsis, HIV, AIDS, Crohn disease).
    assert (metrics["gold_entities"], metrics["predicted_entities"]) == (15, 11)
    assert metrics["micro_precision"] == pytest.approx(8 / 11)
    assert metrics["micro_recall"] == pytest.approx(8 / 15)
    assert metrics["micro_f1"] == pytest.approx(2 * 8 / (11 + 15))
    assert metrics["per_class"]["Disease"]["precision"] == pytest.approx(8 / 11)
    assert metrics["per_class"]["Disease"]["recall"] == pytest.approx(8 / 14)
    assert metrics["per_class"]["Drug"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert metrics["unparseable"] == 1 and metrics["unparseable_rate"] == pytest.approx(1 / len(CASES))
    assert metrics["unaligned_entities"] == 2  # the second "sepsis" and "migraine"
    assert metrics["examples"] == len(CASES)


def test_nothing_to_find_and_nothing_found_scores_zero_not_nan():
    metrics = entity_metrics([["O", "O"]], [["O", "O"]], ["Disease"])
    assert metrics["micro_f1"] == 0.0 and metrics["macro_f1"] == 0.0
    assert metrics["per_class"]["Disease"]["support"] == 0


def test_alignment_prefers_exact_case_then_first_untaken_occurrence():
    tokens = ["Asthma", "and", "asthma", "and", "ASTHMA"]
    assert align_entities([("asthma", "D")], tokens) == ([(2, 3, "D")], 0)  # exact case, although later
    assert align_entities([("asthma", "D")] * 3, tokens) == ([(0, 1, "D"), (2, 3, "D"), (4, 5, "D")], 0)
    assert align_entities([("asth", "D"), ("", "D")], tokens) == ([], 2)  # part of a token, empty
    # a longer mention first takes its tokens; a shorter one then goes to the next free occurrence
    tokens = ["lung", "cancer", "and", "cancer"]
    assert align_entities([("lung cancer", "D"), ("cancer", "D")], tokens) == ([(0, 2, "D"), (3, 4, "D")], 0)


@pytest.mark.parametrize(
    "tags",
    [
        ["O", "B-Disease", "I-Disease", "O", "B-Drug"],  # entity at the end
        ["B-Disease", "B-Disease", "I-Disease", "B-Drug", "I-Drug"],  # adjacent, same and different types
        ["O", "O", "O"],
        ["B-Observed-state", "I-Observed-state", "O"],  # a type with a hyphen
    ],
)
def test_bio_spans_round_trip(tags):
    assert spans_to_tags(len(tags), tags_to_spans(tags)) == tags


def test_iob1_and_type_switches_read_leniently():
    assert tags_to_spans(["I-X", "I-X", "O", "I-Y", "I-X"]) == [(0, 2, "X"), (3, 4, "Y"), (4, 5, "X")]
    assert spans_to_tags(5, tags_to_spans(["I-X", "I-X", "O", "I-Y", "I-X"])) == ["B-X", "I-X", "O", "B-Y", "B-X"]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags(4, [(0, 2, "X"), (1, 3, "Y")])


def test_character_spans_become_tokens_and_tags():
    text = "Pt with COPD-related  pneumonia."
    spans = [{"start": 8, "end": 12, "type": "Disease"}, {"start": 20, "end": 31, "type": "Disease"}]  # 2nd padded
    tokens, tags, mentions = sentence_from_char_spans(text, spans, ["Disease"], "x:1")
    assert tokens == ["Pt", "with", "COPD", "-", "related", "pneumonia", "."]
    assert tags == ["O", "O", "B-Disease", "O", "O", "B-Disease", "O"]
    assert mentions == [("COPD", "Disease"), ("pneumonia", "Disease")]
    # a span edge inside a word splits the word
    tokens, tags, _ = sentence_from_char_spans("hypothyroidism", [{"start": 4, "end": 11, "type": "D"}], None, "x:1")
    assert (tokens, tags) == (["hypo", "thyroid", "ism"], ["O", "B-D", "O"])


def test_parse_output():
    recipe = make_recipe()
    assert recipe.parse_output(" none. ") == []
    assert recipe.parse_output('1. disease: "type 2 diabetes"\n\n* DRUG : aspirin') == [
        {"text": "type 2 diabetes", "type": "Disease"},
        {"text": "aspirin", "type": "Drug"},
    ]
    assert recipe.parse_output("Disease: a: b") == [{"text": "a: b", "type": "Disease"}]
    for bad in ("", "Disease:", "Symptom: fever", "none\nDisease: gout", "Disease: gout\nsee above", "gout"):
        assert recipe.parse_output(bad) is None, bad


def test_conll_reader(tmp_path):
    path = tmp_path / "data.txt"
    # every token line keeps the file's column count (4 here); a line of another width is refused (test_data)
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nfever NN B-NP O\n")
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["fever"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["O"]]
    assert [s.source for s in sentences] == [f"{path}:3", f"{path}:7"]
    path.write_text("a token\twith a space\tO\n")  # tab-separated: the token keeps its space
    assert read_conll(path)[0].tokens == ["a token"]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("fever\tO\nasthma\n", 2, "has a token but no tag"),
        ("fever\tO\n\nasthma\t\n", 3, "has a token but no tag"),
        ("asthma\tS-Disease\n", 1, "is not O, B-<type> or I-<type>"),
        ("asthma\tB-Disease\nflare\tI-Diseas\n", 2, "type 'Diseas' .* is not one of recipe.entity_types"),
    ],
)
def test_conll_reader_errors_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(FtkitError, match=message) as error:
        read_conll(path, ["Disease"])
    assert error.value.where == f"{path}:{line}"


def test_a_control_character_in_a_tag_stays_inside_the_one_line_error(tmp_path):
    # Found by the long fuzz run: a vertical tab in a tag split the error paragraph in two (str.splitlines splits on it)
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"lymphoma\tI-\x0bisease\n")
    with pytest.raises(FtkitError) as error:
        read_conll(path, ["Disease"])
    assert len(str(error.value).splitlines()) == 1
    assert "I-\\x0bisease" in str(error.value)


def test_empty_conll_file(tmp_path):
    path = tmp_path / "empty.conll"
    path.write_text("\n\n")
    with pytest.raises(FtkitError, match="holds no sentences"):
        read_conll(path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"sentence": "gout", "spans": []}', "has no 'text' field"),
        ('{"text": "gout"}', "has no 'spans' field"),
        ('{"text": "gout", "spans": [{"start": 0, "end": 9, "type": "Disease"}]}', "lies outside the text"),
        ('{"text": "gout", "spans": [{"start": 0, "end": 4, "type": "Chemical"}]}', "'Chemical' is not one of"),
        ('{"text": "gout", "spans": [{"start": 0, "end": 4}]}', "has no type"),
        ('{"text": "gout", "spans": {"start": 0}}', "must be a list"),
        ('{"text": "a b", "spans": [{"start": 1, "end": 2, "type": "Disease"}]}', "covers only whitespace"),
        (
            '{"text": "lung cancer", "spans": [{"start": 0, "end": 11, "type": "Disease"}, '
            '{"start": 5, "end": 11, "type": "Disease"}]}',
            "overlap",
        ),
    ],
)
def test_jsonl_record_errors_name_file_and_line(tmp_path, record, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "gout flare", "spans": [{"start": 0, "end": 4, "type": "Disease"}]}\n' + record + "\n")
    recipe = make_recipe(data={"train": str(path)}, entity_types=["Disease"])
    with pytest.raises(FtkitError, match=message) as error:
        recipe.load_split("train")
    assert error.value.where == f"{path}:2"


def test_types_inferred_from_train_and_enforced_elsewhere(tmp_path):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("pump\tB-Item\nleak\tB-Observation\n")
    test.write_text("replace\tB-Activity\npump\tB-Item\n")
    recipe = make_recipe(data={"train": str(train), "test": str(test)}, entity_types=None)
    assert recipe.entity_types() == ["Item", "Observation"]
    assert recipe.to_example(recipe.load_split("train")[0])["completion"][0]["content"] == (
        "Item: pump\nObservation: leak"
    )
    with pytest.raises(FtkitError, match="'Activity'") as error:
        recipe.load_split("test")
    assert error.value.where == f"{test}:1"
    train.write_text("pump\tO\n")
    with pytest.raises(FtkitError, match="no entities"):
        make_recipe(data={"train": str(train)}, entity_types=None).load_split("train")


def test_missing_data_file_names_the_key(tmp_path):
    recipe = make_recipe(data={"train": str(tmp_path / "nope.tsv")})
    with pytest.raises(FtkitError, match="does not exist") as error:
        recipe.load_split("train")
    assert error.value.where == "recipe.data.train"


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"prompt_template": "Sentence:"}, "recipe.prompt_template"),
        ({"system_prompt": "Find {kinds}"}, "recipe.system_prompt"),
        ({"entity_types": ["Disease", "Disease"]}, "recipe.entity_types"),
        ({"entity_types": ["Dis:ease"]}, "recipe.entity_types"),
        ({"none_answer": ""}, "recipe.none_answer"),
        ({"data": {"train": "x", "format": "csv"}}, "recipe.data.format"),
        ({"max_new_tokens": 0}, "recipe.max_new_tokens"),
    ],
)
def test_check_config_errors(overrides, where):
    with pytest.raises(FtkitError) as error:
        make_recipe(**overrides)
    assert error.value.where == where
