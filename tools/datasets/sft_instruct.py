"""Generate the bundled ``sft_instruct`` sample data: short instruction/response pairs and multi-turn chats.

Ten task families (capitals, plurals, opposites, unit conversion, sorting, e-mail extraction, dates in words,
past tense, acronyms, counting list items), each with a few phrasings and one fixed answer style, written two
ways: single-turn records in the alpaca format (instruction / input / output) and 2-3 turn conversations in the
messages format whose follow-ups ("And of Spain?", "Now in reverse order.") only make sense with the earlier
turns. Answers are computed from small tables, so they are always right and a small model can learn the style.

The tables and the phrasings of each family's first instruction live in sft_instruct.yaml next to this script;
the families, answers and sampling are here. Standard library and PyYAML (an ftkit dependency) only, and
deterministic: the same seed writes byte-identical files.

    python tools/datasets/sft_instruct.py                  # rewrites the six files in recipes/data/sft_instruct/
    python tools/datasets/sft_instruct.py --out /tmp/si --seed 7
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from _common import load_vocabulary, parse_args, write_jsonl_files

DEFAULT_SEED = 20240612
ALPACA_SPLITS = {"train": 240, "validation": 16, "test": 28}
CHAT_SPLITS = {"train": 60, "validation": 8, "test": 12}

VOCABULARY = load_vocabulary(__file__)
CAPITALS: list[tuple[str, str]] = list(VOCABULARY["capitals"].items())
PLURALS: list[tuple[str, str]] = list(VOCABULARY["plurals"].items())
OPPOSITES: list[tuple[str, str]] = list(VOCABULARY["opposites"].items())
# unit, first target (factor), second target (factor)
UNITS: list[tuple[str, tuple[str, int], tuple[str, int]]] = [
    (unit, *targets.items()) for unit, targets in VOCABULARY["units"].items()
]
WORDS: list[str] = VOCABULARY["words"]
FIRST: list[str] = VOCABULARY["first_names"]
LAST: list[str] = VOCABULARY["last_names"]
DOMAINS: list[str] = VOCABULARY["domains"]
EMAIL_TEXTS: list[str] = VOCABULARY["email_texts"]
MONTHS: list[str] = VOCABULARY["months"]
VERBS: list[list[str]] = VOCABULARY["verbs"]  # base form, third person, past
OBJECTS: list[str] = VOCABULARY["objects"]
ACRONYMS: list[tuple[str, str]] = list(VOCABULARY["acronyms"].items())
ASKS: dict[str, list[str]] = VOCABULARY["asks"]  # family -> phrasings of its first instruction

Turn = tuple[str, str, str]  # instruction, input, output
Family = Callable[[random.Random], list[Turn]]  # one conversation: its first turn, then the follow-ups


def capitals(rng: random.Random) -> list[Turn]:
    (country, city), *rest = rng.sample(CAPITALS, 3)
    ask = rng.choice(ASKS["capitals"])
    turns = [(ask.format(c=country), "", f"The capital of {country} is {city}.")]
    return turns + [(f"And of {c}?", "", f"The capital of {c} is {t}.") for c, t in rest]


def plurals(rng: random.Random) -> list[Turn]:
    (word, plural), *rest = rng.sample(PLURALS, 3)
    answer = f"The plural of '{word}' is '{plural}'."
    if rng.random() < 0.5:
        first = (f"What is the plural of '{word}'?", "", answer)
    else:
        first = ("Give the plural form of this noun.", word, answer)
    return [first] + [(f"And of '{w}'?", "", f"The plural of '{w}' is '{p}'.") for w, p in rest]


def opposites(rng: random.Random) -> list[Turn]:
    (word, other), *rest = [pair if rng.random() < 0.5 else pair[::-1] for pair in rng.sample(OPPOSITES, 3)]
    answer = f"The opposite of '{word}' is '{other}'."
    if rng.random() < 0.5:
        first = (f"Give the opposite of '{word}'.", "", answer)
    else:
        first = ("What is the opposite of this word?", word, answer)
    return [first] + [(f"And of '{w}'?", "", f"The opposite of '{w}' is '{o}'.") for w, o in rest]


def conversion(rng: random.Random) -> list[Turn]:
    unit, (first, factor), (second, factor2) = rng.choice(UNITS)
    n = rng.randint(2, 25)
    ask = rng.choice(ASKS["conversion"])
    return [
        (ask.format(n=n, u=unit, t=first), "", f"{n} {unit} is {n * factor} {first}."),
        (f"And in {second}?", "", f"{n} {unit} is {n * factor2} {second}."),
    ]


def sorting(rng: random.Random) -> list[Turn]:
    words = rng.sample(WORDS, rng.randint(3, 6))
    ordered = sorted(words)
    ask = rng.choice(ASKS["sorting"])
    return [
        (ask, ", ".join(words), ", ".join(ordered)),
        ("Now in reverse order.", "", ", ".join(reversed(ordered))),
    ]


def email(rng: random.Random) -> list[Turn]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    address = f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"
    text = rng.choice(EMAIL_TEXTS).format(name=f"{first} {last}", email=address)
    ask = rng.choice(ASKS["email"])
    return [(ask, text, address), ("Whose address is it?", "", f"It belongs to {first} {last}.")]


def dates(rng: random.Random) -> list[Turn]:
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    ask = rng.choice(ASKS["dates"])
    return [
        (ask, f"{year}-{month:02d}-{day:02d}", f"{day} {MONTHS[month - 1]} {year}"),
        ("Which month is that?", "", f"That is {MONTHS[month - 1]}, month {month} of the year."),
    ]


def past_tense(rng: random.Random) -> list[Turn]:
    (base, present, past), obj = rng.choice(VERBS), rng.choice(OBJECTS)
    subject = rng.choice(FIRST)
    ask = rng.choice(ASKS["past_tense"])
    return [
        (ask, f"{subject} {present} {obj}.", f"{subject} {past} {obj}."),
        ("Now in the future tense.", "", f"{subject} will {base} {obj}."),
    ]


def acronyms(rng: random.Random) -> list[Turn]:
    (short, long), *rest = rng.sample(ACRONYMS, 2)
    ask = rng.choice(ASKS["acronyms"])
    turns = [(ask.format(a=short), "", f"{short} stands for {long}.")]
    return turns + [(f"And {a}?", "", f"{a} stands for {x}.") for a, x in rest]


def counting(rng: random.Random) -> list[Turn]:
    words = rng.sample(WORDS, rng.randint(2, 7))
    ask = rng.choice(ASKS["counting"])
    first = rng.choice(words)
    return [
        (ask, ", ".join(words), f"There are {len(words)} items in the list."),
        (f"Is '{first}' one of them?", "", f"Yes, '{first}' is item {words.index(first) + 1} of {len(words)}."),
    ]


FAMILIES: list[Family] = [
    capitals,
    plurals,
    opposites,
    conversion,
    sorting,
    email,
    dates,
    past_tense,
    acronyms,
    counting,
]


def alpaca_record(turn: Turn) -> dict[str, str]:
    instruction, extra, output = turn
    return {"instruction": instruction, "input": extra, "output": output}


def chat_record(turns: list[Turn]) -> dict[str, list[dict[str, str]]]:
    messages = []
    for instruction, extra, output in turns:
        messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
        messages.append({"role": "assistant", "content": output})
    return {"messages": messages}


def draw(rng: random.Random, count: int, seen: set[str], make: Callable[[list[Turn]], dict]) -> list[dict]:
    """count records, families in turn, none opening with a turn already drawn (in any split or format)."""
    records: list[dict] = []
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > 100 * count:
            raise RuntimeError("ran out of distinct records; enlarge the tables")
        turns = FAMILIES[len(records) % len(FAMILIES)](rng)
        key = json.dumps(turns[0])  # a first turn is never reused, in either format
        if key not in seen:
            seen.add(key)
            records.append(make(turns))
    rng.shuffle(records)
    return records


def generate(seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    files: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):  # held-out splits first: they get first pick of the tables
        files[f"{split}_alpaca"] = draw(rng, ALPACA_SPLITS[split], seen, lambda turns: alpaca_record(turns[0]))
        files[f"{split}_chat"] = draw(
            rng, CHAT_SPLITS[split], seen, lambda turns: chat_record(turns[: 2 + (rng.random() < 0.3)])
        )
    return files


def main() -> None:
    args = parse_args(__file__, __doc__.splitlines()[0], DEFAULT_SEED)
    write_jsonl_files(args.out, generate(args.seed))


if __name__ == "__main__":
    main()
