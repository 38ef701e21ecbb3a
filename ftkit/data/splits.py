"""A recipe's splits: its data files as they are, or shares of one file, or k-fold folds of it; and the record of
what went where, which a run keeps (RunDir.splits_file) so that eval and resume score and train on the same
records.

Supports
  - The files as they are: recipe.data.train / validation / test, each read by the recipe.
  - recipe.data.split=[train, validation, test]: fractions of recipe.data.train (a fraction of 0: no such split;
    the checks in ftkit.config.checks keep train and test above 0). Stratified by the recipe's stratum of each
    record (its `stratum` method: classification, the label; NER, the sorted set of entity types a sentence holds;
    instruct, none) and seeded by recipe.data.split_seed. Each split holds its share of every stratum, rounded so
    that the split sizes are exact: round(records x fraction), at least one when the fraction is above 0.
  - recipe.data.folds=K with recipe.data.fold=i (set by `ftkit cv`): recipe.data.train dealt into K stratified,
    seeded folds that are disjoint and cover every record once; fold i is the test split, the others train, and
    there is no validation split.
  - recipe.data.max_train_examples caps the train split after the split is made (its first records in file order).
  - Determinism: the outcome depends only on the records in file order, their strata and the seed. Strata are
    taken in sorted order and each is shuffled by random.Random seeded with a string, so neither the order of a
    dict nor PYTHONHASHSEED changes it.
  - Small groups: under a holdout split a stratum of fewer than 3 records (a class with 1 or 2 records) goes to
    train whole, and every larger stratum keeps at least one record in train, so every label of validation and
    test is seen in training. Under k-fold every record is in exactly one test fold, so a stratum of fewer than K
    records is absent from some folds' test splits (and a class of one record from its fold's training split).
  - The split record (split_record; the run's splits.json): method, fractions or folds and fold, seed, the source
    files' sha256, the strata sizes, and per split its count, its record ids (each record's "source", file:line)
    and a sha256 of the ids and the records' content. read_splits recomputes a run's split and compares.
  - load_splits: the splits a run trains and evaluates on, checked (ftkit.training.data_checks) and capped.

Raises FtkitError (exit 2) when
  - a split would be empty: too few records for the fractions (or for the groups that must keep a record in
    train), or fewer records than folds;
  - a run's recorded split differs from the one recomputed now (the data file changed since the run), or the
    config asks for another split than the one the run recorded (fractions, folds, fold, seed or file), or the
    config splits one file for a run that recorded no split;
  - trainer.eval_strategy needs a validation split and there is none, or there is no test split (load_splits).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.cache import file_sha256
from ftkit.errors import FtkitError

Record = dict[str, Any]
SPLITS = ("train", "validation", "test")
# A stratum with fewer records goes to train whole under a holdout split (a class of 1-2 records cannot be
# split three ways and still be learnt).
SMALLEST_HELD_OUT_STRATUM = 3
# What changes which record lands where; a run's record of each must equal the config's for its split to be reused.
PLAN_KEYS = ("method", "source", "fractions", "folds", "fold", "seed", "max_train_examples")


def splits_one_file(data_cfg: Any) -> bool:
    """Whether recipe.data asks for shares of recipe.data.train (a holdout split or k-fold) rather than the files."""
    return data_cfg.get("split") is not None or data_cfg.get("folds") is not None


class SplitReader:
    """How a recipe's load_split gets a split's records: the file recipe.data.<split> as `read` reads it, or that
    split's share of recipe.data.train (read once, split once), the train split capped by max_train_examples.

    read(split) returns every record of the file configured for split (None when none is); stratum(record) is
    the group a record is stratified by.
    """

    def __init__(
        self, data_cfg: Any, read: Callable[[str], list[Record] | None], stratum: Callable[[Record], str]
    ) -> None:
        self.data = data_cfg
        self.read_file = read
        self.stratum = stratum
        self._whole: list[Record] | None = None
        self._shares: dict[str, list[Record] | None] | None = None
        self._record: dict[str, Any] | None = None

    @property
    def one_file(self) -> bool:
        return splits_one_file(self.data)

    @property
    def folds(self) -> int | None:
        return self.data.get("folds")

    def read(self, split: str) -> list[Record] | None:
        if self.one_file:
            return self.shares()[split]
        return cap_train(self.read_file(split), split, self.data.get("max_train_examples"))

    def whole(self) -> list[Record]:
        """Every record of recipe.data.train, in file order (read once)."""
        if self._whole is None:
            records = self.read_file("train")
            assert records is not None, "recipe.data.train is required by the schema"
            self._whole = records
        return self._whole

    def shares(self) -> dict[str, list[Record] | None]:
        """Each split's records, in file order: the holdout split or the fold of recipe.data.train."""
        if self._shares is None:
            records = self.whole()
            strata = [self.stratum(record) for record in records]
            where = f"recipe.data.train ({self.data.train})"
            if self.folds is not None:
                fold_of = assign_folds(strata, self.folds, self.data.split_seed, where)
                chosen = {
                    "train": [i for i, fold in enumerate(fold_of) if fold != self.data.fold],
                    "validation": None,
                    "test": [i for i, fold in enumerate(fold_of) if fold == self.data.fold],
                }
            else:
                chosen = assign_holdout(strata, list(self.data.split), self.data.split_seed, where)
            shares = {name: None if ix is None else [records[i] for i in ix] for name, ix in chosen.items()}
            shares["train"] = cap_train(shares["train"], "train", self.data.get("max_train_examples"))
            self._shares = shares
        return self._shares

    def record(self) -> dict[str, Any] | None:
        """What went where (the run's splits.json); None when the files are used as they are."""
        if not self.one_file:
            return None
        if self._record is None:
            whole, shares = self.whole(), self.shares()
            fractions = self.data.get("split")
            self._record = {
                "method": "k-fold" if self.folds is not None else "holdout",
                "source": _plain(self.data.train),
                "fractions": [float(f) for f in fractions] if fractions is not None else None,
                "folds": self.folds,
                "fold": self.data.get("fold"),
                "seed": self.data.split_seed,
                "max_train_examples": self.data.get("max_train_examples"),
                "files": source_files(whole),
                "strata": dict(sorted(Counter(self.stratum(record) for record in whole).items())),
                "splits": {name: None if records is None else described(records) for name, records in shares.items()},
            }
        return self._record


def cap_train(records: list[Record] | None, split: str, limit: int | None) -> list[Record] | None:
    return records[:limit] if split == "train" and limit and records is not None else records


def assign_holdout(strata: list[str], fractions: list[float], seed: int, where: str) -> dict[str, list[int] | None]:
    """Record indices (sorted) of train / validation / test; validation None for a fraction of 0.

    Test is allotted first, then validation, each by largest remainders over the strata, so that the split sizes
    are exact and each stratum's share is its fraction rounded; a stratum keeps at least one record in train,
    and one of fewer than SMALLEST_HELD_OUT_STRATUM records stays in train whole.
    """
    groups = shuffled_groups(strata, seed)
    sizes = {stratum: len(indices) for stratum, indices in groups.items()}
    free = {s: size - 1 if size >= SMALLEST_HELD_OUT_STRATUM else 0 for s, size in sizes.items()}
    quotas: dict[str, dict[str, int] | None] = {}
    for name, fraction in (("test", fractions[2]), ("validation", fractions[1])):
        if fraction == 0:
            quotas[name] = None
            continue
        wanted = max(1, round(len(strata) * fraction))
        quota = allocate(sizes, fraction, wanted, free)
        if sum(quota.values()) < wanted:
            small = sum(size for size in sizes.values() if size < SMALLEST_HELD_OUT_STRATUM)
            raise FtkitError(
                f"recipe.data.split={fractions} asks for {wanted} {name} records of the {len(strata)} in {where}, "
                f"and only {sum(quota.values())} can be held out: every group of records (a label, or a set of "
                f"entity types) keeps one in training, and the {small} records of groups smaller than "
                f"{SMALLEST_HELD_OUT_STRATUM} stay there whole",
                f"give recipe.data.train more records, lower the {name} fraction, or give the {name} split a file "
                f"of its own (recipe.data.split=null recipe.data.{name}=<file>)",
                where="recipe.data.split",
            )
        free = {s: free[s] - quota[s] for s in free}
        quotas[name] = quota
    chosen: dict[str, list[int] | None] = {
        "train": [],
        "validation": None if quotas["validation"] is None else [],
        "test": [],
    }
    for stratum, indices in groups.items():
        taken = 0
        for name in ("test", "validation"):
            quota = quotas[name]
            if quota is not None:
                share = chosen[name]
                assert share is not None
                share.extend(indices[taken : taken + quota[stratum]])
                taken += quota[stratum]
        chosen["train"].extend(indices[taken:])  # type: ignore[union-attr]
    return {name: None if indices is None else sorted(indices) for name, indices in chosen.items()}


def allocate(sizes: dict[str, int], fraction: float, wanted: int, free: dict[str, int]) -> dict[str, int]:
    """How many records of each stratum to hold out: wanted in all, each stratum's floor(size x fraction) first,
    then one more to the strata with the largest remainders (ties by name), round after round, within free."""
    ideal = {stratum: size * fraction for stratum, size in sizes.items()}
    quota = {stratum: min(math.floor(ideal[stratum]), free[stratum]) for stratum in sizes}
    order = sorted(sizes, key=lambda stratum: (-(ideal[stratum] - math.floor(ideal[stratum])), stratum))
    missing = wanted - sum(quota.values())
    while missing > 0:
        open_strata = [stratum for stratum in order if quota[stratum] < free[stratum]]
        if not open_strata:
            break
        for stratum in open_strata[:missing]:
            quota[stratum] += 1
        missing = wanted - sum(quota.values())
    return quota


def assign_folds(strata: list[str], folds: int, seed: int, where: str) -> list[int]:
    """The fold (0 .. folds-1) of each record: the strata in sorted order, each shuffled, dealt round-robin in one
    sequence, so fold sizes differ by at most one and each stratum is spread over the folds evenly."""
    if folds > len(strata):
        raise FtkitError(
            f"recipe.data.folds={folds} needs at least {folds} records, and {where} holds {len(strata)}",
            f"use fewer folds (e.g. ftkit cv folds={max(2, len(strata))}) or more records",
            where="recipe.data.folds",
        )
    fold_of = [0] * len(strata)
    position = 0
    for indices in shuffled_groups(strata, seed).values():
        for index in indices:
            fold_of[index] = position % folds
            position += 1
    return fold_of


def shuffled_groups(strata: list[str], seed: int) -> dict[str, list[int]]:
    """Record indices by stratum, strata in sorted order, each group shuffled by its own seeded generator."""
    groups: dict[str, list[int]] = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(index)
    ordered = {}
    for stratum in sorted(groups):
        indices = groups[stratum]
        # A str seed is hashed with SHA-512 by random.seed, never with hash(): PYTHONHASHSEED cannot change it.
        random.Random(f"{seed}:{stratum}").shuffle(indices)
        ordered[stratum] = indices
    return ordered


def record_id(record: Record) -> str:
    """A record's id in a split record: its "source" (file:line, or hub:<dataset>:<split>[row])."""
    return str(record.get("source", ""))


def records_sha256(records: Iterable[Record]) -> str:
    """sha256 of the records in order: each one's file name and line, and its content as read.

    The file's folder is left out, so the same file read from another place (another working directory) hashes
    the same; a changed record, or a record that moved, does not.
    """
    digest = hashlib.sha256()
    for record in records:
        path, _, line = record_id(record).rpartition(":")
        content = {key: value for key, value in record.items() if key != "source"}
        item = [Path(path).name, line, content]
        digest.update(json.dumps(item, sort_keys=True, ensure_ascii=True, default=str).encode() + b"\n")
    return digest.hexdigest()


def described(records: list[Record]) -> dict[str, Any]:
    return {"count": len(records), "sha256": records_sha256(records), "ids": [record_id(r) for r in records]}


def source_files(records: list[Record]) -> dict[str, str | None]:
    """sha256 of each file the records were read from (None for a hub: dataset, which is not a file here)."""
    files: dict[str, str | None] = {}
    for record in records:
        path = record_id(record).rpartition(":")[0]
        if path and path not in files:
            files[path] = file_sha256(Path(path)) if Path(path).is_file() else None
    return files


def _plain(value: Any) -> Any:
    """A config value (a str or a ListConfig of them) as plain JSON."""
    return value if isinstance(value, str) else [str(item) for item in value]


def describe_split(data_cfg: Any) -> str | None:
    """One line on how the splits are made from recipe.data.train, for dry runs and reports; None for the files."""
    if data_cfg.get("folds") is not None:
        return (
            f"fold {data_cfg.fold} of {data_cfg.folds} stratified folds of recipe.data.train ({data_cfg.train}) is "
            f"the test split, the other folds train (seed {data_cfg.split_seed})"
        )
    if data_cfg.get("split") is not None:
        fractions = "/".join(f"{float(f):g}" for f in data_cfg.split)
        return (
            f"train/validation/test {fractions} of recipe.data.train ({data_cfg.train}), stratified, seed "
            f"{data_cfg.split_seed}"
        )
    return None


# ---- the owner: what every command asks for a recipe's splits ------------------------------------------------
@dataclass
class Splits:
    records: dict[str, list[Record] | None]  # train / validation / test; None where the recipe has none
    record: dict[str, Any] | None  # what went where (splits.json); None when the files are used as they are


def read_splits(
    recipe: Any,
    recorded: dict[str, Any] | None = None,
    record_file: Path | None = None,
    compare: tuple[str, ...] = SPLITS,
) -> Splits:
    """The recipe's splits (recipe.load_split of each) and the record of how they were made.

    Given a run's record_file (its splits.json; recorded: what it holds, None when absent), a split of one file
    must be the run's: the same plan, and for each split in compare the same records (sha256), or FtkitError.
    """
    records = {name: recipe.load_split(name) for name in SPLITS}
    reader = recipe.split_reader
    record = reader.record() if reader is not None else None
    if record is not None and record_file is not None:
        if recorded is None:
            raise FtkitError(
                f"this command splits recipe.data.train ({record['source']}), and the run recorded no split "
                f"({record_file.name} is missing): it trained on files, so a share of its training file may hold "
                "records it trained on",
                "score the run's own test file: drop the recipe.data.split / folds overrides, or give a file of "
                "your own: recipe.data.split=null recipe.data.test=<file>",
                where="recipe.data.split",
            )
        check_same_split(recorded, record, record_file, compare)
    return Splits(records, record)


def check_same_split(recorded: dict[str, Any], now: dict[str, Any], record_file: Path, compare: Iterable[str]) -> None:
    """The split made now is the one a run recorded, or an FtkitError naming what differs and the fix."""
    asked = {key: now.get(key) for key in PLAN_KEYS if recorded.get(key) != now.get(key)}
    if asked:
        differences = "; ".join(f"{key}: the run's {recorded.get(key)!r}, now {now!r}" for key, now in asked.items())
        raise FtkitError(
            f"the run's data was split otherwise than this command asks ({differences}; the run's split is in "
            f"{record_file})",
            "drop the overrides that change recipe.data.train, split, split_seed, folds, fold or max_train_examples, "
            "so that the run's own split is used; to score a file of your own: recipe.data.split=null "
            "recipe.data.test=<file>",
            where="recipe.data.split",
        )
    for name in compare:
        then, current = (recorded.get("splits") or {}).get(name), now["splits"].get(name)
        if (then or {}).get("sha256") == (current or {}).get("sha256"):
            continue
        changed = [
            f"{path}: sha256 {str(sha)[:12]} then, {str(now['files'].get(path))[:12]} now"
            for path, sha in (recorded.get("files") or {}).items()
            if now["files"].get(path) != sha
        ]
        why = f"the data changed since the run ({'; '.join(changed)})" if changed else "the records read differ"
        count_then = (then or {}).get("count")
        count_now = (current or {}).get("count")
        raise FtkitError(
            f"the {name} split made now from {now['source']} is not the one the run recorded in {record_file} "
            f"({count_then} records then, {count_now} now; their sha256 differs): {why}",
            "restore the data file the run was trained on (the sha256 above is the run's), or train a new run on "
            "the changed file; to score another file: recipe.data.split=null recipe.data.test=<file>",
            where=str(record_file),
        )


def load_splits(
    recipe: Any,
    cfg: Any,
    findings: dict[str, Any] | None = None,
    recorded: dict[str, Any] | None = None,
    record_file: Path | None = None,
) -> dict[str, list[Record]]:
    """The splits a run trains and evaluates on: read_splits (compared with a resumed run's record_file), the test
    split capped at evaluate.max_examples, checked by data_checks.check_splits (which fills findings, when given,
    with what it found: leakage counts and actions)."""
    from ftkit.training.data_checks import check_splits

    splits = read_splits(recipe, recorded, record_file).records
    data = cfg.recipe.get("data")
    if splits["validation"] is None and cfg.trainer.get("eval_strategy", "no") != "no":
        where = "recipe.data.validation"
        problem = "no validation split is set"
        fix = "set recipe.data.validation=<file>, or turn evaluation during training off: trainer.eval_strategy=no"
        if data is not None and data.get("folds") is not None:
            where, problem = "trainer.eval_strategy", "a k-fold run has no validation split"
            fix = "set trainer.eval_strategy=no (ftkit cv sets it when it is left at its default)"
        elif data is not None and data.get("split") is not None:
            where, problem = "recipe.data.split", f"recipe.data.split={list(data.split)} makes none (its fraction is 0)"
            fix = "give validation a fraction, e.g. recipe.data.split=[0.8,0.1,0.1], or set trainer.eval_strategy=no"
        raise FtkitError(
            f"trainer.eval_strategy={cfg.trainer.eval_strategy} needs a validation split, and {problem}", fix, where
        )
    if splits["test"] is None:
        raise FtkitError(
            "no test split is set, so there is nothing to evaluate on",
            "set recipe.data.test=<file>, or split recipe.data.train: recipe.data.split=[0.8,0.1,0.1] "
            "recipe.data.validation=null",
            where="recipe.data.test",
        )
    limit = cfg.evaluate.max_examples
    splits["test"] = splits["test"][:limit] if limit else splits["test"]
    present = {name: records for name, records in splits.items() if records is not None}
    return check_splits(recipe, cfg, present, findings)


def write_record(recipe: Any, file: Path) -> None:
    """The run's splits.json: the recipe's split record, when it split one file (nothing is written otherwise)."""
    reader = recipe.split_reader
    record = reader.record() if reader is not None else None
    if record is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(record, indent=1) + "\n")
