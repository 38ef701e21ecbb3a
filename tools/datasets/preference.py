"""Generate the bundled ``preference`` sample data: preference pairs of maintenance reports (DPO).

Each record is a report request of the ``report`` data set with two answers: ``chosen``, the correct eight-line
report exactly as report.py writes it, and ``rejected``, the same report with exactly one flaw, which ``flaw``
names. Five flaw kinds, a fifth of each split each:

- missing_fields: one to three of the Line, Failure, Likely cause, Action taken, Downtime and Technician lines
  are left out;
- wrong_asset: the header names another id of the same asset class, or keeps the id and names another class;
- vague_action: "Action taken:" is a vague phrase ("fixed the problem") instead of the corrective action;
- wrong_cause: "Likely cause:" is the cause of another failure mode (of the same or another asset class);
- wrong_field: the line, the downtime or the technician differs from the input.

The prompt is the user turn of the request as the report recipe renders an alpaca record: the instruction, a blank
line, then the input. Requests, circumstances and the wrong values are drawn by report.py (imported from next to
this script) with report.yaml's vocabulary; preference.yaml holds only the vague action phrasings. Standard library
and PyYAML (an ftkit dependency) only, and deterministic: the same seed writes byte-identical files.

    python tools/datasets/preference.py      # rewrites train/validation/test.jsonl in recipes/data/preference/
    python tools/datasets/preference.py --out /tmp/p --seed 7
"""

from __future__ import annotations

import random
from collections.abc import Callable

from _common import load_vocabulary, parse_args, quotas, write_jsonl_files
from report import ASSETS, incident, report

DEFAULT_SEED = 20240614
SPLITS = {"test": 120, "validation": 40, "train": 120}  # drawn in this order: held-out splits pick first
KINDS = [
    ("missing_fields", 0.2),
    ("wrong_asset", 0.2),
    ("vague_action", 0.2),
    ("wrong_cause", 0.2),
    ("wrong_field", 0.2),
]
HEADER = "Maintenance report"  # the key of a report's first line: "Maintenance report: M-123 (motor)"
DROPPABLE = ["Line", "Failure", "Likely cause", "Action taken", "Downtime", "Technician"]  # missing_fields drops 1-3
# wrong_field: a report line -> its value as report.py renders it from the incident's fields
CHANGEABLE = {"Line": "{line}", "Downtime": "{hours} h", "Technician": "{tech}"}

VOCABULARY = load_vocabulary(__file__)
VAGUE_ACTIONS: list[str] = VOCABULARY["vague_actions"]
CAUSES: list[str] = [mode["cause"] for cls in sorted(ASSETS) for mode in ASSETS[cls]["failure_modes"]]  # 18


def fields_of(text: str) -> dict[str, str]:
    """A report's ``Key: value`` lines, in order."""
    return dict(line.split(": ", 1) for line in text.split("\n"))


def render(fields: dict[str, str]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in fields.items())


def redraw(rng: random.Random, template: str, current: str, cls: str | None = None) -> str:
    """Another value of an incident field (template over report.incident's keys), drawn as report.incident draws
    it; with cls, from an incident of that asset class."""
    while True:
        e = incident(rng)
        value = template.format(**e)
        if value != current and cls in (None, e["cls"]):
            return value


def missing_fields(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    dropped = rng.sample(DROPPABLE, rng.randint(1, 3))
    return {key: value for key, value in fields.items() if key not in dropped}


def wrong_asset(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    asset, cls = fields[HEADER].removesuffix(")").split(" (")
    if rng.random() < 0.5:
        asset = redraw(rng, "{asset}", asset, cls)
    else:
        cls = rng.choice([other for other in sorted(ASSETS) if other != cls])
    return {**fields, HEADER: f"{asset} ({cls})"}


def vague_action(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "Action taken": rng.choice(VAGUE_ACTIONS)}


def wrong_cause(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "Likely cause": rng.choice([cause for cause in CAUSES if cause != fields["Likely cause"]])}


def wrong_field(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    key = rng.choice(list(CHANGEABLE))
    return {**fields, key: redraw(rng, CHANGEABLE[key], fields[key])}


# Each changes at least one line of the report (or leaves it out), so rejected != chosen.
FLAWS: dict[str, Callable[[random.Random, dict[str, str]], dict[str, str]]] = {
    "missing_fields": missing_fields,
    "wrong_asset": wrong_asset,
    "vague_action": vague_action,
    "wrong_cause": wrong_cause,
    "wrong_field": wrong_field,
}


def pair(rng: random.Random, flaw: str) -> dict[str, str]:
    """A report request of report.py, its report, and the report with one flaw of the given kind."""
    request = report(rng)
    rejected = render(FLAWS[flaw](rng, fields_of(request["output"])))
    return {
        "prompt": f"{request['instruction']}\n\n{request['input']}",
        "chosen": request["output"],
        "rejected": rejected,
        "flaw": flaw,
    }


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    """The three splits. No prompt repeats, within or across splits; the 18 failure modes (and so the causes and
    actions of the chosen reports) are shared, a held-out prompt is a new combination of asset and circumstances."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, count in SPLITS.items():
        records = []
        for kind, quota in quotas(count, KINDS).items():
            made = 0
            while made < quota:
                record = pair(rng, kind)
                if record["prompt"] in seen:
                    continue
                seen.add(record["prompt"])
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
