"""Generate the bundled ``ner`` sample data set: short clinical sentences with disease mentions, in BIO format.

Each sentence comes from a template with slots: ``{D}`` a disease mention (a new disease each time), ``{D=}`` the
previous disease again (a repeated mention), ``{DA}`` a disease written out with its abbreviation in brackets
(two mentions), ``{A}`` an abbreviation alone; the other slots (symptoms, drugs, tests, ages, durations) are
never entities. Only the disease tokens are tagged (B-Disease / I-Disease, IOB2); everything else is O.
Some diseases appear only in the validation and test splits, so the test measures more than memorised names.

Standard library only and deterministic: the same seed writes byte-identical files.

    python recipes/data/ner/generate.py                    # writes train/validation/test.conll next to itself
    python recipes/data/ner/generate.py --out /tmp/ner --seed 7
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path

DEFAULT_SEED = 20240917
SPLITS: tuple[tuple[str, int], ...] = (("train", 360), ("validation", 60), ("test", 120))
HELD_OUT_SHARE = 0.2  # in validation/test, the chance that a {D} slot draws a disease never seen in training
NO_PERIOD_SHARE = 0.1  # sentences that lose their final full stop (an entity can then end the sentence)
TOKEN = re.compile(r"\w+|[^\w\s]")
SLOT = re.compile(r"\{(\w+=?)\}")

# (name, abbreviation or None). Names are written as clinicians write them, lower case unless eponymous.
DISEASES: tuple[tuple[str, str | None], ...] = (
    ("type 2 diabetes mellitus", "T2DM"),
    ("type 1 diabetes", None),
    ("hypertension", None),
    ("chronic obstructive pulmonary disease", "COPD"),
    ("congestive heart failure", "CHF"),
    ("atrial fibrillation", "AF"),
    ("coronary artery disease", "CAD"),
    ("myocardial infarction", "MI"),
    ("chronic kidney disease", "CKD"),
    ("rheumatoid arthritis", "RA"),
    ("deep vein thrombosis", "DVT"),
    ("pulmonary embolism", "PE"),
    ("urinary tract infection", "UTI"),
    ("gastroesophageal reflux disease", "GERD"),
    ("multiple sclerosis", "MS"),
    ("systemic lupus erythematosus", "SLE"),
    ("asthma", None),
    ("pneumonia", None),
    ("sepsis", None),
    ("migraine", None),
    ("epilepsy", None),
    ("Parkinson disease", None),
    ("Alzheimer disease", None),
    ("Crohn disease", None),
    ("ulcerative colitis", None),
    ("hepatitis C", None),
    ("tuberculosis", None),
    ("breast cancer", None),
    ("lung cancer", None),
    ("colorectal cancer", None),
    ("prostate cancer", None),
    ("melanoma", None),
    ("acute myeloid leukemia", "AML"),
    ("iron deficiency anemia", None),
    ("hypothyroidism", None),
    ("osteoporosis", None),
    ("osteoarthritis", None),
    ("gout", None),
    ("psoriasis", None),
    ("celiac disease", None),
    ("cystic fibrosis", None),
    ("sickle cell disease", None),
    ("stroke", None),
    ("cirrhosis", None),
    ("acute pancreatitis", None),
    ("appendicitis", None),
    ("cellulitis", None),
    ("influenza", None),
    ("bacterial meningitis", None),
    ("infective endocarditis", None),
    ("obesity", None),
    ("major depressive disorder", "MDD"),
    ("schizophrenia", None),
    ("glaucoma", None),
    ("Hodgkin lymphoma", None),
    ("diverticulitis", None),
    ("peptic ulcer disease", "PUD"),
    ("obstructive sleep apnea", "OSA"),
)
# Only in validation and test.
HELD_OUT: tuple[tuple[str, str | None], ...] = (
    ("sarcoidosis", None),
    ("myasthenia gravis", None),
    ("acute pericarditis", None),
    ("ovarian cancer", None),
    ("hemochromatosis", None),
    ("Graves disease", None),
    ("bronchiectasis", None),
    ("idiopathic pulmonary fibrosis", "IPF"),
)
POOLS: dict[str, tuple[str, ...]] = {
    "S": (
        "fever",
        "cough",
        "chest pain",
        "shortness of breath",
        "headache",
        "nausea",
        "fatigue",
        "dizziness",
        "abdominal pain",
        "joint pain",
        "weight loss",
        "a rash",
        "palpitations",
        "back pain",
        "night sweats",
        "swelling of both legs",
        "blurred vision",
        "vomiting",
    ),
    "M": (
        "metformin",
        "lisinopril",
        "insulin",
        "aspirin",
        "warfarin",
        "atorvastatin",
        "amoxicillin",
        "prednisone",
        "levothyroxine",
        "salbutamol",
        "furosemide",
        "apixaban",
        "omeprazole",
        "methotrexate",
        "ceftriaxone",
    ),
    "T": (
        "chest X-ray",
        "CT scan",
        "MRI",
        "echocardiogram",
        "colonoscopy",
        "blood culture",
        "ECG",
        "biopsy",
        "ultrasound",
        "urinalysis",
        "spirometry",
    ),
    "age": tuple(str(n) for n in range(19, 91)),
    "sex": ("man", "woman", "male", "female", "patient"),
    "time": ("two days", "three days", "a week", "two weeks", "a month", "six months", "one year", "48 hours"),
    "rel": ("mother", "father", "sister", "brother", "grandmother", "uncle"),
    "n": tuple(str(n) for n in range(100, 181, 5)),  # systolic pressure, heart rate
    "dia": tuple(str(n) for n in range(55, 96, 5)),
}
# Sentences built from these have at least one disease mention.
WITH_DISEASE: tuple[str, ...] = (
    "A {age}-year-old {sex} with {D} presented with {S} .",
    "A {age}-year-old {sex} with a history of {D} and {D} was admitted with {S} .",
    "Patient has a history of {D} .",
    "Past medical history is significant for {D} , {D} and {D} .",
    "She was admitted with {S} and was diagnosed with {D} .",
    "He was diagnosed with {D} {time} ago .",
    "No evidence of {D} on {T} .",
    "{T} was consistent with {D} .",
    "{D} was treated with {M} .",
    "Started on {M} for {D} .",
    "Known {DA} , on {M} .",
    "Admitted with an exacerbation of {DA} .",
    "{A} exacerbation requiring {M} .",
    "History of {A} , stable on {M} .",
    "Family history is significant for {D} in his {rel} .",
    "Her {rel} had {D} .",
    "Her {D} is well controlled on {M} .",
    "Course complicated by {D} , which resolved with {M} .",
    "Rule out {D} versus {D} .",
    "Screening for {D} was recommended .",
    "Follow-up in {time} for {D} .",
    "Diagnosis : {D} .",
    "Final diagnosis : {D} with {D} .",
    "{D} was suspected and {T} confirmed {D=} .",
    "{D} is a known risk factor for {D} .",
    "The patient denies {S} but reports worsening {D} .",
    "Risk of {D} is increased in patients with {D} .",
    "{S} for {time} , likely due to {D} .",
    "Presented with {S} ; {T} showed {D} .",
    "Assessment : {D} ; known {D} is stable .",
    "Worsening {D} despite {M} .",
    "{D} and {D} are common in this population .",
    "Treated for {D} {time} ago , no recurrence of {D=} .",
)
WITHOUT_DISEASE: tuple[str, ...] = (
    "He denies {S} and {S} .",
    "{S} and {S} for {time} .",
    "{T} was unremarkable .",
    "The patient reports {S} since {time} .",
    "Blood pressure was {n} / {dia} mmHg .",
    "Continue {M} and follow up in {time} .",
    "{T} is scheduled for next week .",
    "A {age}-year-old {sex} presented with {S} and {S} .",
    "No acute distress ; {S} has improved .",
    "She was discharged home on {M} .",
    "Heart rate {n} , afebrile .",
    "Heart rate {dia} , blood pressure {n} / {dia} .",
    "Advised to stop {M} before the {T} .",
)
WITHOUT_DISEASE_SHARE = 0.25


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
        (out / f"{split}.conll").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    splits = generate(args.seed)
    write(splits, args.out)
    print(summary(splits))


if __name__ == "__main__":
    main()
