"""Generate the bundled ``tickets`` sample data set (synthetic maintenance work requests).

Every ticket is expanded from a small template grammar: a category picks a component family (its
components, symptoms and actions) and a template, slots such as ``{mach}`` or ``{psi_h}`` are filled from
pools, and a noise pass adds abbreviations, typos, case and whitespace changes. About one in eight tickets
of each category (``HARD_FRACTION``) is "hard": its wording borrows another category's vocabulary (a guard
missing on a hydraulic press is Safety/Facilities, a burnt solenoid coil is Electrical);
recipes/data/tickets/README.md lists the routing rules.

The grammar (assets, slots, templates, families, abbreviations) lives in tickets.yaml next to this script;
the sampling, expansion and noise passes are here. Standard library and PyYAML (an ftkit dependency) only,
and deterministic: the same seed writes byte-identical files.

    python tools/datasets/tickets.py                 # rewrites train/validation/test.jsonl in recipes/data/tickets/
    python tools/datasets/tickets.py --out /tmp/t --seed 7
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _common import load_vocabulary, parse_args, write_jsonl_files

DEFAULT_SEED = 20240611
SPLITS: tuple[tuple[str, int], ...] = (("train", 600), ("validation", 80), ("test", 120))
# Tickets per label over all splits; each total is a multiple of 20 so the 75/10/15 split is exact.
LABEL_TOTALS: dict[str, int] = {
    "Mechanical": 180,
    "Electrical": 160,
    "Hydraulic/Pneumatic": 160,
    "Software/Controls": 160,
    "Safety/Facilities": 140,
}
MIN_WORDS = 4
HARD_FRACTION = 0.12  # share of each label's tickets drawn from cross-vocabulary ("hard") families
# Distractor rates for regular tickets. Tuned down (from 0.2 / 0.4 / 0.3) so that SmolLM2-135M can learn the
# routing within the default CPU run's few minutes; at the higher rates it stayed below 0.8 accuracy.
LANDMARK_SHARE = 0.1  # "next to HPU-3A": a landmark that often names another category's equipment
RULED_OUT_SHARE = 0.15  # "breaker is fine": a clause about another category that was checked
TRIED_SHARE = 0.2  # a sentence about what was tried, or a general remark

# Slots drawn again at every use; all others keep one value for the whole ticket.
FRESH = frozenset({"n1", "n2", "n3", "let", "hh", "mm"})
# Context slots that the optional prefix / suffix sentences do not repeat once the body used them.
CONTEXT_SLOTS = ("line", "urg", "person", "when", "since", "shift")

Scope = Mapping[str, Sequence[str]]  # slot name -> its options


@dataclass(frozen=True)
class Category:
    label: str
    slots: Scope  # category defaults: mach, act, tried, ...
    templates: Sequence[str]  # at least 15, fit every family of the category
    groups: Sequence[Scope]  # component families: comp, sym, act, optional tpl / only_tpl
    hard: Sequence[Scope]  # cross-vocabulary families, each with its own tpl list


def global_slots(vocabulary: Mapping[str, Any]) -> dict[str, Sequence[str]]:
    """The ``global`` slots plus three per asset kind: ``{kind}`` (a mention), ``{kind}_name`` and ``{kind}_id``."""
    slots: dict[str, Sequence[str]] = {}
    for kind, asset in vocabulary["assets"].items():
        slots[kind] = [form.replace("{asset_", f"{{{kind}_") for form in vocabulary["asset_mentions"]]
        slots[f"{kind}_name"] = asset["names"]
        slots[f"{kind}_id"] = asset["ids"]
    return {**slots, **vocabulary["global"]}


VOCABULARY = load_vocabulary(__file__)
GLOBAL = global_slots(VOCABULARY)
SHARED_TEMPLATES: Sequence[str] = VOCABULARY["shared_templates"]
CATEGORIES: tuple[Category, ...] = tuple(Category(**category) for category in VOCABULARY["categories"])
SHARED_OBJECTS: Sequence[Scope] = VOCABULARY["shared_objects"]
SHARED_HARD_TEMPLATES: Sequence[str] = VOCABULARY["shared_hard_templates"]
ABBREVIATIONS: Mapping[str, Sequence[str]] = VOCABULARY["abbreviations"]

_SLOT_RE = re.compile(r"\{(\w+)\}")


class Expander:
    """Fills ``{slot}`` references from the first scope that defines them, recursively."""

    def __init__(self, rng: random.Random, scopes: Sequence[Scope]) -> None:
        self.rng = rng
        self.scopes = scopes
        self.cache: dict[str, str] = {}

    def _lookup(self, name: str) -> Sequence[str]:
        for scope in self.scopes:
            if name in scope:
                return scope[name]
        raise KeyError(f"unknown slot {{{name}}}")

    def _slot(self, name: str, depth: int) -> str:
        if name in FRESH or name not in self.cache:
            text = self.expand(self.rng.choice(self._lookup(name)), depth + 1)
            if name in FRESH:
                return text
            self.cache[name] = text
        return self.cache[name]

    def expand_fresh(self, name: str) -> str:
        """Expand one option of slot ``name`` that repeats no context slot the ticket already used."""
        used = [f"{{{k}}}" for k in CONTEXT_SLOTS if k in self.cache]
        return self.expand(self.rng.choice([o for o in self._lookup(name) if not any(u in o for u in used)]))

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > 10:
            raise RecursionError(f"slot recursion too deep in {text!r}")
        return _SLOT_RE.sub(lambda m: self._slot(m.group(1), depth), text)


_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'/-]*")
_TYPO_RE = re.compile(r"\b[a-z]{4,}\b", re.IGNORECASE)


def _abbreviate(rng: random.Random, text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        word = m.group(0)
        options = ABBREVIATIONS.get(word.lower())
        if options is None or rng.random() < 0.4:
            return word
        return rng.choice(options)

    return _WORD_RE.sub(sub, text)


def _typo(rng: random.Random, text: str) -> str:
    words = list(_TYPO_RE.finditer(text))
    if not words:
        return text
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 1)
    kind = rng.random()
    if kind < 0.45 and w[i] != w[i + 1]:
        w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]  # swap two neighbours
    elif kind < 0.8:
        w = w[:i] + w[i + 1 :]  # drop one
    else:
        w = w[:i] + w[i] + w[i:]  # double one
    return text[: m.start()] + w + text[m.end() :]


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.?!])", r"\1", text)
    text = re.sub(r"([.?!])[.,]+", r"\1", text)
    text = re.sub(r",\s*,", ",", text)
    return text.strip(" ,-")


def _noise(rng: random.Random, text: str) -> str:
    if rng.random() < 0.3:
        text = _tidy(_abbreviate(rng, text))
    if rng.random() < 0.13:
        for _ in range(rng.choice((1, 1, 2))):
            text = _typo(rng, text)
    r = rng.random()
    if r < 0.3 and text.endswith("."):
        text = text[:-1]  # missing final full stop
    elif r < 0.38:
        text = re.sub(r"(?<!\d)[.,](?!\d)", "", text)  # no punctuation at all (keeps 0.35, 3.5)
    r = rng.random()
    if r < 0.06:
        text = text.upper()
    elif r < 0.18:
        text = text.lower()
    elif r < 0.75:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.07:
        spaces = [i for i, c in enumerate(text) if c == " "]
        if spaces:
            i = rng.choice(spaces)
            text = text[:i] + rng.choice(("  ", "   ")) + text[i:]
    if rng.random() < 0.03:
        text += " "
    return text


def make_ticket(rng: random.Random, cat: Category, hard: bool) -> str:
    group: Scope
    if hard and rng.random() < 0.6:
        obj = rng.choice([o for o in SHARED_OBJECTS if cat.label in o])
        mach = obj.get(f"mach:{cat.label}", obj["mach"])
        group = {"obj": obj["obj"], "sym": obj[cat.label], "mach": mach}
        template = rng.choice(SHARED_HARD_TEMPLATES)
    elif hard:
        group = rng.choice(cat.hard)
        template = rng.choice(group["tpl"])
    else:
        group = rng.choice(cat.groups)
        own = group.get("tpl", ())
        if "only_tpl" in group:
            pool = list(own)
        elif rng.random() < 0.35:
            pool = list(SHARED_TEMPLATES)
        else:
            pool = list(cat.templates) + list(own) * 2
        template = rng.choice(pool)
    if not hard and rng.random() < LANDMARK_SHARE:
        # say where the asset is; the landmark often names another category's equipment
        m = re.search(r"\{(mach|locp|loc)\}", template)
        if m:
            where = rng.choice((" {where}", " ({where})", ", {where},"))
            template = template[: m.end()] + where + template[m.end() :]
    expander = Expander(rng, (group, cat.slots, GLOBAL))
    body = expander.expand(template)
    parts = [expander.expand_fresh("pre"), body]
    if rng.random() < (0.12 if hard else RULED_OUT_SHARE):
        parts.append(", " + expander.expand("{ruled}"))
    if rng.random() < TRIED_SHARE:
        parts.append(". " + expander.expand_fresh(rng.choice(("tried", "tried_any"))))
    parts.append(expander.expand_fresh("post"))
    return _noise(rng, _tidy("".join(parts)))


def _key(text: str) -> str:
    """Near-duplicate key: case, spacing and punctuation do not make a ticket new."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def build(seed: int) -> dict[str, list[dict[str, str]]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    by_label: dict[str, list[str]] = {}
    for cat in CATEGORIES:
        total = LABEL_TOTALS[cat.label]
        n_hard = round(total * HARD_FRACTION)
        texts: list[str] = []
        for hard in [True] * n_hard + [False] * (total - n_hard):
            for _ in range(1000):
                text = make_ticket(rng, cat, hard)
                if len(text.split()) >= MIN_WORDS and _key(text) not in seen:
                    break
            else:
                raise RuntimeError(f"could not draw a new {cat.label} ticket")
            seen.add(_key(text))
            texts.append(text)
        rng.shuffle(texts)
        by_label[cat.label] = texts

    # Stratified split: every label keeps the same share in every split (largest remainder).
    n_all = sum(n for _, n in SPLITS)
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name, _ in SPLITS}
    for label, texts in by_label.items():
        quotas = [len(texts) * n / n_all for _, n in SPLITS]
        counts = [int(q) for q in quotas]
        order = sorted(range(len(SPLITS)), key=lambda i: counts[i] - quotas[i])
        for i in order[: len(texts) - sum(counts)]:
            counts[i] += 1
        start = 0
        for (name, _), count in zip(SPLITS, counts, strict=True):
            splits[name].extend((text, label) for text in texts[start : start + count])
            start += count

    out: dict[str, list[dict[str, str]]] = {}
    next_id = 1
    for name, size in SPLITS:
        rows = splits[name]
        if len(rows) != size:
            raise RuntimeError(f"{name}: {len(rows)} records, expected {size}")
        rng.shuffle(rows)
        out[name] = []
        for text, label in rows:
            out[name].append({"id": f"T-{next_id:05d}", "text": text, "label": label})
            next_id += 1
    return out


def main() -> None:
    args = parse_args(__file__, __doc__.splitlines()[0], DEFAULT_SEED)
    write_jsonl_files(args.out, build(args.seed))


if __name__ == "__main__":
    main()
