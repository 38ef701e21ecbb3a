"""Baselines beside the fine-tuned model in a classification run's report (evaluate.baselines).

Supported, for recipes whose class subclasses ftkit.tasks.classification.ClassificationTask (NER, instruct and
multitask recipes get none):
- majority: every test example gets the most frequent training label (ties: the one listed first in recipe.labels).
- tfidf: word 1-2-gram + character (char_wb) 3-5-gram TF-IDF with sublinear tf and a LogisticRegression, seeded
  (benchmarks/classification.py uses this one too). A training split of one label gives that label everywhere.
Each learns from the training split it is given (ftkit.training.run passes the split as read and checked, before
any balancing or augmentation: what a simple baseline would get) and reads what the model reads: the text and the
other record fields the prompt template names. Each is scored on the test split by the recipe's own score(), so
its metrics are those of the base and fine-tuned models, and its predictions have their shape ({"label": ...}).

Raises nothing of its own: evaluate.baselines names are checked by ftkit.config.checks.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any


def applies(recipe: Any) -> bool:
    """Whether a recipe gets baselines: classification recipes only."""
    from ftkit.tasks.classification import ClassificationTask

    return isinstance(recipe, ClassificationTask)


def run_baselines(
    recipe: Any, names: list[str], train: list[dict[str, Any]], test: list[dict[str, Any]], seed: int
) -> dict[str, dict[str, Any]]:
    """Each named baseline, fitted on train and scored on test: {name: {"metrics", "predictions", "seconds"}}
    (what ftkit.tasks.evaluation.evaluate returns for a model); {} for a recipe that gets none."""
    if not applies(recipe):
        return {}
    from ftkit.tasks.evaluation import timed_score

    def predict(name: str) -> list[dict[str, str]]:
        return [{"label": label} for label in PREDICTORS[name](train, test, recipe.labels, seed)]

    return {name: timed_score(recipe, partial(predict, name), test, f"baseline {name}, test") for name in names}


def majority_labels(train: list[dict[str, Any]], test: list[dict[str, Any]], labels: list[str], seed: int) -> list:
    """The most frequent training label for every test record (seed unused: nothing is random)."""
    counts = Counter(record["label"] for record in train)
    most = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    return [most] * len(test)


def tfidf_labels(train: list[dict[str, Any]], test: list[dict[str, Any]], labels: list[str], seed: int) -> list:
    """TF-IDF word and character n-grams + LogisticRegression, fitted on train, predicted for test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    train_labels = [record["label"] for record in train]
    if len(set(train_labels)) < 2:  # LogisticRegression needs two classes; one label is all there is to learn
        return majority_labels(train, test, labels, seed)
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True),
        ),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    model.fit([model_input(record) for record in train], train_labels)
    return [str(label) for label in model.predict([model_input(record) for record in test])]


def model_input(record: dict[str, Any]) -> str:
    """The text and the values of the other fields the prompt names (a record's "fields"), as the model sees them."""
    return " ".join([record["text"], *(str(value) for value in record.get("fields", {}).values())])


# evaluate.baselines names -> how each predicts; ftkit.config.checks.BASELINES lists the same names
PREDICTORS = {"majority": majority_labels, "tfidf": tfidf_labels}
