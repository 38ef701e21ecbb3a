"""Generate the bundled ``sft_instruct`` sample data: short instruction/response pairs and multi-turn chats.

Ten task families (capitals, plurals, opposites, unit conversion, sorting, e-mail extraction, dates in words,
past tense, acronyms, counting list items), each with a few phrasings and one fixed answer style, written two
ways: single-turn records in the alpaca format (instruction / input / output) and 2-3 turn conversations in the
messages format whose follow-ups ("And of Spain?", "Now in reverse order.") only make sense with the earlier
turns. Answers are computed from small tables, so they are always right and a small model can learn the style.

Standard library only and deterministic: the same seed writes byte-identical files.

    python recipes/data/sft_instruct/generate.py                  # writes the six files next to itself
    python recipes/data/sft_instruct/generate.py --out /tmp/si --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_SEED = 20240612
ALPACA_SPLITS = {"train": 240, "validation": 16, "test": 28}
CHAT_SPLITS = {"train": 60, "validation": 8, "test": 12}


def _rows(text: str) -> list[tuple[str, ...]]:
    """A table written as 'a=b; c=d' (fields joined by '=', rows by ';')."""
    return [tuple(field.strip() for field in row.split("=")) for row in text.split(";")]


def _words(text: str) -> list[str]:
    return text.split()


CAPITALS = _rows(
    "France=Paris; Spain=Madrid; Italy=Rome; Germany=Berlin; Portugal=Lisbon; Austria=Vienna; Poland=Warsaw; "
    "Greece=Athens; Sweden=Stockholm; Norway=Oslo; Finland=Helsinki; Denmark=Copenhagen; Ireland=Dublin; "
    "Hungary=Budapest; Czechia=Prague; Belgium=Brussels; Netherlands=Amsterdam; Japan=Tokyo; China=Beijing; "
    "India=New Delhi; Egypt=Cairo; Kenya=Nairobi; Peru=Lima; Chile=Santiago; Argentina=Buenos Aires; "
    "Mexico=Mexico City; Canada=Ottawa; Australia=Canberra; Thailand=Bangkok; Vietnam=Hanoi; Turkey=Ankara; "
    "Russia=Moscow; Ukraine=Kyiv; Morocco=Rabat; Cuba=Havana; Colombia=Bogota; Iceland=Reykjavik; Brazil=Brasilia; "
    "Nigeria=Abuja; South Korea=Seoul"
)
PLURALS = _rows(
    "box=boxes; child=children; mouse=mice; city=cities; knife=knives; tooth=teeth; bus=buses; leaf=leaves; "
    "baby=babies; man=men; woman=women; foot=feet; goose=geese; dish=dishes; party=parties; wolf=wolves; "
    "church=churches; story=stories; person=people; fox=foxes; book=books; car=cars; tree=trees; lamp=lamps; "
    "glass=glasses; potato=potatoes; hero=heroes; day=days; key=keys; wife=wives; brush=brushes; lady=ladies; "
    "cat=cats; house=houses; watch=watches; country=countries; shelf=shelves; ox=oxen; sheep=sheep; fish=fish"
)
OPPOSITES = _rows(
    "hot=cold; early=late; big=small; fast=slow; happy=sad; light=dark; open=closed; full=empty; strong=weak; "
    "rich=poor; old=young; high=low; long=short; hard=soft; wet=dry; clean=dirty; loud=quiet; thick=thin; "
    "heavy=light; cheap=expensive; easy=difficult; safe=dangerous; true=false; deep=shallow; wide=narrow; near=far; "
    "first=last; inside=outside; push=pull; buy=sell; win=lose; arrive=leave; remember=forget; accept=refuse; "
    "increase=decrease; above=below; always=never; before=after; friend=enemy; question=answer"
)
# unit, first target (factor), second target (factor)
UNITS = [
    ("kilometres", ("metres", 1000), ("centimetres", 100000)),
    ("kilograms", ("grams", 1000), ("milligrams", 1000000)),
    ("metres", ("centimetres", 100), ("millimetres", 1000)),
    ("litres", ("millilitres", 1000), ("centilitres", 100)),
    ("tonnes", ("kilograms", 1000), ("grams", 1000000)),
    ("centimetres", ("millimetres", 10), ("micrometres", 10000)),
]
WORDS = _words(
    "apple pear plum fig kiwi lemon mango grape melon cherry peach olive onion carrot bean pea leek radish tiger "
    "zebra lion otter horse camel eagle raven panda koala bison moose whale shark trout salmon anchor bridge candle "
    "drum engine feather garden hammer island jacket kettle ladder mirror needle"
)
FIRST = _words("Maria Tom Aisha Lukas Mei Omar Sara Jonas Elena Ravi Nina Pablo Hana Felix Zoe Ivan")
LAST = _words("Lopez Becker Khan Novak Chen Haddad Rossi Meyer Silva Patel Kowalski Garcia Sato Weber Lund Petrov")
DOMAINS = ["example.com", "mail.example.org", "acme.test", "shop.example.net"]
EMAIL_TEXTS = [
    "Please contact {name} at {email} before Friday.",
    "For the invoice, write to {name} ({email}).",
    "{name} asked to be copied on {email} for all updates.",
    "Questions about the order go to {name}: {email}.",
    "You can reach {name} by e-mail at {email} or by phone.",
]
MONTHS = _words("January February March April May June July August September October November December")
# base form=third person=past
VERBS = _rows(
    "walk=walks=walked; go=goes=went; buy=buys=bought; write=writes=wrote; read=reads=read; see=sees=saw; "
    "take=takes=took; make=makes=made; open=opens=opened; clean=cleans=cleaned; paint=paints=painted; "
    "visit=visits=visited; carry=carries=carried; find=finds=found; bring=brings=brought; sell=sells=sold; "
    "drive=drives=drove; fix=fixes=fixed; watch=watches=watched; build=builds=built"
)
OBJECTS = [
    row[0]
    for row in _rows(
        "the letter; a new bike; the old car; the kitchen; the museum; a small box; the report; the fence; the garden; "
        "a book; the window; the station; the broken chair; the film"
    )
]
ACRONYMS = _rows(
    "CPU=central processing unit; RAM=random access memory; USB=universal serial bus; GPS=global positioning system; "
    "PDF=portable document format; LED=light-emitting diode; ATM=automated teller machine; "
    "DNA=deoxyribonucleic acid; HTML=hypertext markup language; FAQ=frequently asked questions; "
    "CEO=chief executive officer; UFO=unidentified flying object; SIM=subscriber identity module; "
    "URL=uniform resource locator; VAT=value added tax; HR=human resources; DIY=do it yourself; "
    "ETA=estimated time of arrival; PIN=personal identification number; WHO=World Health Organization"
)

Turn = tuple[str, str, str]  # instruction, input, output
Family = Callable[[random.Random], list[Turn]]  # one conversation: its first turn, then the follow-ups


def capitals(rng: random.Random) -> list[Turn]:
    (country, city), *rest = rng.sample(CAPITALS, 3)
    ask = rng.choice(
        ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]
    )
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
    ask = rng.choice(["Convert {n} {u} to {t}.", "How many {t} are in {n} {u}?", "Express {n} {u} in {t}."])
    return [
        (ask.format(n=n, u=unit, t=first), "", f"{n} {unit} is {n * factor} {first}."),
        (f"And in {second}?", "", f"{n} {unit} is {n * factor2} {second}."),
    ]


def sorting(rng: random.Random) -> list[Turn]:
    words = rng.sample(WORDS, rng.randint(3, 6))
    ordered = sorted(words)
    ask = rng.choice(["Sort these words alphabetically.", "Put these words in alphabetical order."])
    return [
        (ask, ", ".join(words), ", ".join(ordered)),
        ("Now in reverse order.", "", ", ".join(reversed(ordered))),
    ]


def email(rng: random.Random) -> list[Turn]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    address = f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"
    text = rng.choice(EMAIL_TEXTS).format(name=f"{first} {last}", email=address)
    ask = rng.choice(["Extract the email address from the text.", "Which email address does this text give?"])
    return [(ask, text, address), ("Whose address is it?", "", f"It belongs to {first} {last}.")]


def dates(rng: random.Random) -> list[Turn]:
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    ask = rng.choice(["Write this date in words.", "Spell out this date with the month name."])
    return [
        (ask, f"{year}-{month:02d}-{day:02d}", f"{day} {MONTHS[month - 1]} {year}"),
        ("Which month is that?", "", f"That is {MONTHS[month - 1]}, month {month} of the year."),
    ]


def past_tense(rng: random.Random) -> list[Turn]:
    (base, present, past), obj = rng.choice(VERBS), rng.choice(OBJECTS)
    subject = rng.choice(FIRST)
    ask = rng.choice(["Rewrite the sentence in the past tense.", "Put this sentence in the past tense."])
    return [
        (ask, f"{subject} {present} {obj}.", f"{subject} {past} {obj}."),
        ("Now in the future tense.", "", f"{subject} will {base} {obj}."),
    ]


def acronyms(rng: random.Random) -> list[Turn]:
    (short, long), *rest = rng.sample(ACRONYMS, 2)
    ask = rng.choice(["What does {a} stand for?", "Expand the abbreviation {a}."])
    turns = [(ask.format(a=short), "", f"{short} stands for {long}.")]
    return turns + [(f"And {a}?", "", f"{a} stands for {x}.") for a, x in rest]


def counting(rng: random.Random) -> list[Turn]:
    words = rng.sample(WORDS, rng.randint(2, 7))
    ask = rng.choice(["How many items are in this list?", "Count the items in the list."])
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, records in generate(args.seed).items():
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{name}.jsonl: {len(records)} records")


if __name__ == "__main__":
    main()
