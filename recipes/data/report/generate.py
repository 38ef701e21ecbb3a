"""Generate the bundled ``report`` sample data: maintenance reports and maintenance Q&A (alpaca format).

Six asset classes (motor, pump, conveyor, compressor, gearbox, hydraulic press) with three failure modes each.
Every failure mode has one likely cause and one corrective action, so a report's cause and action follow from
its asset class and failure type; everything else in a report (asset id, line, downtime, technician, date) is
copied from the input. Four kinds of record:

- report (40%): instruction "Generate a maintenance report for motor failure.", input "Motor ID: M-123, Failure
  type: Bearing wear, ..." -> an eight-line "Key: value" report;
- log question (30%): a one-line log entry plus a question about it (downtime, technician, asset, failure, date);
- cause question (15%) and action question (15%): "What is the likely cause of seal leak on a pump?".

Standard library only and deterministic: the same seed writes byte-identical files.

    python recipes/data/report/generate.py                 # writes train/validation/test.jsonl next to itself
    python recipes/data/report/generate.py --out /tmp/r --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_SEED = 20240613
SPLITS = {"test": 40, "validation": 24, "train": 240}  # drawn in this order: held-out splits pick first
KINDS = [("report", 0.40), ("log", 0.30), ("cause", 0.15), ("action", 0.15)]

# class -> (id prefix, id digits, [(failure, likely cause, action taken, action to take)])
ASSETS: dict[str, tuple[str, int, list[tuple[str, str, str, str]]]] = {
    "motor": (
        "M",
        3,
        [
            (
                "bearing wear",
                "insufficient lubrication",
                "replaced the drive-end bearing and regreased",
                "replace the drive-end bearing and regrease",
            ),
            (
                "winding insulation failure",
                "moisture in the stator windings",
                "rewound the stator and dried the motor",
                "rewind the stator and dry the motor",
            ),
            (
                "overheating",
                "a blocked cooling fan cover",
                "cleaned the fan cover and checked the load current",
                "clean the fan cover and check the load current",
            ),
        ],
    ),
    "pump": (
        "P",
        3,
        [
            ("seal leak", "worn mechanical seal faces", "replaced the mechanical seal", "replace the mechanical seal"),
            ("cavitation", "a clogged suction strainer", "cleaned the suction strainer", "clean the suction strainer"),
            ("impeller wear", "abrasive particles in the fluid", "replaced the impeller", "replace the impeller"),
        ],
    ),
    "conveyor": (
        "CV",
        2,
        [
            (
                "belt misalignment",
                "worn tail pulley lagging",
                "adjusted the tracking idlers and relagged the tail pulley",
                "adjust the tracking idlers and relag the tail pulley",
            ),
            (
                "belt tear",
                "a sharp object caught at the loading point",
                "spliced the belt and cleared the chute",
                "splice the belt and clear the chute",
            ),
            ("roller seizure", "failed roller bearings", "replaced the seized rollers", "replace the seized rollers"),
        ],
    ),
    "compressor": (
        "C",
        2,
        [
            ("high discharge temperature", "a fouled aftercooler", "cleaned the aftercooler", "clean the aftercooler"),
            (
                "oil carry-over",
                "a saturated separator element",
                "replaced the separator element",
                "replace the separator element",
            ),
            ("pressure drop", "a leaking inlet valve", "replaced the inlet valve", "replace the inlet valve"),
        ],
    ),
    "gearbox": (
        "GB",
        2,
        [
            (
                "oil leak",
                "a hardened output shaft seal",
                "replaced the output shaft seal and topped up the oil",
                "replace the output shaft seal and top up the oil",
            ),
            (
                "gear tooth wear",
                "contaminated gear oil",
                "replaced the gear set and flushed the oil",
                "replace the gear set and flush the oil",
            ),
            (
                "excessive vibration",
                "loose mounting bolts",
                "retorqued the mounting bolts and checked alignment",
                "retorque the mounting bolts and check alignment",
            ),
        ],
    ),
    "hydraulic press": (
        "HP",
        2,
        [
            ("pressure loss", "worn main cylinder seals", "replaced the cylinder seals", "replace the cylinder seals"),
            (
                "hose burst",
                "a hose past its service life",
                "replaced the hose and checked the routing",
                "replace the hose and check the routing",
            ),
            ("slow ram movement", "a clogged return filter", "replaced the return filter", "replace the return filter"),
        ],
    ),
}
TECHNICIANS = [
    "J. Ortiz",
    "K. Brandt",
    "A. Novak",
    "S. Okafor",
    "M. Tanaka",
    "L. Fischer",
    "R. Singh",
    "E. Costa",
    "D. Kowalczyk",
    "H. Larsen",
    "P. Moreau",
    "T. Nguyen",
]
REPORT_ASKS = [
    "Generate a maintenance report for {cls} failure.",
    "Write a maintenance report for this {cls} failure.",
    "Draft the maintenance report for the {cls} below.",
]
LOG_QUESTIONS = [
    ("How long was the downtime?", "The downtime was {hours} h."),
    ("Who repaired it?", "{tech} repaired it."),
    ("Which asset failed?", "{asset}, a {cls}."),
    ("What was the failure?", "{Failure}."),
    ("When did it happen?", "On {date}."),
]

CAUSE_ASKS = [
    "What is the likely cause of {f} on a {c}?",
    "A {c} shows {f}. What is the likely cause?",
    "What usually causes {f} on a {c}?",
    "Why would a {c} have {f}?",
]
ACTION_ASKS = [
    "How do you fix {f} on a {c}?",
    "What is the corrective action for {f} on a {c}?",
    "A {c} has {f}. What should maintenance do?",
    "Recommend a repair for {f} on a {c}.",
]


def incident(rng: random.Random) -> dict[str, str]:
    """One failure event: an asset, its failure mode, and the circumstances a report copies."""
    cls = rng.choice(sorted(ASSETS))
    prefix, digits, modes = ASSETS[cls]
    failure, cause, done, todo = rng.choice(modes)
    number = rng.randint(10 ** (digits - 1), 10**digits - 1)
    return {
        "cls": cls,
        "Cls": cls[0].upper() + cls[1:],
        "asset": f"{prefix}-{number}",
        "failure": failure,
        "Failure": failure[0].upper() + failure[1:],
        "cause": cause,
        "done": done,
        "todo": todo,
        "line": str(rng.randint(1, 6)),
        "hours": str(rng.randint(1, 9)),
        "tech": rng.choice(TECHNICIANS),
        "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def report(rng: random.Random) -> dict[str, str]:
    e = incident(rng)
    fields = [
        f"{e['Cls']} ID: {e['asset']}",
        f"Failure type: {e['Failure']}",
        f"Line: {e['line']}",
        f"Downtime: {e['hours']} h",
        f"Technician: {e['tech']}",
    ]
    if rng.random() < 0.3:  # the fields do not always come in the same order
        rng.shuffle(fields)
    output = "\n".join(
        [
            f"Maintenance report: {e['asset']} ({e['cls']})",
            f"Line: {e['line']}",
            f"Failure: {e['failure']}",
            f"Likely cause: {e['cause']}",
            f"Action taken: {e['done']}",
            f"Downtime: {e['hours']} h",
            f"Technician: {e['tech']}",
            "Status: returned to service",
        ]
    )
    return {"instruction": rng.choice(REPORT_ASKS).format(cls=e["cls"]), "input": ", ".join(fields), "output": output}


def log_question(rng: random.Random) -> dict[str, str]:
    e = incident(rng)
    question, answer = rng.choice(LOG_QUESTIONS)
    entry = (
        f"Log: {e['date']}, {e['asset']} ({e['cls']}), {e['failure']}, downtime {e['hours']} h, "
        f"repaired by {e['tech']}."
    )
    return {
        "instruction": "Answer the question using the maintenance log entry.",
        "input": f"{entry}\nQuestion: {question}",
        "output": answer.format(**e),
    }


def cause_question(rng: random.Random) -> dict[str, str]:
    e = incident(rng)
    ask = rng.choice(CAUSE_ASKS)
    return {
        "instruction": ask.format(f=e["failure"], c=e["cls"]),
        "input": "",
        "output": f"The likely cause is {e['cause']}.",
    }


def action_question(rng: random.Random) -> dict[str, str]:
    e = incident(rng)
    ask = rng.choice(ACTION_ASKS)
    return {
        "instruction": ask.format(f=e["failure"], c=e["cls"]),
        "input": "",
        "output": f"The usual action is to {e['todo']}.",
    }


MAKERS: dict[str, Callable[[random.Random], dict[str, str]]] = {
    "report": report,
    "log": log_question,
    "cause": cause_question,
    "action": action_question,
}


def quotas(count: int) -> dict[str, int]:
    """Records per kind for a split of count records (largest remainder)."""
    exact = {kind: count * share for kind, share in KINDS}
    result = {kind: int(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: exact[k] - result[k], reverse=True)[: count - sum(result.values())]:
        result[kind] += 1
    return result


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    """The three splits. No record repeats, within or across splits; cause and action questions do share their
    answers (18 failure modes), so held-out ones test recall of the failure-mode table under new wording."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, count in SPLITS.items():
        records = []
        for kind, quota in quotas(count).items():
            made = 0
            while made < quota:
                record = MAKERS[kind](rng)
                key = json.dumps(record, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                records.append(record)
                made += 1
        rng.shuffle(records)
        splits[split] = records
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in generate(args.seed).items():
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{split}.jsonl: {len(records)} records")


if __name__ == "__main__":
    main()
