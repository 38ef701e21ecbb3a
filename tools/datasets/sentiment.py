"""Generate the bundled ``sentiment`` sample data set: synthetic financial news headlines.

Each headline is a template for its label (negative, neutral, positive) with slots filled from pools: a fictional
company (name, ticker, sector), its sector's metrics and products, numbers (percentages, amounts, prices, EPS),
quarters, dates, fictional brokers and people. A share of each label are "hard" headlines whose words point the
other way ("narrows loss", "beats estimates but cuts outlook", "downgraded to neutral");
recipes/data/sentiment/README.md lists the rules that decide those labels. A style pass varies how the company is
named ($TICKER, TICKER, name (TICKER)), the case, and adds sources or short links.

The companies, word pools and templates live in sentiment.yaml next to this script; numbers, sampling and the
style pass are here. Standard library and PyYAML (an ftkit dependency) only, and deterministic: the same seed
writes byte-identical files.

    python tools/datasets/sentiment.py                 # rewrites train/validation/test.jsonl in recipes/data/sentiment/
    python tools/datasets/sentiment.py --out /tmp/s --seed 7
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from _common import load_vocabulary, parse_args, write_jsonl_files

DEFAULT_SEED = 20241105
LABELS = ("negative", "neutral", "positive")
PER_LABEL = {"train": 200, "validation": 20, "test": 50}  # headlines per label in each split
HARD_FRACTION = 0.15  # share of each label's headlines drawn from the hard templates
SECTOR_FRACTION = 0.25  # share of regular headlines drawn from their company's sector templates, where it has some
LINK_CHARS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

VOCABULARY = load_vocabulary(__file__)
SECTORS: dict[str, dict[str, Any]] = VOCABULARY["sectors"]  # companies, metrics, products, optional templates
# Fictional companies: name, ticker, sector; listed sector by sector, which fixes the order draws see.
COMPANIES: list[tuple[str, str, str]] = [
    (name, ticker, sector) for sector, entry in SECTORS.items() for name, ticker in entry["companies"].items()
]
TEMPLATES: dict[str, list[str]] = VOCABULARY["templates"]
HARD: dict[str, list[str]] = VOCABULARY["hard"]  # the rules in README.md decide these labels
WORD_SLOTS: dict[str, list[str]] = VOCABULARY["slots"]  # slots filled with one option of their list
MONTHS: list[str] = VOCABULARY["months"]
SOURCES: list[str] = VOCABULARY["sources"]


def _pct(rng: random.Random) -> str:
    value = rng.choice([rng.randint(2, 40), rng.randint(2, 40), round(rng.uniform(1, 15), 1)])
    return f"{value}{rng.choice(['%', '%', '%', ' percent'])}"


def _amt(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(["${}M", "${} million"]).format(rng.randrange(20, 950, 5))
    return rng.choice(["${}B", "${} billion", "${}bn"]).format(round(rng.uniform(1.1, 12), 1))


def _date(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"


def _eps(rng: random.Random, kind: str) -> str:
    """Reported EPS against the consensus, consistent with the wording: 'beat', 'miss' or 'match'."""
    consensus = rng.randint(8, 320)
    if kind == "match":
        return f"${consensus / 100:.2f} {rng.choice(['matches consensus', 'in line with estimates'])}"
    gap = rng.randint(1, max(2, consensus // 5))
    reported = consensus + gap if kind == "beat" else consensus - gap
    verb = rng.choice(["tops", "beats"]) if kind == "beat" else rng.choice(["misses", "trails"])
    return f"${reported / 100:.2f} {verb} the ${consensus / 100:.2f} consensus"


# Slots drawn and formatted here; the other slots come from WORD_SLOTS or the headline's company.
NUMBER_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "pct": _pct,
    "amt": _amt,
    "date": _date,
    "far_year": lambda rng: str(rng.randint(2029, 2036)),
    "price": lambda rng: f"${rng.choice([rng.randint(8, 95), rng.randrange(100, 480, 5)])}",
    "eps_beat": lambda rng: _eps(rng, "beat"),
    "eps_miss": lambda rng: _eps(rng, "miss"),
    "eps_match": lambda rng: _eps(rng, "match"),
    "qn": lambda rng: str(rng.randint(1, 4)),
    "div": lambda rng: f"${rng.randint(5, 120) / 100:.2f}",
    "n": lambda rng: f"{rng.choice([rng.randrange(150, 950, 50), rng.randrange(1000, 12000, 100)]):,}",
    "n2": lambda rng: str(rng.randrange(12, 180, 3)),
}


def mention(rng: random.Random, name: str, ticker: str) -> str:
    """How a headline names the company: plain name, name (TICKER), $TICKER or TICKER."""
    return rng.choices([name, f"{name} ({ticker})", f"${ticker}", ticker], weights=[45, 15, 25, 15])[0]


def fill(rng: random.Random, template: str, company: tuple[str, str, str]) -> str:
    """Fill every {slot} of a template; each occurrence is drawn on its own."""
    name, ticker, sector = company
    metrics, products = SECTORS[sector]["metrics"], SECTORS[sector]["products"]
    other = rng.choice([c for c in COMPANIES if c[0] != name])[0]

    def value(match: re.Match[str]) -> str:
        slot = match.group(1)
        specific = {
            "co": lambda: mention(rng, name, ticker),
            "name": lambda: name,
            "poss": lambda: name + ("'" if name.endswith("s") else "'s"),
            "co2": lambda: other,
            "metric": lambda: rng.choice(metrics),
            "product": lambda: rng.choice(products),
        }
        if slot in specific:
            return specific[slot]()
        if slot in WORD_SLOTS:
            return rng.choice(WORD_SLOTS[slot])
        return NUMBER_SLOTS[slot](rng)

    text = re.sub(r"\{(\w+)\}", value, template)
    return text[0].upper() + text[1:]


def style(rng: random.Random, text: str, ticker: str) -> str:
    """Feed-style variation: a cashtag prefix, title or lower case, a source tag or a short link."""
    if rng.random() < 0.1 and ticker not in text:
        text = f"${ticker} - {text}"
    roll = rng.random()
    if roll < 0.15:
        small = {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to"}
        words = text.split(" ")
        text = " ".join(w if (w in small and i) or not w[:1].islower() else w.capitalize() for i, w in enumerate(words))
    elif roll < 0.2:
        text = text.lower()
    roll = rng.random()
    if roll < 0.12:
        text += f" - {rng.choice(SOURCES)}"
    elif roll < 0.2:
        text += " https://t.co/" + "".join(rng.choices(LINK_CHARS, k=10))
    return text


def headline(rng: random.Random, label: str, hard: bool) -> str:
    company = rng.choice(COMPANIES)
    sector_templates = SECTORS[company[2]].get("templates", {}).get(label, [])
    if hard:
        template = rng.choice(HARD[label])
    elif sector_templates and rng.random() < SECTOR_FRACTION:
        template = rng.choice(sector_templates)
    else:
        template = rng.choice(TEMPLATES[label])
    return style(rng, fill(rng, template, company), company[1])


def normal_form(text: str) -> str:
    """What counts as the same headline: case, punctuation, a cashtag prefix, links and sources aside."""
    text = re.sub(r"^\$[A-Za-z]+ - ", "", text)
    text = re.sub(r" (https://\S+|- (" + "|".join(map(re.escape, SOURCES)) + "))$", "", text)
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    per_split: dict[str, dict[str, list[str]]] = {split: {} for split in PER_LABEL}
    total = sum(PER_LABEL.values())
    for label in LABELS:
        hard_count = round(total * HARD_FRACTION)
        texts: list[str] = []
        while len(texts) < total:
            text = headline(rng, label, hard=len(texts) < hard_count)
            if normal_form(text) not in seen:
                seen.add(normal_form(text))
                texts.append(text)
        rng.shuffle(texts)
        start = 0
        for split, count in PER_LABEL.items():
            per_split[split][label] = texts[start : start + count]
            start += count
    out: dict[str, list[dict[str, str]]] = {}
    next_id = 1
    for split in PER_LABEL:
        if split == "train":
            # Blocks of one headline per label, in random order: every prefix of the file is balanced.
            blocks = [[(label, per_split[split][label][i]) for label in LABELS] for i in range(PER_LABEL[split])]
            for block in blocks:
                rng.shuffle(block)
            pairs = [pair for block in blocks for pair in block]
        else:
            pairs = [(label, text) for label in LABELS for text in per_split[split][label]]
            rng.shuffle(pairs)
        out[split] = []
        for label, text in pairs:
            out[split].append({"id": f"S-{next_id:05d}", "text": text, "label": label})
            next_id += 1
    return out


def main() -> None:
    args = parse_args(__file__, __doc__.splitlines()[0], DEFAULT_SEED)
    write_jsonl_files(args.out, generate(args.seed))


if __name__ == "__main__":
    main()
