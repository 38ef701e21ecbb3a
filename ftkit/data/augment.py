"""Augmentation of the training split (config keys data.augment, data.augment_factor, data.synonyms, data.seed).

Supports
  - eda, after Wei & Zou 2019 ("EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
    Classification Tasks"): each new record is its original with one of four operations applied, chosen at random
    among those that apply to the text, with n = max(1, round(0.1 * words)):
      synonym replacement  n words that have synonyms replaced by one of them (skipped without a synonyms file);
      random insertion     n times, a synonym of a word of the text (with a synonyms file), or a copy of a word of
                           the text (without), inserted at a random place;
      random swap          n times, two words swap places;
      random deletion      each word dropped with probability 0.1 (at least one, never all).
    Words are split at whitespace and joined with single spaces; punctuation around a word stays where it was
    and a replacement takes the word's capitalisation.
  - paraphrase: the base model rewrites each chosen text (greedy, batched: ftkit.tasks.generation), asked to keep
    its meaning; the label is kept. A lead-in ("Rewritten text:"), quotes around the answer and what follows a
    blank line (a comment on it, unless the text has blank lines itself) are cut off; an answer that repeats the
    request, or runs past twice the words of its text, is dropped. For a factor above 1 each further round
    rewrites the previous round's rewrite (greedy decoding would repeat itself on the same text).
  - data.augment_factor: new records per training record; the fraction is a seeded choice of the records that get
    one more (0.5: every second record on average, 2.5: two each and a third for half of them).
  - A synonyms file (data.synonyms): UTF-8 text, one group of interchangeable words per line, comma-separated
    (e.g. `pump, impeller pump`); blank lines and lines starting with # are skipped; a word in several groups has
    the synonyms of all of them. Only single words are looked up in a text; entries of several words serve as
    replacements.
Every new record is {"text", "label" (the original's), "source": "<original's source> (eda|paraphrase)",
"augmented": "eda" | "paraphrase"} plus the original's other prompt fields. A new text equal to its original, to
another training, validation or test input or to an earlier new record is not added (eda tries up to 5 times),
nor a rewrite dropped as above, nor one longer than model.max_length tokens: each is counted. Everything is seeded by
data.seed; validation and test are never augmented (ftkit.training.run hands only the training split here).

Raises FtkitError for a synonyms file that cannot be read, is not UTF-8, holds no group, or has a line with an
empty entry or fewer than two different words (file:line given).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError

Record = dict[str, Any]
Synonyms = dict[str, list[str]]  # casefolded word -> its synonyms as the file writes them

EDA = "eda"
PARAPHRASE = "paraphrase"
CHANGE_RATE = 0.1  # Wei & Zou's alpha: the share of words each operation changes
EDA_TRIES = 5  # draws per wanted record before it counts as not new
PARAPHRASE_PROMPT = (
    "Rewrite the following text in other words. Keep its meaning and every name, code and number in it. "
    "Reply with the rewritten text only.\n\n{text}"
)
QUOTES = "\"'“”‘’«»"
# What a small model may put before its answer ("Rewritten text:", "Here is a paraphrase:"): cut off
LEAD_IN = re.compile(r"^[^:\n]{0,40}\b(?:rewrit|paraphras|original text)[^:\n]{0,30}:\s*", re.IGNORECASE)
WORD_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def read_synonyms(spec: str) -> Synonyms:
    """The synonyms of each word in the file data.synonyms names; FtkitError (file:line) for a bad file."""
    from ftkit.tasks.readers import read_utf8

    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise FtkitError(
            f"the synonyms file {spec!r} {what}",
            f"give data.synonyms the path of a text file with one comma-separated group per line (relative paths "
            f"start from {Path.cwd()}), or data.synonyms=null for none",
            where="data.synonyms",
        )
    synonyms: dict[str, dict[str, None]] = {}  # dicts as ordered sets: the file's order, each synonym once
    groups = 0
    for number, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        entries = [" ".join(entry.split()) for entry in line.split(",")]
        if "" in entries:
            raise FtkitError(
                f"the line has an empty entry ({line.strip()!r}): two commas in a row, or one at an end",
                "separate the words of a group by single commas, e.g. `pump, impeller pump`",
                where=where,
            )
        distinct = list(dict.fromkeys(entry.casefold() for entry in entries))
        if len(distinct) < 2:
            raise FtkitError(
                f"the line holds one word only ({line.strip()!r}), and a group needs two or more different words",
                "list two or more interchangeable words on the line, separated by commas, or remove it",
                where=where,
            )
        groups += 1
        for entry in entries:
            others = synonyms.setdefault(entry.casefold(), {})
            others.update({other: None for other in entries if other.casefold() != entry.casefold()})
    if not groups:
        raise FtkitError(
            "the synonyms file holds no group of synonyms",
            "write one comma-separated group per line, e.g. `pump, impeller pump`, or set data.synonyms=null",
            where=str(path),
        )
    return {word: list(others) for word, others in synonyms.items()}


def new_per_record(count: int, factor: float, rng: random.Random) -> list[int]:
    """How many new records each of `count` records gets: int(factor) each, one more for a seeded
    round(fraction * count) of them."""
    whole = int(factor)
    extra = set(rng.sample(range(count), round((factor - whole) * count)))
    return [whole + (index in extra) for index in range(count)]


def text_key(text: str, fields: dict[str, Any] | None = None) -> str:
    """What makes two inputs the same: the text up to whitespace, and the other prompt fields."""
    return json.dumps([" ".join(text.split()), fields or {}], sort_keys=True, ensure_ascii=False)


# ---- eda: the four operations on a list of words -------------------------------------------------------------


def split_word(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word, trailing punctuation)."""
    match = WORD_CORE.match(word)
    assert match is not None  # the pattern matches every string
    return match.group(1), match.group(2), match.group(3)


def in_case_of(replacement: str, word: str) -> str:
    """`replacement` written in the capitalisation of `word` (all capitals, or a capital first letter)."""
    if len(word) > 1 and word.isupper():
        return replacement.upper()
    if word[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def synonyms_of(word: str, synonyms: Synonyms) -> list[str]:
    return synonyms.get(split_word(word)[1].casefold(), [])


def changes(words: list[str]) -> int:
    return max(1, round(CHANGE_RATE * len(words)))


def synonym_replacement(words: list[str], rng: random.Random, synonyms: Synonyms) -> list[str] | None:
    """Up to n words that have synonyms, each replaced by one of them; None when no word has any."""
    candidates = [index for index, word in enumerate(words) if synonyms_of(word, synonyms)]
    if not candidates:
        return None
    result = list(words)
    for index in rng.sample(candidates, min(changes(words), len(candidates))):
        before, core, after = split_word(words[index])
        result[index] = before + in_case_of(rng.choice(synonyms_of(words[index], synonyms)), core) + after
    return result


def random_insertion(words: list[str], rng: random.Random, synonyms: Synonyms | None) -> list[str] | None:
    """n words inserted at random places: synonyms of the text's words, or copies of its words without a synonyms
    file; None when the file gives none of its words a synonym."""
    if synonyms is None:
        pool = [split_word(word)[1] or word for word in words]
    else:
        pool = [synonym for word in words for synonym in synonyms_of(word, synonyms)]
    if not pool:
        return None
    result = list(words)
    for _ in range(changes(words)):
        result.insert(rng.randrange(len(result) + 1), rng.choice(pool))
    return result


def random_swap(words: list[str], rng: random.Random) -> list[str] | None:
    """n swaps of two words at random places; None for a single word."""
    if len(words) < 2:
        return None
    result = list(words)
    for _ in range(changes(words)):
        first, second = rng.sample(range(len(result)), 2)
        result[first], result[second] = result[second], result[first]
    return result


def random_deletion(words: list[str], rng: random.Random) -> list[str] | None:
    """Each word dropped with probability 0.1, at least one and never all; None for a single word."""
    if len(words) < 2:
        return None
    dropped = {index for index in range(len(words)) if rng.random() < CHANGE_RATE}
    if not dropped:
        dropped = {rng.randrange(len(words))}
    if len(dropped) == len(words):
        dropped.discard(rng.choice(sorted(dropped)))
    return [word for index, word in enumerate(words) if index not in dropped]


def eda_text(text: str, rng: random.Random, synonyms: Synonyms | None) -> str | None:
    """One eda variant of `text` (one operation, chosen among those that apply), or None when none applies."""
    words = text.split()
    operations: list[Callable[[], list[str] | None]] = [
        lambda: random_insertion(words, rng, synonyms),
        lambda: random_swap(words, rng),
        lambda: random_deletion(words, rng),
    ]
    if synonyms is not None:
        operations.insert(0, lambda: synonym_replacement(words, rng, synonyms))
    rng.shuffle(operations)
    for operation in operations:  # the first that applies: a random choice among the applicable ones
        result = operation()
        if result is not None:
            return " ".join(result)
    return None


# ---- the new records ---------------------------------------------------------------------------------------


def new_record(original: Record, text: str, method: str) -> Record:
    record = {**original, "text": text, "augmented": method}
    record["source"] = f"{original.get('source', 'train')} ({method})"
    return record


def eda_records(
    records: list[Record], factor: float, seed: int, synonyms: Synonyms | None, taken: set[str]
) -> tuple[list[Record], dict[str, int]]:
    """eda variants of the records (augment_factor per record), and counts: requested, added, not_new.

    `taken` holds the text_key of every input that must not be made again (the splits' inputs); the new ones are
    added to it.
    """
    rng = random.Random(seed)
    wanted = new_per_record(len(records), factor, rng)
    added: list[Record] = []
    counts = {"requested": sum(wanted), "added": 0, "not_new": 0}
    for record, count in zip(records, wanted, strict=True):
        for _ in range(count):
            for _ in range(EDA_TRIES):
                text = eda_text(record["text"], rng, synonyms)
                key = text_key(text, record.get("fields")) if text is not None else None
                if key is not None and key not in taken:
                    taken.add(key)
                    added.append(new_record(record, text, EDA))
                    break
            else:
                counts["not_new"] += 1
    counts["added"] = len(added)
    return added, counts


def paraphrase_records(
    records: list[Record],
    factor: float,
    seed: int,
    rewrite: Callable[[list[str]], list[str]],
    taken: set[str],
) -> tuple[list[Record], dict[str, int]]:
    """Rewrites of the records by `rewrite` (texts -> the model's rewrites, in order), augment_factor per record,
    and counts: requested, added, those rewrite_problem names (each dropped), not_generated (rounds after a
    record's rewrite was dropped: greedy decoding would give the same again).
    """
    rng = random.Random(seed)
    wanted = new_per_record(len(records), factor, rng)
    dropped = ("empty", "unchanged", "echoed", "runaway", "not_new", "not_generated")
    counts = {"requested": sum(wanted), "added": 0, **dict.fromkeys(dropped, 0)}
    current = [record["text"] for record in records]  # what the next round rewrites
    alive = [count > 0 for count in wanted]
    added: list[Record] = []
    for round_number in range(1, max(wanted, default=0) + 1):
        chosen = [i for i, count in enumerate(wanted) if count >= round_number and alive[i]]
        counts["not_generated"] += sum(1 for i, count in enumerate(wanted) if count >= round_number and not alive[i])
        if not chosen:
            continue
        outputs = rewrite([current[i] for i in chosen])
        for index, output in zip(chosen, outputs, strict=True):
            if "\n\n" not in current[index]:  # what follows a blank line is the model's comment on its answer
                output = output.strip().split("\n\n")[0]
            text, fields = cleaned(output), records[index].get("fields")
            problem = rewrite_problem(text, current[index], fields, taken)
            if problem is not None:
                counts[problem] += 1
                alive[index] = False
                continue
            taken.add(text_key(text, fields))
            current[index] = text
            added.append(new_record(records[index], text, PARAPHRASE))
    counts["added"] = len(added)
    return added, counts


def cleaned(text: str) -> str:
    """A rewrite without the lead-ins and quotes a model may wrap its answer in, nor surrounding whitespace."""
    while True:
        stripped = LEAD_IN.sub("", text.strip(), count=1).strip()
        if len(stripped) >= 2 and stripped[0] in QUOTES and stripped[-1] in QUOTES:
            stripped = stripped[1:-1].strip()
        if stripped == text:
            return text
        text = stripped


def rewrite_problem(text: str, given: str, fields: dict[str, Any] | None, taken: set[str]) -> str | None:
    """Why a cleaned rewrite of `given` is not added (a count's name), or None: empty; unchanged; echoed (it holds
    the request instead of an answer); runaway (over twice the words of its text, plus 5: a model repeating
    itself); not_new (another input already there)."""
    if not text:
        return "empty"
    if text_key(text, fields) == text_key(given, fields):
        return "unchanged"
    if PARAPHRASE_PROMPT.split(".")[0].casefold() in text.casefold():
        return "echoed"
    if len(text.split()) > 2 * len(given.split()) + 5:
        return "runaway"
    return "not_new" if text_key(text, fields) in taken else None


def model_rewriter(model: Any, tokenizer: Any, batch_size: int, max_length: int | None) -> Callable:
    """texts -> the model's greedy paraphrase of each, batched (at most twice a text's tokens plus 16 new ones)."""
    from ftkit.tasks.generation import generate

    def rewrite(texts: list[str]) -> list[str]:
        longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        new_tokens = 2 * longest + 16
        prompts = [[{"role": "user", "content": PARAPHRASE_PROMPT.format(text=text)}] for text in texts]
        return generate(model, tokenizer, prompts, min(new_tokens, max_length or new_tokens), batch_size)

    return rewrite


def augment(
    recipe: Any,
    cfg: Any,
    splits: dict[str, list[Record]],
    model: Any,
    tokenizer: Any,
    synonyms: Synonyms | None,
) -> tuple[list[Record], dict[str, Any]]:
    """The new training records data.augment asks for, and what was done (for metrics.json): the method, the
    factor, the counts (those above, and too_long: new examples over model.max_length tokens, dropped) and the
    seconds it took. Only splits["train"] is augmented; the inputs of every split are kept from being made again.
    """
    from ftkit.training.data_checks import example_lengths

    method, factor, seed = cfg.data.augment, float(cfg.data.augment_factor), cfg.data.seed
    taken = {text_key(r["text"], r.get("fields")) for records in splits.values() for r in records}
    started = time.perf_counter()
    if method == EDA:
        added, counts = eda_records(splits["train"], factor, seed, synonyms, taken)
    elif method == PARAPHRASE:
        rewrite = model_rewriter(model, tokenizer, cfg.evaluate.batch_size, cfg.model.max_length)
        added, counts = paraphrase_records(splits["train"], factor, seed, rewrite, taken)
    else:
        raise ValueError(f"unknown augmentation {method!r} (ftkit.config.checks allows none, eda, paraphrase)")
    counts["too_long"] = 0
    limit = cfg.model.max_length
    if limit and added:
        lengths = example_lengths(tokenizer, [recipe.to_example(record) for record in added])
        kept = [record for record, length in zip(added, lengths, strict=True) if length <= limit]
        counts["too_long"], added = len(added) - len(kept), kept
        counts["added"] = len(added)
    findings = {"method": method, "factor": factor, **counts, "seconds": round(time.perf_counter() - started, 2)}
    return added, findings
