"""Generate the bundled ``sentiment`` sample data set: synthetic financial news headlines.

Each headline is a template for its label (negative, neutral, positive) with slots filled from pools: a fictional
company (name, ticker, sector), its sector's metrics and products, numbers (percentages, amounts, prices, EPS),
quarters, dates, fictional brokers and people. A share of each label are "hard" headlines whose words point the
other way ("narrows loss", "beats estimates but cuts outlook", "downgraded to neutral"); README.md lists the
rules that decide those labels. A style pass varies how the company is named ($TICKER, TICKER, name (TICKER)),
the case, and adds sources or short links.

Standard library only and deterministic: the same seed writes byte-identical files.

    python recipes/data/sentiment/generate.py                 # writes train/validation/test.jsonl next to itself
    python recipes/data/sentiment/generate.py --out /tmp/s --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

DEFAULT_SEED = 20241105
LABELS = ("negative", "neutral", "positive")
PER_LABEL = {"train": 200, "validation": 20, "test": 50}  # headlines per label in each split
HARD_FRACTION = 0.15  # share of each label's headlines drawn from the hard templates
SECTOR_FRACTION = 0.25  # share of regular headlines drawn from their company's sector templates, where it has some

# Fictional companies: name, ticker, sector. Any likeness to a listed company is not intended.
COMPANIES = [
    ("Northwind Systems", "NWSY", "tech"), ("Brightpath Software", "BRPS", "tech"), ("Quillon Data", "QDAT", "tech"),
    ("Halcyon Biotech", "HLCB", "biotech"), ("Veridia Therapeutics", "VRDT", "biotech"),
    ("Orison Pharma", "ORPH", "biotech"), ("Larkspur Retail", "LRKR", "retail"), ("Maple & Main", "MPMN", "retail"),
    ("Cobalt Outfitters", "CBLO", "retail"), ("Granite Peak Bancorp", "GPKB", "bank"),
    ("Harbor Trust Financial", "HBTF", "bank"), ("Eastgate Capital Bank", "EGCB", "bank"),
    ("Redstone Energy", "RDSE", "energy"), ("Tidewater Petroleum", "TDWP", "energy"),
    ("Solenne Power", "SLNP", "energy"), ("Vantor Motors", "VNTM", "auto"), ("Kestrel Automotive", "KSTA", "auto"),
    ("Skyreach Airlines", "SKRA", "airline"), ("Bluecrest Air", "BLCA", "airline"),
    ("Arcadia Semiconductor", "ARSC", "semis"), ("Nanoforge", "NNFG", "semis"),
    ("Ironclad Industries", "IRCL", "industrial"), ("Meridian Machines", "MRDM", "industrial"),
    ("Beacon Telecom", "BCNT", "telecom"), ("Ridgeline Wireless", "RDGW", "telecom"),
]  # fmt: skip
SECTORS: dict[str, tuple[list[str], list[str]]] = {  # sector: (metrics, products)
    "tech": (["cloud revenue", "subscription revenue", "bookings"], ["AI assistant", "new software suite"]),
    "biotech": (["drug sales", "product revenue"], ["lead cancer drug", "obesity treatment"]),
    "retail": (["same-store sales", "online sales", "holiday sales"], ["store-brand range", "loyalty app"]),
    "bank": (["net interest income", "loan growth", "trading revenue"], ["mobile banking app", "card unit"]),
    "energy": (["oil output", "refining margins", "production"], ["offshore project", "LNG terminal"]),
    "auto": (["deliveries", "vehicle sales", "EV sales"], ["electric pickup", "new compact SUV"]),
    "airline": (["passenger traffic", "bookings", "unit revenue"], ["premium cabin", "transatlantic routes"]),
    "semis": (["chip shipments", "data-center revenue"], ["next-gen GPU", "3nm processor"]),
    "industrial": (["order backlog", "equipment sales"], ["wind turbine line", "factory robots"]),
    "telecom": (["subscriber additions", "wireless revenue"], ["5G network", "fiber rollout"]),
}
FIRMS = ["Carver & Hale", "Brightline Securities", "Kessler Capital", "Oakmont Research", "Trident Partners",
         "Whitford Bank", "Lyle Stanton", "Pinecrest Advisors"]  # fmt: skip
PEOPLE = ["Dana Whitlock", "Arjun Mehta", "Claire Duval", "Tomas Reyes", "Mei Lin Zhao", "Owen Brennan", "Sofia Marin"]
EXECS = ["CEO", "CFO", "chief operating officer", "chief technology officer", "finance chief"]
CLIENTS = ["the Defense Department", "a European carrier", "a major retailer", "the state of Ohio", "a Gulf utility"]
CITIES = ["Austin", "Charlotte", "Denver", "Toronto", "Dublin", "Singapore", "Phoenix", "Atlanta"]
CONFERENCES = ["the Westbridge Tech", "the Harborview Healthcare", "the Summit Industrials", "the Northgate Consumer"]
SOURCES = ["MarketWire", "The Ledger", "FinDaily", "StreetDesk", "Capital Brief"]
MONTHS = ["Jan.", "Feb.", "March", "April", "May", "June", "July", "Aug.", "Sept.", "Oct.", "Nov.", "Dec."]
UP = ["jumps", "surges", "soars", "climbs", "rallies", "gains", "rises", "pops", "spikes", "advances"]
DOWN = ["falls", "drops", "slides", "sinks", "tumbles", "slumps", "plunges", "declines", "skids", "retreats"]
LINK_CHARS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
QWORDS = ["first-quarter", "second-quarter", "third-quarter", "fourth-quarter"]

TEMPLATES: dict[str, list[str]] = {
    "positive": [
        "{co} {up} {pct} after {qword} profit tops estimates",
        "{co} beats {q} earnings estimates; revenue up {pct}",
        "{co} raises full-year {metric} forecast",
        "{co} lifts {year} guidance as demand holds up",
        "{firm} upgrades {co} to buy, price target raised to {price}",
        "{firm} raises {co} price target to {price}",
        "{co} wins {amt} contract from {client}",
        "{co} reports record {metric} in {q}",
        "{co} boosts quarterly dividend by {pct}",
        "{co} announces {amt} share buyback",
        "{co} shares hit all-time high",
        "{co} {metric} up {pct}, beating forecasts",
        "{co} swings to {q} profit",
        "{co} profit more than doubles on strong {metric}",
        "{co} {up} as {firm} starts coverage at outperform",
        "{co} lands {amt} in new orders",
        "{co}: {metric} up {pct} year over year, above consensus",
        "{co} to be acquired by {co2} at a {pct} premium",
        "{co} {up} {pct} premarket on takeover interest",
        "{co} signs multiyear supply deal with {co2}",
        "{co} credit rating raised to investment grade",
        "{co} margins expand to {pct} as sales outpace costs",
        "{co} {q} EPS of {eps_beat}",
    ],
    "negative": [
        "{co} {down} {pct} after {qword} results miss estimates",
        "{co} misses {q} revenue estimates as {metric} growth slows",
        "{co} cuts {year} outlook, citing weak demand",
        "{firm} downgrades {co} to sell",
        "{firm} cuts {co} price target to {price}",
        "{co} to cut {n} jobs",
        "{co} issues recall over safety defect",
        "{co} {exec} resigns abruptly; shares {down}",
        "{co} faces regulatory probe over accounting practices",
        "{co} suspends dividend to preserve cash",
        "{co} {q} loss widens to {amt}",
        "{co} warns {metric} will fall short this year",
        "{co} files for Chapter 11 bankruptcy protection",
        "{co} loses {co2} as a customer",
        "{co} fined {amt} over misleading disclosures",
        "{co} credit rating cut to junk",
        "{co} shares hit 52-week low",
        "{co} {metric} down {pct}, worse than expected",
        "{co} delays launch of its {product} again",
        "{co} halts production at {city} plant after fire",
        "{co} sued by investors over misleading statements",
        "{co} {down} {pct} as short seller alleges fraud",
        "{co} {q} EPS of {eps_miss}",
    ],
    "neutral": [
        "{co} to report {qword} results on {date}",
        "{co} names {person} {exec}",
        "{co} sets investor day for {date}",
        "{firm} maintains hold on {co}, price target {price}",
        "{co} shares little changed in early trading",
        "{co} declares regular quarterly dividend of {div} per share",
        "{co} to present at {conf} conference",
        "{co} files {q} 10-Q with the SEC",
        "{co} annual meeting scheduled for {date}",
        "{co} moves headquarters to {city}",
        "What to watch when {co} reports {q} results",
        "{co} prices {amt} of senior notes due {far_year}",
        "{co} appoints {person} to board of directors",
        "{co} opens new office in {city}",
        "{co} Q{qn} {cyear} earnings call transcript",
        "{co} to hold {q} conference call on {date}",
        "{co} unveils new logo as part of rebrand",
        "{co} trades at {price} ahead of Fed decision",
        "{co} completes move of listing to Nasdaq",
        "{co} shareholders elect all directors at annual meeting",
        "{co} updates investor presentation",
        "{co} {q} EPS of {eps_match}",
    ],
}
HARD: dict[str, list[str]] = {  # the rules in README.md decide these labels
    "positive": [
        "{co} narrows {q} loss to {amt}",
        "{co} cuts net debt by {amt}",
        "{co} rebounds {pct} after last week's selloff",
        "{co} misses revenue estimates but raises full-year outlook",
        "{co} settles patent fight with {co2}",
        "{firm} says {co} selloff overdone, upgrades to buy",
        "{co} beats estimates despite weak {metric}",
        "{co} avoids strike as union approves new contract",
        "{co} no longer expects a loss this year",
        "Lower costs lift {poss} {q} margin to {pct}",
        "{co} {up} {pct} as short sellers retreat",
        "{co} {q} loss smaller than feared; shares {up}",
    ],
    "negative": [
        "{co} beats {q} estimates but cuts full-year guidance",
        "{co} profit rises {pct} but falls short of forecasts",
        "{co} {down} despite record {metric}",
        "{co} fails to win {client} contract",
        "{co} scraps {amt} buyback plan",
        "{co} raises doubts about its ability to continue as a going concern",
        "{firm} lowers {co} to neutral from buy",
        "{co} gives back early gains, closes down {pct}",
        "{co} no longer expects to turn a profit this year",
        "{co} rally fades after guidance underwhelms",
        "{poss} record revenue overshadowed by margin squeeze",
        "{co} raises {amt} in stock sale at a steep discount",
    ],
    "neutral": [
        "{co} reaffirms {year} outlook",
        "{co} shares flat after earnings match estimates",
        "{firm} reiterates neutral rating on {co}",
        "{co} revenue unchanged at {amt}",
        "Will {co} beat earnings estimates this week?",
        "{co} swings between gains and losses, ends flat",
        "{firm} initiates {co} at market perform",
        "{co} completes previously announced acquisition of {co2}",
        "Is {co} a buy after its {pct} rise?",
        "{co} {q} results in line; guidance maintained",
        "{co} stock: what the {pct} move means for investors",
        "{co} to announce {q} results before the bell",
    ],
}
SECTOR_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "biotech": {
        "positive": ["Regulators approve {poss} {product}", "{poss} {product} succeeds in late-stage trial"],
        "negative": ["{poss} {product} fails late-stage trial", "FDA rejects {poss} {product}"],
        "neutral": ["{co} to present trial data at medical meeting", "{co} starts enrolling patients in new study"],
    },
    "retail": {
        "positive": ["{co} holiday sales jump {pct}, topping forecasts"],
        "negative": ["{co} to close {n2} stores as sales slump"],
        "neutral": ["{co} to open flagship store in {city}"],
    },
    "auto": {
        "positive": ["{co} deliveries beat estimates on strong demand for its {product}"],
        "negative": ["{co} recalls {n} vehicles over brake defect"],
        "neutral": ["{co} to unveil its {product} at auto show"],
    },
    "airline": {
        "positive": ["{co} {up} as summer bookings hit record"],
        "negative": ["{co} cancels flights as pilots strike; shares {down}"],
        "neutral": ["{co} adds daily flights to {city}"],
    },
    "bank": {
        "positive": ["{co} passes stress test, plans bigger payout"],
        "negative": ["{co} sets aside {amt} for bad loans"],
        "neutral": ["{co} to redeem preferred shares on {date}"],
    },
    "energy": {
        "positive": ["{co} makes major oil discovery offshore"],
        "negative": ["{co} writes down {amt} on its {product}"],
        "neutral": ["{co} starts scheduled maintenance at refinery"],
    },
}


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


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "pct": _pct,
    "amt": _amt,
    "date": _date,
    "up": lambda rng: rng.choice(UP),
    "down": lambda rng: rng.choice(DOWN),
    "q": lambda rng: rng.choice(["Q1", "Q2", "Q3", "Q4", "first-quarter", "fourth-quarter", "quarterly"]),
    "qword": lambda rng: rng.choice(QWORDS),
    "year": lambda rng: rng.choice(["2024", "2025", "full-year", "annual", "FY25"]),
    "far_year": lambda rng: str(rng.randint(2029, 2036)),
    "firm": lambda rng: rng.choice(FIRMS),
    "price": lambda rng: f"${rng.choice([rng.randint(8, 95), rng.randrange(100, 480, 5)])}",
    "eps_beat": lambda rng: _eps(rng, "beat"),
    "eps_miss": lambda rng: _eps(rng, "miss"),
    "eps_match": lambda rng: _eps(rng, "match"),
    "qn": lambda rng: str(rng.randint(1, 4)),
    "cyear": lambda rng: rng.choice(["2024", "2025"]),
    "div": lambda rng: f"${rng.randint(5, 120) / 100:.2f}",
    "n": lambda rng: f"{rng.choice([rng.randrange(150, 950, 50), rng.randrange(1000, 12000, 100)]):,}",
    "n2": lambda rng: str(rng.randrange(12, 180, 3)),
    "exec": lambda rng: rng.choice(EXECS),
    "person": lambda rng: rng.choice(PEOPLE),
    "client": lambda rng: rng.choice(CLIENTS),
    "city": lambda rng: rng.choice(CITIES),
    "conf": lambda rng: rng.choice(CONFERENCES),
}


def mention(rng: random.Random, name: str, ticker: str) -> str:
    """How a headline names the company: plain name, name (TICKER), $TICKER or TICKER."""
    return rng.choices([name, f"{name} ({ticker})", f"${ticker}", ticker], weights=[45, 15, 25, 15])[0]


def fill(rng: random.Random, template: str, company: tuple[str, str, str]) -> str:
    """Fill every {slot} of a template; each occurrence is drawn on its own."""
    name, ticker, sector = company
    metrics, products = SECTORS[sector]
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
        return specific[slot]() if slot in specific else SLOTS[slot](rng)

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
    sector_templates = SECTOR_TEMPLATES.get(company[2], {}).get(label, [])
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder to write into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in generate(args.seed).items():
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        (args.out / f"{split}.jsonl").write_text(lines, encoding="utf-8")
        print(f"{split}: {len(records)} headlines -> {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
