"""`ftkit train recipe=ner` through the real CLI on a tiny random Llama, and bad NER data refused with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ftkit.config.compose import compose
from ftkit.recipes import get_recipe_class
from tests.conftest import tiny_overrides


def test_train_ner_end_to_end(run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    # A random model never stops on its own: a short generation budget keeps evaluation quick.
    overrides = tiny_overrides(tiny_model, run_dir, "recipe=ner", "recipe.max_new_tokens=12")
    result = run_ftkit("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["primary_metric"] == "micro_f1"
    for which in ("base", "finetuned"):
        scores = metrics[which]
        assert scores["examples"] == 24
        for key in ("micro_precision", "micro_recall", "micro_f1", "macro_f1"):
            assert 0 <= scores[key] <= 1, key
        assert set(scores["per_class"]) == {"Disease"}
        assert scores["per_class"]["Disease"]["support"] == scores["gold_entities"] > 0
        assert 0 <= scores["unparseable"] <= 24 and scores["unparseable_rate"] == scores["unparseable"] / 24
        assert scores["unaligned_entities"] >= 0

        # The predictions file holds what was scored: scoring it again gives the same metrics.
        lines = (run_dir / "predictions" / f"{which}.jsonl").read_text().splitlines()
        predictions = [json.loads(line) for line in lines]
        assert len(predictions) == 24
        assert all(set(p) == {"output", "parsed", "entities"} for p in predictions)
        assert scores["unparseable"] == sum(not p["parsed"] for p in predictions)
        recipe = get_recipe_class("ner")(compose(["recipe=ner"]).recipe)
        assert recipe.score(predictions, recipe.load_split("test")[:24]) == scores
    assert metrics["train"]["global_step"] == 6
    # Entity intervals for both models and the paired bootstrap; no baselines for NER.
    assert metrics["baselines"] == {}
    uncertainty = metrics["uncertainty"]
    assert set(uncertainty["intervals"]) == {"finetuned", "base"}
    assert set(uncertainty["intervals"]["finetuned"]) == {"micro_precision", "micro_recall", "micro_f1"}
    assert uncertainty["paired_tests"]["base"]["test"] == "paired bootstrap of entity F1, 1000 resamples"
    assert "| Disease |" in (run_dir / "report.md").read_text()
    assert "answers unparseable" in (run_dir / "train.log").read_text()
    assert "| micro_f1" in result.stdout


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("bad.tsv", "Patient\tO\nhas\tO\ngout\n", 3, "has a token but no tag"),
        (
            "bad.jsonl",
            '{"text": "gout", "spans": []}\n{"text": "gout", "spans": [{"start": 2, "end": 9, "type": "Disease"}]}\n',
            2,
            "lies outside the text",
        ),
    ],
)
def test_bad_data_exits_2_with_file_and_line(run_ftkit, tmp_path, name, content, line, message):
    """One case per format through the CLI; tests/test_ner_metrics.py covers every error at the reader level."""
    path = tmp_path / name
    path.write_text(content)
    result = run_ftkit("train", "recipe=ner", f"recipe.data.train={path}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{path}:{line}: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_composing_the_ner_config_imports_no_torch():
    code = (
        "import sys\nfrom ftkit.config.compose import compose\nfrom ftkit.config.checks import check\n"
        "check(compose(['recipe=ner']))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
