"""Generate the bundled ``ner`` sample data set: short clinical sentences with disease mentions, in BIO format.

Each sentence comes from a template with slots: ``{D}`` a disease mention (a new disease each time), ``{D=}`` the
previous disease again (a repeated mention), ``{DA}`` a disease written out with its abbreviation in brackets
(two mentions), ``{A}`` an abbreviation alone; the other slots (symptoms, drugs, tests, ages, durations) are
never entities. Only the disease tokens are tagged (B-Disease / I-Disease, IOB2); everything else is O.
Some diseases appear only in the validation and test splits, so the test measures more than memorised names.

The diseases, pools and templates live in ner.yaml next to this script; sampling and tagging are here.
Standard library and PyYAML (an ftkit dependency) only, and deterministic: the same seed writes byte-identical
files.

    python tools/datasets/ner.py                    # rewrites train/validation/test.conll in recipes/data/ner/
    python tools/datasets/ner.py --out /tmp/ner --seed 7
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from _common import load_vocabulary, parse_args

DEFAULT_SEED = 20240917
SPLITS: tuple[tuple[str, int], ...] = (("train", 360), ("validation", 60), ("test", 120))
HELD_OUT_SHARE = 0.2  # in validation/test, the chance that a {D} slot draws a disease never seen in training
NO_PERIOD_SHARE = 0.1  # sentences that lose their final full stop (an entity can then end the sentence)
WITHOUT_DISEASE_SHARE = 0.25
TOKEN = re.compile(r"\w+|[^\w\s]")
SLOT = re.compile(r"\{(\w+=?)\}")

VOCABULARY = load_vocabulary(__file__)
# (name, abbreviation or None). Names are written as clinicians write them, lower case unless eponymous.
DISEASES: tuple[tuple[str, str | None], ...] = tuple(VOCABULARY["diseases"].items())
HELD_OUT: tuple[tuple[str, str | None], ...] = tuple(VOCABULARY["held_out"].items())  # only in validation and test
POOLS: dict[str, list[str]] = VOCABULARY["pools"]  # the slots that are never entities
WITH_DISEASE: list[str] = VOCABULARY["with_disease"]  # sentences with at least one disease mention
WITHOUT_DISEASE: list[str] = VOCABULARY["without_disease"]


def tokens_of(text: str) -> list[str]:
    return TOKEN.findall(text)


def render(template: str, rng: random.Random, diseases: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """(token, tag) pairs for one filled template."""
    pairs: list[tuple[str, str]] = []
    used: list[str] = []
    last = ""

    def entity(surface: str) -> None:
        words = tokens_of(surface)
        pairs.extend([(words[0], "B-Disease")] + [(w, "I-Disease") for w in words[1:]])

    for index, piece in enumerate(SLOT.split(template)):
        if index % 2 == 0:
            pairs.extend((token, "O") for token in tokens_of(piece))
            continue
        slot = piece.strip()
        if slot == "D=":
            entity(last)
        elif slot in ("D", "DA", "A"):
            choices = [d for d in diseases if d[0] not in used and (slot == "D" or d[1])]
            name, abbreviation = rng.choice(choices)
            used.append(name)
            if slot == "DA":
                entity(name)
                pairs.append(("(", "O"))
                entity(abbreviation)
                pairs.append((")", "O"))
                last = name
            else:
                use_abbreviation = slot == "A" or (abbreviation is not None and rng.random() < 0.15)
                last = abbreviation if use_abbreviation else name
                entity(last)
        else:
            pairs.extend((token, "O") for token in tokens_of(rng.choice(POOLS[slot])))
    first, tag = pairs[0]
    pairs[0] = (first[0].upper() + first[1:], tag)
    if rng.random() < NO_PERIOD_SHARE and pairs[-1][0] == ".":
        pairs.pop()
    return pairs


def disease_pool(rng: random.Random, split: str) -> list[tuple[str, str | None]]:
    """The diseases one sentence may draw from: held-out ones only outside train, and only sometimes."""
    if split != "train" and rng.random() < HELD_OUT_SHARE:
        return list(HELD_OUT) + list(DISEASES[: len(HELD_OUT)])  # keeps {D} {D} templates fillable
    return list(DISEASES)


def generate(seed: int) -> dict[str, list[list[tuple[str, str]]]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[list[tuple[str, str]]]] = {}
    for split, count in SPLITS:
        sentences: list[list[tuple[str, str]]] = []
        while len(sentences) < count:
            if rng.random() < WITHOUT_DISEASE_SHARE:
                sentence = render(rng.choice(WITHOUT_DISEASE), rng, [])
            else:
                sentence = render(rng.choice(WITH_DISEASE), rng, disease_pool(rng, split))
            key = " ".join(token.lower() for token, _ in sentence)
            if key not in seen:  # no sentence repeats, within or across splits
                seen.add(key)
                sentences.append(sentence)
        splits[split] = sentences
    return splits


def write(splits: dict[str, list[list[tuple[str, str]]]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, sentences in splits.items():
        blocks = ["\n".join(f"{token}\t{tag}" for token, tag in sentence) for sentence in sentences]
        (out / f"{split}.conll").write_text("\n\n".join(blocks) + "\n", encoding="utf-8", newline="\n")


def summary(splits: dict[str, list[list[tuple[str, str]]]]) -> str:
    held_out = {tuple(tokens_of(name.lower())) for name, _ in HELD_OUT} | {(a.lower(),) for _, a in HELD_OUT if a}
    rows = [
        "| split | sentences | tokens | mentions | sentences without one | held-out mentions |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for split, sentences in splits.items():
        mentions: Counter[str] = Counter()
        for sentence in sentences:
            words: list[str] = []
            for token, tag in [*sentence, ("", "O")]:
                if words and not tag.startswith("I-"):
                    mentions["held" if tuple(w.lower() for w in words) in held_out else "seen"] += 1
                    words = []
                if tag != "O":
                    words.append(token)
        empty = sum(all(tag == "O" for _, tag in sentence) for sentence in sentences)
        tokens = sum(map(len, sentences))
        total = mentions["held"] + mentions["seen"]
        rows.append(f"| {split} | {len(sentences)} | {tokens} | {total} | {empty} | {mentions['held']} |")
    return "\n".join(rows)


def main() -> None:
    args = parse_args(__file__, __doc__.splitlines()[0], DEFAULT_SEED)
    splits = generate(args.seed)
    write(splits, args.out)
    print(summary(splits))


if __name__ == "__main__":
    main()
