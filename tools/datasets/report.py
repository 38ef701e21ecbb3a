"""Generate the bundled ``report`` sample data: maintenance reports and maintenance Q&A (alpaca format).

Six asset classes (motor, pump, conveyor, compressor, gearbox, hydraulic press) with three failure modes each.
Every failure mode has one likely cause and one corrective action, so a report's cause and action follow from
its asset class and failure type; everything else in a report (asset id, line, downtime, technician, date) is
copied from the input. Four kinds of record:

- report (40%): instruction "Generate a maintenance report for motor failure.", input "Motor ID: M-123, Failure
  type: Bearing wear, ..." -> an eight-line "Key: value" report;
- log question (30%): a one-line log entry plus a question about it (downtime, technician, asset, failure, date);
- cause question (15%) and action question (15%): "What is the likely cause of seal leak on a pump?".

The asset classes, failure modes, technicians and phrasings live in report.yaml next to this script; sampling
and rendering are here. Standard library and PyYAML (an ftkit dependency) only, and deterministic: the same seed
writes byte-identical files.

    python tools/datasets/report.py                 # rewrites train/validation/test.jsonl in recipes/data/report/
    python tools/datasets/report.py --out /tmp/r --seed 7
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from _common import load_vocabulary, parse_args, quotas, write_jsonl_files

DEFAULT_SEED = 20240613
SPLITS = {"test": 40, "validation": 24, "train": 240}  # drawn in this order: held-out splits pick first
KINDS = [("report", 0.40), ("log", 0.30), ("cause", 0.15), ("action", 0.15)]

VOCABULARY = load_vocabulary(__file__)
# class -> id_prefix, id_digits, failure_modes (failure, cause, action_taken, action_to_take)
ASSETS: dict[str, dict[str, Any]] = VOCABULARY["assets"]
TECHNICIANS: list[str] = VOCABULARY["technicians"]
REPORT_ASKS: list[str] = VOCABULARY["report_asks"]
LOG_QUESTIONS: list[tuple[str, str]] = list(VOCABULARY["log_questions"].items())  # (question, answer template)
CAUSE_ASKS: list[str] = VOCABULARY["cause_asks"]
ACTION_ASKS: list[str] = VOCABULARY["action_asks"]


def incident(rng: random.Random) -> dict[str, str]:
    """One failure event: an asset, its failure mode, and the circumstances a report copies."""
    cls = rng.choice(sorted(ASSETS))
    asset = ASSETS[cls]
    mode = rng.choice(asset["failure_modes"])
    failure = mode["failure"]
    digits = asset["id_digits"]
    number = rng.randint(10 ** (digits - 1), 10**digits - 1)
    return {
        "cls": cls,
        "Cls": cls[0].upper() + cls[1:],
        "asset": f"{asset['id_prefix']}-{number}",
        "failure": failure,
        "Failure": failure[0].upper() + failure[1:],
        "cause": mode["cause"],
        "done": mode["action_taken"],
        "todo": mode["action_to_take"],
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


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    """The three splits. No record repeats, within or across splits; cause and action questions do share their
    answers (18 failure modes), so held-out ones test recall of the failure-mode table under new wording."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, count in SPLITS.items():
        records = []
        for kind, quota in quotas(count, KINDS).items():
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
    args = parse_args(__file__, __doc__.splitlines()[0], DEFAULT_SEED)
    write_jsonl_files(args.out, generate(args.seed))


if __name__ == "__main__":
    main()
