"""Generate the bundled ``tickets`` sample data set (synthetic maintenance work requests).

Every ticket is expanded from a small template grammar: a category picks a component family (its
components, symptoms and actions) and a template, slots such as ``{mach}`` or ``{psi_h}`` are filled from
pools, and a noise pass adds abbreviations, typos, case and whitespace changes. A quarter of each category
are "hard" tickets whose wording borrows another category's vocabulary (a guard missing on a hydraulic
press is Safety/Facilities, a burnt solenoid coil is Electrical); README.md lists the routing rules.

Standard library only and deterministic: the same seed writes byte-identical files.

    python recipes/data/tickets/generate.py                 # writes train/validation/test.jsonl next to itself
    python recipes/data/tickets/generate.py --out /tmp/t --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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

Slot = Sequence[str] | Callable[[random.Random], str]
Scope = Mapping[str, object]


def _num(lo: int, hi: int, step: int = 1) -> Callable[[random.Random], str]:
    return lambda rng: str(rng.randrange(lo, hi + 1, step))


def _asset(key: str, names: Sequence[str], ids: Sequence[str]) -> dict[str, Slot]:
    """Slots for one kind of equipment: ``{key}`` (a rendered mention), ``{key}_name`` and ``{key}_id``."""
    forms = [
        f"{{{key}_id}}",
        f"{{{key}_id}}",
        f"{{{key}_id}}",
        f"{{{key}_id}}",
        f"{{{key}_name}} {{{key}_id}}",
        f"{{{key}_name}} {{{key}_id}}",
        f"{{{key}_id}} {{{key}_name}}",
        f"the {{{key}_name}} on {{line}}",
        f"{{line}} {{{key}_name}}",
        f"{{{key}_id}} ({{{key}_name}})",
        f"#{{n1}} {{{key}_name}}",
    ]
    return {key: forms, f"{key}_name": list(names), f"{key}_id": list(ids)}


# --------------------------------------------------------------------------------------------------------
# Shared slots: equipment, plant context, numbers with units
# --------------------------------------------------------------------------------------------------------

ASSETS: dict[str, Slot] = {
    **_asset(
        "conv",
        ["conveyor", "infeed conveyor", "outfeed conveyor", "transfer conveyor", "incline conveyor", "belt conv"],
        ["CNV-{n3}", "CNV-{n2}{let}", "CV-{n2}", "CONV {n2}", "CNV-{n2}"],
    ),
    **_asset(
        "pump",
        ["pump", "transfer pump", "coolant pump", "CIP pump", "process pump", "slurry pump"],
        ["PMP-{n3}", "P-{n2}{let}", "PMP-{n2}"],
    ),
    **_asset("mixer", ["mixer", "agitator", "ribbon blender", "batch mixer"], ["MX-{n1}", "MIX-{n2}", "MX-{n1}{let}"]),
    **_asset(
        "press",
        ["press", "stamping press", "hydraulic press", "punch press", "trim press"],
        ["PRS-{n1}", "HP-{n1}", "PR-{n2}", "PRS-{n2}"],
    ),
    **_asset(
        "robot",
        ["robot", "palletizing robot", "weld robot", "pick and place robot", "case packing robot"],
        ["LN{n1}-ROB-0{n1}", "ROB-{n2}", "R{n1}", "LN{n1}-ROB-{n2}"],
    ),
    **_asset("hpu", ["hydraulic unit", "hyd power unit", "power unit"], ["HPU-{n1}", "HPU-{n1}{let}", "HPU {n2}"]),
    **_asset("cmp", ["air compressor", "compressor", "screw compressor"], ["CMP-{n1}", "AC-{n1}", "COMP-{n1}"]),
    **_asset("filler", ["filler", "rotary filler", "piston filler"], ["FLR-{n1}", "FIL-{n2}"]),
    **_asset("capper", ["capper", "capping machine"], ["CAP-{n1}", "CPR-{n2}"]),
    **_asset("labeler", ["labeler", "label applicator"], ["LBL-{n1}", "LAB-{n2}"]),
    **_asset("wrap", ["stretch wrapper", "wrapper", "shrink wrapper"], ["WRP-{n1}", "SW-{n2}"]),
    **_asset("pal", ["palletizer", "depalletizer"], ["PAL-{n1}", "PLZ-{n2}"]),
    **_asset("casepk", ["case packer", "case erector", "case sealer"], ["CP-{n2}", "CE-{n1}", "CSL-{n1}"]),
    **_asset("ext", ["extruder", "twin screw extruder"], ["EXT-{n1}", "EX-{n2}"]),
    **_asset("cnc", ["CNC", "lathe", "mill", "machining center"], ["CNC-{n2}", "VMC-{n1}", "LTH-{n1}"]),
    **_asset("oven", ["oven", "curing oven", "dryer oven", "tunnel oven"], ["OVN-{n1}", "OV-{n2}"]),
    **_asset("chiller", ["chiller", "glycol chiller"], ["CHL-{n1}", "CH-{n2}"]),
    **_asset("grind", ["grinder", "granulator", "hammer mill"], ["GRD-{n1}", "GR-{n2}", "HM-{n1}"]),
    **_asset("blower", ["blower", "dust collector", "process fan", "ID fan"], ["BLW-{n1}", "DC-{n1}", "FAN-{n2}"]),
    **_asset("molder", ["molding machine", "injection molder", "IMM"], ["IMM-{n2}", "MLD-{n1}"]),
    **_asset("fixture", ["clamp fixture", "weld fixture", "assembly fixture"], ["FX-{n2}", "FIX-{n1}"]),
}

GLOBAL: dict[str, Slot] = {
    **ASSETS,
    "n1": _num(1, 9),
    "n2": _num(10, 99),
    "n3": _num(100, 499),
    "let": ["A", "B", "C", "D"],
    "hh": ["06", "07", "08", "09", "10", "11", "13", "14", "15", "16", "19", "21", "22", "23", "01", "02", "03"],
    "mm": ["00", "05", "10", "15", "20", "25", "30", "35", "40", "45", "50", "55"],
    "line": ["Line {n1}", "line {n1}", "L{n1}", "Ln {n1}", "Pack line {n1}", "line {n1}{let}"],
    "shift": ["1st shift", "2nd shift", "3rd shift", "A shift", "B shift", "C shift", "nights", "days", "wknd crew"],
    "person": [
        "J. Alvarez",
        "Mike on 2nd",
        "Dana (lead)",
        "Tony",
        "Sam K.",
        "the night lead",
        "Priya from QA",
        "Luis",
        "Kim in packaging",
        "the line lead",
        "operator Chen",
        "Rob W.",
        "Tasha",
        "Marco",
        "the supervisor",
        "B. Okafor",
        "Jen (3rd)",
        "Ahmed",
        "Pat from sanitation",
        "Greg",
    ],
    "urg": [
        "asap",
        "ASAP",
        "urgent",
        "line down",
        "LINE DOWN",
        "not urgent",
        "low priority",
        "when you get a chance",
        "P1",
        "P2",
        "P3",
        "before next shift",
        "running slow meanwhile",
        "can wait till the weekend",
        "need it today",
        "high priority",
        "production waiting",
        "pls advise",
    ],
    "when": [
        "after lunch",
        "at start of shift",
        "around {hh}:{mm}",
        "overnight",
        "after the weekend shutdown",
        "after the PM yesterday",
        "this morning",
        "about an hour ago",
        "right after changeover",
        "at {hh}{mm}",
    ],
    "tried_any": [
        "Operator tried a reset, no change",
        "Lead is aware",
        "Running at reduced speed for now",
        "Second ticket on this",
        "Happened on last shift too",
        "Machine is locked out",
        "Parts may be in the crib",
        "We are behind on the order",
        "Called it in at {hh}:{mm}",
        "Call before coming, {person} will show you",
        "Photos in the shift log",
        "Supervisor signed off on the downtime",
    ],
    "where": [
        "next to {hpu_id}",
        "by the compressor room",
        "behind {panel}",
        "near the eyewash station",
        "under the mezzanine",
        "by the robot cell",
        "across from the HMI station",
        "next to the hyd press",
        "by the MCC room",
        "near the fire door",
        "at the end of {line}",
        "by the control cabinet",
        "next to the air dryer",
        "by the dock doors",
        "near the PLC panel",
        "behind the guard fence",
        "by the gearbox storage rack",
        "next to the breaker panel",
    ],
    "since": ["this morning", "the weekend", "last night", "changeover", "the PM", "yesterday", "{hh}:{mm}"],
    "pre": [""] * 9
    + [
        "{shift}: ",
        "{shift} - ",
        "{line}: ",
        "{line} - ",
        "{hh}:{mm} ",
        "{hh}{mm} hrs ",
        "Per {person}: ",
        "{shift}, {line}: ",
        "FYI ",
        "Hi, ",
        "Maint req: ",
        "WR: ",
        "Hey maint, ",
        "{line} {shift} - ",
    ],
    "post": [""] * 8
    + [
        ". {urg}",
        " - {urg}",
        ", {urg}",
        " ({urg})",
        ". Reported by {person}",
        " - {person}",
        ". {urg}, reported by {person}",
        " - {shift}",
        ". Started {when}",
        ". Happened {n1}x this shift",
        ". Same as last week",
        " pls",
        " thx",
        ". Thanks",
        ". Call x{n3}",
        ". {person} has details",
        ". WO to follow",
        ". Tagged out",
    ],
    # numbers with units
    "psi_h": _num(300, 2900, 50),
    "psi_h2": _num(1000, 2500, 100),
    "bar_h": _num(40, 200, 5),
    "psi_a": _num(35, 115, 5),
    "bar_a": ["2.5", "3", "3.5", "4", "4.5", "5", "6"],
    "amps": _num(6, 95),
    "amps2": _num(5, 40),
    "v24": ["18", "19.5", "21", "22.4", "0", "11", "16.8"],
    "v480": ["455", "432", "0", "470", "401", "120"],
    "rpm": _num(600, 3600, 25),
    "hz": _num(20, 65),
    "tc": _num(55, 120),
    "tc2": _num(130, 240, 5),
    "vib": ["0.{n2} in/s", "{n1}.{n1} mm/s", "{n2}.{n1} mm/s"],
    "temp": ["{tc} degC", "{tc}C", "{tc} deg C"],
    "pct": ["50", "60", "70", "75", "80"],
    "meg": ["0.{n1}", "0.0{n1}", "1.{n1}"],
    "panel": ["LP-{n1}", "MCC-{n1}", "PP-{n1}{let}", "panel {n1}{let}", "CP-{n2}"],
    "mach_any": [
        "{conv}",
        "{pump}",
        "{mixer}",
        "{press}",
        "{robot}",
        "{filler}",
        "{capper}",
        "{labeler}",
        "{wrap}",
        "{pal}",
        "{casepk}",
        "{ext}",
        "{cnc}",
        "{molder}",
    ],
    "area": [
        "aisle {n1}",
        "dock {n1}",
        "the break room",
        "the warehouse",
        "the mezzanine",
        "shipping",
        "receiving",
        "the packaging area",
        "{line}",
        "bay {n2}",
        "the men's locker room",
        "the women's restroom",
        "the maint shop",
        "the tool crib",
        "the north stairwell",
        "the main entrance",
        "the lunchroom",
        "the battery charging area",
        "column {let}{n1}",
        "the compressor room",
        "the paint booth area",
        "raw material storage",
        "the front office",
        "the QC lab",
    ],
}

# Slots drawn again at every use; all others keep one value for the whole ticket.
FRESH = frozenset({"n1", "n2", "n3", "let", "hh", "mm"})
# Context slots that the optional prefix / suffix sentences do not repeat once the body used them.
CONTEXT_SLOTS = ("line", "urg", "person", "when", "since", "shift")

# Templates shared by every category (structure carries no label information).
SHARED_TEMPLATES: tuple[str, ...] = (
    "{mach} {comp} {sym}",
    "{comp} {sym} {mach}",
    "{mach} - {comp} {sym}",
    "{comp} on {mach} {sym}",
    "{mach}: {comp} {sym}. {urg}",
    "Operator reports {comp} on {mach} {sym}.",
    "pls check {comp} on {mach}, {sym}",
    "{comp} {sym}",
    "Can someone look at {mach}? {comp} {sym}",
    "{mach} down, {comp} {sym}",
    "{person} says {comp} on {mach} {sym}",
    "Need help on {mach}, {comp} {sym} since {since}",
    "{comp} {sym} on {mach} again",
)


@dataclass(frozen=True)
class Category:
    label: str
    slots: Scope  # category defaults: mach, act, tried, ...
    templates: Sequence[str]  # at least 15, fit every family of the category
    groups: Sequence[Scope]  # component families: comp, sym, act, optional tpl / only_tpl
    hard: Sequence[Scope]  # cross-vocabulary families, each with its own tpl list


# --------------------------------------------------------------------------------------------------------
# Mechanical: rotating and power-transmission parts, structure, process-pump seals
# --------------------------------------------------------------------------------------------------------

MECHANICAL = Category(
    label="Mechanical",
    slots={
        "mach": [
            "{conv}",
            "{conv}",
            "{pump}",
            "{mixer}",
            "{pal}",
            "{ext}",
            "{filler}",
            "{capper}",
            "{wrap}",
            "{grind}",
            "{blower}",
            "{cnc}",
            "{casepk}",
            "{press}",
            "{molder}",
            "{labeler}",
            "{oven}",
        ],
        "act": ["replace", "look at", "check", "change out", "inspect"],
        "noise": [
            "a grinding noise",
            "a loud squeal",
            "knocking",
            "a clunk every rev",
            "rattling",
            "a high pitched whine",
            "banging",
            "screeching",
        ],
        "ruled": [
            "breaker is fine",
            "no faults on the HMI",
            "amps look normal",
            "no alarms",
            "air pressure is normal",
            "no leaks",
            "electrician says the motor is fine",
            "PLC shows no faults",
            "VFD shows no fault",
            "not a sensor problem",
        ],
        "tried": [
            "Greased it, still noisy",
            "Tightened what I could",
            "Ran it empty, same thing",
            "Slowed it down to {pct}% for now",
            "Lead said run it till break",
            "Spare is in the crib, bin {n2}",
            "Was replaced {n1} weeks ago",
            "Getting worse every day",
        ],
    },
    templates=[
        "{mach} {comp} {sym}",
        "Operator reports the {comp} on {mach} is {sym}.",
        "{comp} on {mach} {sym}, pls {act}",
        "Need someone to {act} the {comp} on {mach}. It's {sym}",
        "Can someone look at {mach}? The {comp} is {sym}.",
        "{mach}: {comp} {sym}. Vib reading {vib}",
        "Heard {noise} from {mach}, looks like the {comp}",
        "{comp} {sym} on {mach} again. 3rd time this month",
        "PM found {comp} {sym} on {mach}, schedule to {act} it",
        "{mach} shaking bad at {rpm} rpm, {comp} {sym}",
        "Is anyone working on {mach}? {comp} still {sym}",
        "{mach} jammed up, {comp} {sym}, product backing up",
        "{comp} on {mach} {sym}. Replaced it once already",
        "Found {comp} {sym} on {mach} during walkdown",
        "{mach} - {comp} - {sym} - pls {act}",
        "Request to {act} the {comp} on {mach} at next downtime, it's {sym}",
        "{mach} running rough, {comp} {sym}",
        "{mach} down. {comp} {sym}. do we have a spare?",
        "{comp} {sym} {mach}",
        "Noticed the {comp} on {mach} {sym} while cleaning. Not urgent but should be looked at before it gets worse.",
        "{mach} makes {noise} at startup then settles, think the {comp} is {sym}",
        (
            "{person} on {shift} says {mach} started making {noise} {when}. Opened it up and the {comp} is {sym}. "
            "Can we get it fixed before the weekend run?"
        ),
        (
            "Not sure who to send this to. {mach} has been getting louder all week, today the {comp} is {sym} "
            "and the operator wants it looked at before something breaks"
        ),
        (
            "{mach} stopped mid run {when}, found the {comp} {sym}. Restarted once and it sounded worse so we "
            "shut it down. {urg}"
        ),
    ],
    groups=[
        {
            "comp": [
                "bearing",
                "brg",
                "pillow block bearing",
                "tail pulley brg",
                "drive end bearing",
                "idler bearing",
                "flange bearing",
                "main shaft bearing",
                "take-up bearing",
            ],
            "sym": [
                "making a grinding noise",
                "squealing",
                "running hot",
                "hot to the touch",
                "growling",
                "noisy",
                "seized",
                "rumbling",
                "dry",
                "has play in it",
                "starting to smoke",
                "running at {temp}",
            ],
            "act": ["replace", "grease", "change out", "look at"],
            "tpl": [
                "IR gun shows {temp} on {mach} {comp}",
                "{comp} on {mach} {sym}, grease fitting broken off",
            ],
        },
        {
            "comp": ["gearbox", "gear box", "gear reducer", "reducer", "right angle gearbox", "gbx"],
            "sym": [
                "making a grinding noise",
                "whining loud",
                "leaking oil from the output seal",
                "knocking",
                "running hot",
                "low on oil",
                "clunking on startup",
                "has a lot of backlash",
                "chewing up teeth",
            ],
            "act": ["replace", "check oil in", "inspect", "rebuild"],
            "oillvl": ["empty", "half", "milky", "dark and burnt"],
            "tpl": [
                "{comp} on {mach} {sym}. Oil sight glass {oillvl}",
                "Metal flakes in {comp} oil on {mach}, pls inspect",
            ],
        },
        {
            "comp": ["drive chain", "chain", "roller chain", "sprocket", "drive sprocket", "chain tensioner"],
            "sym": [
                "jumping teeth",
                "stretched",
                "loose",
                "worn",
                "skipping",
                "snapped",
                "dry and noisy",
                "teeth worn to hooks",
                "jumped off",
            ],
            "act": ["replace", "tension", "adjust", "lube"],
        },
        {
            "comp": ["drive belt", "V-belt", "belt", "conveyor belt", "timing belt", "belt lacing", "belt splice"],
            "sym": [
                "slipping",
                "squealing",
                "tracking off to one side",
                "frayed",
                "torn",
                "rubbing the frame",
                "loose",
                "walking off the pulley",
                "glazed",
                "coming apart",
            ],
            "act": ["retension", "replace", "track", "adjust", "re-lace"],
            "tpl": ["{mach} belt tracking off, rubbing the side rail", "{comp} on {mach} {sym}, product stalling"],
        },
        {
            "comp": [
                "coupling",
                "jaw coupling",
                "coupling insert",
                "coupling spider",
                "drive shaft",
                "shaft",
                "keyway",
                "shaft key",
            ],
            "sym": [
                "worn",
                "broken",
                "out of alignment",
                "misaligned",
                "cracked",
                "sheared",
                "wobbling",
                "loose",
                "spun on the shaft",
                "chewed up",
            ],
            "act": ["realign", "replace", "check alignment on", "shim"],
            "tpl": [
                "{mach} {comp} {sym}, laser align needed",
                "Spider on {mach} coupling chewed up, rubber dust everywhere",
            ],
        },
        {
            "comp": [
                "roller",
                "idler roller",
                "return roller",
                "head pulley",
                "tail pulley",
                "carrying idler",
                "drive roller",
            ],
            "sym": ["seized", "not turning", "flat spotted", "wobbling", "worn through", "noisy", "out of round"],
            "act": ["replace", "change out", "look at"],
            "tpl": [
                "{n1} rollers seized on {conv}, belt dragging",
                "Lagging worn off {conv} drive pulley, belt slipping",
            ],
        },
        {
            "comp": ["mounting bolts", "base plate", "frame weld", "support bracket", "set screw", "anchor bolts"],
            "sym": ["loose", "cracked", "broken", "rusted through", "backing out", "vibrated loose", "sheared off"],
            "act": ["tighten", "re-torque", "replace", "fix"],
        },
        {
            "comp": ["linear bearing", "linear guide", "ball screw", "slide", "cam follower", "guide rail", "rack"],
            "sym": ["binding", "sticking", "chattering", "worn", "has excessive play", "noisy", "rough"],
            "act": ["replace", "lube", "inspect", "adjust"],
            "mach": ["{cnc}", "{casepk}", "{pal}", "{filler}", "{labeler}"],
        },
        {
            "comp": ["pump seal", "mech seal", "pump packing", "impeller", "packing gland", "wear ring"],
            "sym": ["leaking product", "dripping", "worn", "rubbing", "damaged", "leaking at the gland"],
            "act": ["repack", "replace", "rebuild", "look at"],
            "mach": ["{pump}"],
        },
        {
            "comp": ["blower wheel", "agitator", "agitator blade", "spindle", "paddle", "auger", "screw flight"],
            "sym": [
                "vibrating bad",
                "out of balance",
                "shaking the whole frame",
                "wobbling",
                "bent",
                "hitting the housing",
                "worn thin",
            ],
            "act": ["balance", "replace", "straighten", "inspect"],
            "mach": ["{mixer}", "{blower}", "{grind}", "{ext}", "{cnc}"],
        },
    ],
    hard=[
        {  # the motor's mechanical parts: Mechanical, not Electrical
            "comp": ["motor bearing", "mtr brg", "motor coupling", "motor shaft", "motor mounts", "motor end bell"],
            "sym": ["noisy", "growling", "vibrating bad", "loose", "broken", "grinding", "worn", "rattling"],
            "tpl": [
                "{mach} {comp} {sym}",
                "{comp} on {mach} {sym}, motor itself runs fine",
                "Operator reports the {comp} on {mach} is {sym}.",
                "{mach}: {comp} {sym}, amps normal at {amps} A",
                "Electrician checked {mach}, windings ok, {comp} {sym}",
                "{comp} {sym} on the {hpu} pump motor",
            ],
        },
        {  # drive train on compressors and power units: Mechanical, not Hydraulic/Pneumatic
            "comp": ["compressor belt", "compressor drive belt", "compressor coupling", "motor-pump coupling"],
            "sym": ["squealing", "slipping", "worn", "cracked", "chewed up", "misaligned"],
            "mach": ["{cmp}", "{cmp}", "{hpu}"],
            "tpl": [
                "{comp} on {mach} {sym}",
                "{mach} {comp} {sym}, air pressure ok for now",
                "{comp} {sym} - {mach}, pressure is fine",
                "{mach} {comp} {sym}, can we get a spare on order",
            ],
        },
        {  # a broken encoder mount or coupling is Mechanical, not Software/Controls
            "comp": ["encoder coupling", "encoder mount", "encoder bracket"],
            "sym": ["broken", "loose", "slipping on the shaft", "cracked"],
            "tpl": [
                "{mach} {comp} {sym}, counts jumping",
                "Position errors on {mach}, found {comp} {sym}",
                "{comp} on {mach} {sym}, encoder itself fine",
            ],
        },
        {  # an alarm that turns out to be a real mechanical fault
            "comp": ["bearing", "brg", "gearbox", "fan bearing", "drive end brg"],
            "sym": ["shot", "rough", "worn out", "grinding", "hot"],
            "tpl": [
                "Vibration alarm on HMI for {mach}, checked it, {comp} is {sym}",
                "SCADA shows high vib on {mach}, {comp} {sym} for real",
                "{mach} high temp alarm is legit, {comp} {sym}",
                "Sensor is fine, {mach} {comp} really is {sym}",
            ],
        },
        {  # gearbox oil and process-pump seal leaks: fix the source, Mechanical
            "comp": ["gearbox", "reducer", "gear reducer"],
            "tpl": [
                "{comp} on {mach} leaking oil, small puddle under it, pls fix the seal",
                "Oil dripping from {mach} {comp} output seal",
                "{mach} {comp} seal leaking gear oil",
                "{pump} seal leaking product, needs rebuild",
                "{pump} packing dripping, pls adjust gland",
                "Water spraying from {pump} mech seal",
            ],
        },
        {  # robot arm joints
            "sym": ["grinding", "noisy", "has backlash", "clunking"],
            "tpl": [
                "{robot} axis {n1} gearbox {sym}",
                "{robot} J{n1} reducer {sym}, program runs fine",
                "{robot} wrist {sym} when rotating",
            ],
        },
        {  # speed signal is fine, the transmission is slipping
            "comp": ["belt", "drive belt", "chain"],
            "sym": ["slipping", "jumping teeth", "slipping on the pulley"],
            "tpl": [
                "VFD running fine on {mach}, {comp} {sym}",
                "Drive shows {hz} Hz but {mach} {comp} {sym}",
                "{mach} speed on HMI ok but {comp} {sym}, product slowing",
            ],
        },
        {  # structure around a cylinder, guards that are present but hit by loose parts
            "sym": ["loose", "slack", "worn"],
            "tpl": [
                "{fixture} cylinder mounting bracket cracked",
                "Weld on {press} cylinder mount broke, cylinder ok",
                "Chain slapping the guard on {conv}, needs tension",
                "{conv} belt rubbing on guard, tracking off",
                "Guard is fine but {conv} chain {sym} behind it",
            ],
        },
    ],
)

# --------------------------------------------------------------------------------------------------------
# Electrical: power, motors' electrical side, drives' hardware, cabling, coils and heaters
# --------------------------------------------------------------------------------------------------------

ELECTRICAL = Category(
    label="Electrical",
    slots={
        "mach": ["{mach_any}", "{mach_any}", "{mach_any}", "{hpu}", "{cmp}", "{oven}", "{chiller}", "{blower}"],
        "act": ["check", "meg", "replace", "troubleshoot", "look at", "test"],
        "again": ["tripped again", "same thing", "no luck", "lasted {n2} min"],
        "ruled": [
            "bearings sound ok",
            "no noise from the gearbox",
            "belt is fine",
            "no leaks",
            "mechanically it turns free",
            "program hasn't changed",
            "guard is on",
            "air pressure fine",
            "nothing jammed",
            "no alarm on the HMI, just dead",
        ],
        "tried": [
            "Reset it {n1} times, trips again right away",
            "Checked fuses, all good",
            "Breaker is locked out for now",
            "Smelled burning near the panel",
            "Swapped the fuse, blew again",
            "Running on the backup for now",
            "Panel door is warm",
        ],
    },
    templates=[
        "{mach} {comp} {sym}",
        "{comp} on {mach} {sym}. Reset once, {again}",
        "{mach} dead, no power. {comp} {sym}?",
        "Need an electrician on {mach}, {comp} {sym}",
        "Operator says {mach} {comp} {sym} at startup",
        "{comp} {sym} on {mach}, we're down",
        "Can someone check the {comp} for {mach}? It's {sym}.",
        "{mach} keeps stopping. {comp} {sym}",
        "Burning smell from {mach} panel, {comp} {sym}",
        "{comp} {sym} {mach} pls {act}",
        "Found {comp} {sym} on {mach} after the power bump this morning",
        "{mach} {comp} {sym} - {urg}",
        "Lost {mach} {when}. {comp} {sym}",
        "{comp} for {mach} is {sym}, please {act} it",
        "Amp draw on {mach} {amps} A, normal is {amps2} A. {comp} {sym}",
        "Every time {mach} starts the {comp} {sym}",
        "LOTO on {mach}, {comp} {sym}, needs a qualified person",
        "{mach}: {comp} {sym}",
        "Power keeps dropping on {mach}, {comp} {sym}",
        "{mach} wont start, {comp} {sym}",
        (
            "{person} says {mach} went dead {when}. Checked the panel and the {comp} is {sym}. "
            "Operators moved to the other line for now, {urg}"
        ),
        (
            "{mach} has been stopping randomly for {n1} days. Tonight the {comp} {sym} and it won't come back. "
            "Need someone qualified to look, we are not allowed in the panel"
        ),
        (
            "{mach}: {comp} {sym} again {when}. This is the {n1}th time this month, can we find the root cause "
            "instead of resetting it every shift?"
        ),
    ],
    groups=[
        {
            "comp": ["motor", "mtr", "drive motor", "main motor", "pump motor", "blower motor"],
            "sym": [
                "tripping on overload",
                "won't start",
                "humming but not turning",
                "smells burnt",
                "drawing {amps} A on one leg",
                "tripping the breaker",
                "windings shorted",
                "single phasing",
                "megger reads low",
                "reading {meg} Mohm to ground",
            ],
            "act": ["meg", "check", "replace", "test"],
            "tpl": [
                "{comp} on {mach} {sym}, megger reads {meg} Mohm",
                "{mach} {comp} hums but won't turn, {v480} V at the starter",
            ],
        },
        {
            "comp": ["breaker", "main breaker", "control breaker", "fuse", "control fuse", "GFCI", "disconnect"],
            "sym": [
                "keeps tripping",
                "tripped again",
                "blown",
                "won't reset",
                "hot to the touch",
                "buzzing",
                "blowing every few hours",
            ],
            "act": ["check", "replace", "look at"],
            "tpl": ["{mach} trips the {comp} as soon as it starts", "{comp} {n1} in {panel} {sym}"],
        },
        {
            "comp": ["VFD", "drive", "variable freq drive", "AC drive"],
            "sym": [
                "faulting on overcurrent",
                "showing OC fault",
                "tripping on overvoltage",
                "showing ground fault",
                "DC bus undervoltage fault",
                "cooling fan dead, overheating",
                "display dead, no power",
                "smoking",
                "fault F0{n1}, won't reset",
            ],
            "act": ["replace", "check", "troubleshoot"],
            "vfdcode": ["OC fault", "F0{n1} overcurrent", "ground fault", "OV fault", "DC bus UV", "phase loss"],
            "tpl": ["VFD on {mach} showing {vfdcode}, reset won't clear", "{mach} drive tripping, {vfdcode}"],
        },
        {
            "comp": ["contactor", "motor starter", "overload relay", "control relay", "starter", "aux contact"],
            "sym": ["chattering", "contacts pitted", "welded closed", "not pulling in", "buzzing loud", "burnt"],
            "act": ["replace", "check", "look at"],
        },
        {
            "comp": ["power cable", "cord", "cable", "festoon cable", "SO cord", "conduit", "wiring"],
            "sym": [
                "cut",
                "damaged",
                "frayed",
                "insulation cracked",
                "crushed by forklift",
                "pulled out of the gland",
                "exposed conductors",
                "melted",
            ],
            "act": ["replace", "repair", "look at"],
            "tpl": ["{comp} to {mach} {sym}, copper showing", "Forklift ran over the {comp} for {mach}"],
        },
        {
            "comp": ["24V supply", "24VDC power supply", "480V feed", "120V circuit", "control transformer", "xfmr"],
            "sym": ["dead", "reading {v24} V", "dropping out", "no output", "intermittent", "overheating"],
            "act": ["check", "replace", "test"],
            "tpl": [
                "24V on {mach} reading {v24} V, should be 24",
                "Lost 24VDC on {mach}, {comp} {sym}",
                "Only {v480} V on L2 at {mach} disconnect",
            ],
        },
        {
            "comp": ["heater element", "band heater", "heater contactor", "heating element", "SSR"],
            "sym": ["open", "burnt out", "reading open on the meter", "shorted to ground", "not pulling current"],
            "act": ["replace", "check", "meter"],
            "mach": ["{oven}", "{ext}", "{molder}", "{wrap}"],
        },
        {
            "comp": ["control panel", "MCC bucket", "panel", "terminal block", "bus bar", "lugs"],
            "sym": ["hot spot on IR scan", "burning smell", "has loose lugs", "arcing", "sparking", "scorched"],
            "act": ["torque", "check", "repair", "IR scan"],
            "tpl": ["IR scan found {comp} in {panel} at {temp}", "Arcing noise from {panel} feeding {mach}"],
        },
        {
            "comp": ["outlet", "receptacle", "plug", "welding receptacle", "twist lock plug"],
            "sym": ["sparking", "no power", "burnt", "melted", "loose in the box"],
            "act": ["replace", "check", "fix"],
            "tpl": ["{comp} next to {mach} {sym} when plugging in", "No power at the {comp} by {mach}"],
        },
    ],
    hard=[
        {  # solenoid coil: the coil is Electrical, the valve is Hydraulic/Pneumatic
            "comp": ["solenoid coil", "valve coil", "sol coil", "coil on the directional valve"],
            "sym": ["burnt", "open", "reading open", "melted", "has no 24V", "shorted"],
            "mach": ["{press}", "{hpu}", "{fixture}", "{molder}", "{casepk}"],
            "tpl": [
                "{comp} on {mach} hyd valve {sym}",
                "{mach} valve won't shift, {comp} {sym}",
                "{comp} {sym} on {mach} air valve, valve itself ok",
                "Air valve on {mach}: {comp} {sym}, smells burnt",
                "{mach} clamp not working, {comp} {sym}",
            ],
        },
        {  # motors on hydraulic / air equipment
            "bcomp": ["breaker", "main breaker", "fuses", "overload"],
            "tpl": [
                "{hpu} motor tripping on overload",
                "{cmp} motor won't start, {bcomp} tripped",
                "{hpu} pump motor drawing {amps} A, trips after {n2} min",
                "Air compressor {cmp_id} tripped the {bcomp} again, smells burnt",
                "{hpu} motor starter chattering, pump won't stay on",
            ],
        },
        {  # heaters that do not heat (vs a wrong temperature reading)
            "tpl": [
                "{oven} heater element open, temp won't come up",
                "Band heater on {ext} zone {n1} reading open",
                "Zone {n1} on {ext} not heating, element has no current",
                "{oven} temp won't get past {tc} degC, one element cold on IR",
            ],
        },
        {  # any damaged cable is Electrical, whatever it feeds
            "mach": ["{mach_any}"],
            "tpl": [
                "Prox sensor cable on {mach} crushed, conductors exposed",
                "Photo eye cord on {mach} cut by forklift",
                "Encoder cable on {mach} pulled out of connector, pins bent",
                "Cable to the HMI on {mach} chewed through, wires showing",
            ],
        },
        {  # a controls device with no power
            "mach": ["{mach_any}"],
            "tpl": [
                "HMI on {mach} dark, no 24V at the screen, supply reads {v24} V",
                "PLC rack on {mach} no power, fuse F{n1} blown",
                "Scanner on {mach} dead, no power at the terminals",
                "{mach} PLC power supply smoked, smells burnt",
            ],
        },
        {  # electrical failure of a motor, mechanically fine
            "mach": ["{mach_any}", "{blower}", "{cmp}"],
            "tpl": [
                "{mach} motor running hot, drawing {amps} A, bearings sound fine",
                "Motor on {mach} hums, won't turn, shaft spins free by hand",
                "{mach} mtr windings smell burnt",
                "Motor on {mach} trips overload after {n2} min, no noise from the gearbox",
            ],
        },
        {  # drive hardware (vs drive parameters)
            "mach": ["{mach_any}", "{blower}"],
            "vfdcode": ["OC", "ground fault", "OV", "IGBT fault"],
            "tpl": [
                "VFD on {mach} throws {vfdcode} even w/ motor disconnected",
                "{mach} drive blew its fuses, smells burnt",
                "Drive for {mach} display dead, no power coming in",
                "{robot} tripping the main breaker on startup",
            ],
        },
    ],
)

# --------------------------------------------------------------------------------------------------------
# Hydraulic/Pneumatic: hydraulic oil systems and compressed air / vacuum
# --------------------------------------------------------------------------------------------------------

HYDRAULIC = Category(
    label="Hydraulic/Pneumatic",
    slots={
        "mach": [
            "{press}",
            "{press}",
            "{hpu}",
            "{hpu}",
            "{robot}",
            "{molder}",
            "{pal}",
            "{casepk}",
            "{fixture}",
            "{filler}",
            "{capper}",
            "{wrap}",
            "{conv}",
            "{labeler}",
            "{cnc}",
        ],
        "act": ["replace", "tighten", "repair", "rebuild", "check"],
        "pres": ["{psi_h} psi", "{psi_h} psi", "{bar_h} bar"],
        "ruled": [
            "motor running fine",
            "amps normal",
            "no faults on the HMI",
            "PLC output is on",
            "pump motor sounds fine",
            "coil has 24V",
            "not a sensor issue",
            "no alarms",
            "breaker ok",
        ],
        "tried": [
            "Tightened the fitting, still weeping",
            "Topped off with {n1} gal of AW46",
            "Put a drip pan under it",
            "Gauge reads {pres}",
            "Bled the air out, no change",
            "Drained the filter bowl",
            "Shut off the supply valve to that station for now",
        ],
    },
    templates=[
        "{mach} {comp} {sym}",
        "{comp} on {mach} {sym}, pressure down to {pres}",
        "Operator reports {comp} {sym} on {mach}.",
        "{mach} {comp} {sym}, pls {act} asap",
        "Can someone {act} the {comp} on {mach}? It's {sym}.",
        "{mach} slow cycle, {comp} {sym}",
        "{comp} {sym} {mach}",
        "{mach}: {comp} {sym}, holding at {pres}",
        "Found {comp} {sym} on {mach} during PM",
        "{mach} lost pressure {when}, {comp} {sym}",
        "{comp} on {mach} {sym} again, third one this month",
        "{mach} won't cycle, {comp} {sym}",
        "Request to {act} {comp} on {mach} - {sym}",
        "{mach} down, {comp} {sym}, need parts",
        "Why is the {comp} on {mach} {sym}?",
        "{mach} {comp} {sym}, {urg}",
        "{comp} on {mach} {sym}. Tagged it.",
        "{mach} cycle time up {n1} sec, {comp} {sym}",
        (
            "{person} noticed {mach} getting slower all shift. Found the {comp} {sym}, there is a mess under "
            "the machine. Pressure reads {pres}, normal is higher"
        ),
        (
            "{mach} down {when}. {comp} {sym} and we can't keep pressure up, tried twice. "
            "Please send someone with parts, {urg}"
        ),
        (
            "Not urgent yet but the {comp} on {mach} has been {sym} since {since}. Getting worse, "
            "would like it fixed on the next PM"
        ),
    ],
    groups=[
        {
            "comp": [
                "hose",
                "hyd hose",
                "hydraulic hose",
                "high pressure hose",
                "fitting",
                "JIC fitting",
                "hose fitting",
                "return line",
            ],
            "sym": [
                "leaking",
                "weeping",
                "blown",
                "burst",
                "spraying oil",
                "dripping oil",
                "chafed through",
                "bulging",
            ],
            "act": ["replace", "tighten", "remake"],
            "tpl": ["Oil under {mach}, {comp} {sym}", "{comp} on {mach} {sym}, lost about {n1} gal"],
        },
        {
            "comp": ["cylinder", "clamp cylinder", "lift cylinder", "ram", "rod seal", "cyl seals"],
            "sym": [
                "leaking by",
                "drifting down",
                "won't hold position",
                "leaking at the rod",
                "slow to extend",
                "not retracting",
                "bypassing",
                "jerky",
            ],
            "act": ["rebuild", "reseal", "replace"],
            "mach": ["{press}", "{press}", "{fixture}", "{molder}", "{pal}", "{casepk}"],
            "tpl": ["{mach} {comp} {sym}, drifts {n2} mm in a minute", "Ram on {press} {sym} under load"],
        },
        {
            "comp": ["HPU", "hyd power unit", "hyd pump", "power unit", "hyd reservoir"],
            "sym": [
                "low on oil",
                "oil overheating",
                "not building pressure",
                "pressure dropping to {psi_h} psi",
                "oil foamy",
                "filter bypass indicator red",
                "oil looks milky",
            ],
            "act": ["check", "service", "top off"],
            "mach": ["{press}", "{molder}", "{hpu_id}", "{fixture}"],
            "tpl": ["{comp} for {mach} {sym}, oil at {temp}", "Added {n1} gal to the {comp} on {mach}, {sym}"],
        },
        {
            "comp": [
                "directional valve",
                "relief valve",
                "solenoid valve",
                "valve",
                "proportional valve",
                "check valve",
                "pilot valve",
                "valve bank",
            ],
            "sym": [
                "sticking",
                "not shifting",
                "leaking internally",
                "stuck open",
                "chattering",
                "hissing",
                "blowing off early",
            ],
            "act": ["replace", "clean", "rebuild", "check"],
        },
        {
            "comp": [
                "air line",
                "drop line",
                "main air header",
                "quick disconnect",
                "air fitting",
                "push to connect fitting",
                "air hose",
                "pnu tubing",
            ],
            "sym": [
                "leaking",
                "hissing",
                "blown off",
                "cracked",
                "leaking loud",
                "leaking at the coupler",
                "kinked",
            ],
            "act": ["replace", "fix", "repair"],
            "pres": ["{psi_a} psi", "{psi_a} psi", "{bar_a} bar"],
            "mach": ["{mach_any}", "{robot}", "{casepk}", "{pal}"],
            "tpl": [
                "Big air leak at {mach}, you can hear it from the aisle",
                "{comp} at {mach} {sym}, air down to {pres}",
            ],
        },
        {
            "comp": [
                "FRL",
                "regulator",
                "filter regulator",
                "lubricator",
                "air dryer",
                "compressor",
                "drain trap",
                "receiver tank",
            ],
            "sym": [
                "not holding setting",
                "passing water into the lines",
                "bowl full of water",
                "not building pressure",
                "short cycling",
                "dew point alarm",
                "drain stuck open",
                "can't keep up",
            ],
            "act": ["service", "replace", "check", "drain"],
            "pres": ["{psi_a} psi", "{psi_a} psi", "{bar_a} bar"],
            "mach": ["{mach_any}", "{cmp}", "{cmp}", "the compressor room"],
            "tpl": ["Plant air down to {pres}, {comp} {sym}", "Water in the air lines at {mach}, {comp} {sym}"],
        },
        {
            "comp": [
                "air cylinder",
                "pneumatic cylinder",
                "gripper",
                "vacuum cup",
                "vacuum generator",
                "pusher cylinder",
                "air clamp",
            ],
            "sym": ["slow", "not extending", "losing grip", "not picking", "leaking air", "weak", "sticking halfway"],
            "act": ["replace", "rebuild", "check"],
            "pres": ["{psi_a} psi", "{psi_a} psi", "{bar_a} bar"],
            "mach": ["{robot}", "{casepk}", "{pal}", "{labeler}", "{capper}", "{conv}", "{fixture}"],
        },
        {
            "comp": ["accumulator", "accumulator bladder", "bladder accumulator"],
            "sym": ["low", "not holding", "failed", "needs recharge", "flat"],
            "act": ["recharge", "replace", "check"],
            "mach": ["{press}", "{hpu}", "{molder}"],
            "tpl": ["{comp} on {mach} {sym}, precharge {n3} psi"],
        },
    ],
    hard=[
        {  # air leaks on machines that are otherwise robot / conveyor / motor work
            "tpl": [
                "{robot} gripper air leak at the cylinder",
                "Air leak at the cylinder on {conv}, loud hiss",
                "{conv} pusher cyl leaking air at the rod, motor side fine",
                "Hissing from {robot} EOAT, grippers weak",
                "{pal} air leak near the motor, pneumatic tubing split",
            ],
        },
        {  # hydraulic press leaks and pressure loss
            "tpl": [
                "{press} leaking oil from the ram seal",
                "Hyd press {press_id} losing tonnage, pressure drops to {psi_h} psi",
                "{press_id} hydraulic press dripping oil at the valve block",
                "{press} won't reach tonnage, relief valve set too low?",
            ],
        },
        {  # real pressure loss, not an instrument fault
            "acomp": ["a drop line", "the FRL", "a quick disconnect", "a cylinder fitting"],
            "tpl": [
                "Pressure dropping on {mach}, hose weeping at the fitting",
                "Gauge confirms {psi_h} psi at {mach}, not a sensor issue, oil bypassing somewhere",
                "HMI low pressure alarm on {mach} is real, gauge reads {psi_a} psi, found leak at {acomp}",
                "Sensor checked ok, {mach} really losing pressure, hose weeping",
            ],
        },
        {  # the valve is stuck, the coil and the PLC output are fine
            "tpl": [
                "Solenoid valve on {mach} sticking, coil energized and LED on",
                "{mach} valve not shifting, coil checks good, spool stuck",
                "Sol valve on {mach} stuck open, PLC output fine",
                "{mach} directional valve sticky, have to tap it to shift, 24V present",
            ],
        },
        {  # noisy / hot hydraulic pumps and oil: the hydraulic circuit
            "tpl": [
                "{hpu} pump whining and cavitating, oil looks foamy",
                "Hyd pump on {press} noisy, suction strainer plugged?",
                "{hpu} pump knocking, pressure swinging {psi_h}-{psi_h2} psi",
                "Hyd oil on {hpu} at {tc} degC, cooler plugged?",
                "{hpu} oil overheating, temp alarm is legit, checked with IR gun",
            ],
        },
        {  # motor runs, pressure does not build
            "tpl": [
                "{hpu} motor running but no pressure",
                "{cmp} runs fine but won't build past {psi_a} psi",
                "{hpu} motor ok, amps normal, relief valve blowing off",
                "{cmp} motor runs, unloader valve stuck, no air",
            ],
        },
        {  # vacuum and grippers on robots
            "tpl": [
                "Vacuum lost on {robot}, cup torn",
                "{robot} dropping parts, vacuum generator weak",
                "{robot} program fine but gripper slow to close, reg set {psi_a} psi",
                "{robot} EOAT vacuum cups cracked, losing boxes",
            ],
        },
    ],
)

# --------------------------------------------------------------------------------------------------------
# Software/Controls: PLC, HMI, SCADA, networks, instruments and sensors, programs, recipes, parameters
# --------------------------------------------------------------------------------------------------------

CONTROLS = Category(
    label="Software/Controls",
    slots={
        "mach": ["{mach_any}", "{mach_any}", "{mach_any}", "{oven}", "{chiller}", "{hpu}"],
        "act": ["recalibrate", "check", "reload", "reset", "look at", "troubleshoot"],
        "alarm": [
            "COMM FAULT",
            "AXIS {n1} FOLLOWING ERROR",
            "SENSOR S{n2} TIMEOUT",
            "PE{n2} BLOCKED",
            "RECIPE CHECKSUM ERROR",
            "IO MODULE FAULT SLOT {n1}",
            "WATCHDOG TIMEOUT",
            "ENCODER LOSS",
            "ALARM {n3}",
            "E-{n3}",
            "HOME NOT FOUND",
            "TAG NOT FOUND",
        ],
        "ruled": [
            "wiring checked ok",
            "motor is fine",
            "no leaks",
            "mechanically ok",
            "power is good",
            "24V is there",
            "air pressure normal",
            "fuses are good",
            "belt and chain fine",
            "nothing physically broken",
        ],
        "tried": [
            "Power cycled, came back for {n2} min",
            "Cleaned the lens, no change",
            "Reloaded the recipe, same",
            "Reset the alarm {n1} times",
            "Checked the cable, looks fine",
            "Running in manual until fixed",
            "QA is holding product",
        ],
    },
    templates=[
        "{mach} {comp} {sym}",
        'HMI on {mach} showing "{alarm}", won\'t clear',
        "{comp} on {mach} {sym}, line stopped",
        "Can a tech look at {mach}? {comp} {sym}",
        "{mach} stops every {n2} min, {comp} {sym}",
        "Need {comp} on {mach} looked at, {sym}",
        "Alarm {alarm} on {mach} again. {comp} {sym}",
        "{comp} {sym} on {mach} since {since}",
        "{mach} {comp} {sym}. Running manual",
        "Operator says {comp} on {mach} {sym} after changeover",
        "{comp} for {mach} {sym}, QA holding product",
        "Pls {act} {comp} on {mach}, it's {sym}",
        "{mach}: {comp} {sym} - {urg}",
        "After the power outage {mach} {comp} {sym}",
        "{comp} on {mach} {sym}, can someone check",
        "Something changed on {mach}, {comp} {sym} now",
        "{mach} {comp} {sym}, we tried power cycling",
        "{comp} {sym} on {mach}, screen shows {alarm}",
        (
            "{person} says {mach} stops by itself {when}. Screen shows {alarm} and the {comp} {sym}. "
            "We reset it and it runs for a while then does it again"
        ),
        (
            "Since {since} the {comp} on {mach} {sym}. Nothing was changed on our side as far as I know, "
            "QA wants it checked before we run the next order"
        ),
        "{mach} rejected half the run {when}, {comp} {sym}. Ran a test batch and same thing, {urg}",
    ],
    groups=[
        {
            "comp": ["PLC", "PLC rack", "PLC processor", "controller", "remote I/O rack"],
            "sym": [
                "faulted",
                "in fault, red light",
                "showing major fault",
                "lost its program",
                "went to program mode",
                "watchdog timeout",
                "I/O fault on slot {n1}",
                "keeps rebooting",
            ],
            "act": ["check", "reset", "reload", "look at"],
            "tpl": ["{mach} PLC faulted, fault code {n2}:{n2}", "PLC on {mach} lost program, need the backup loaded"],
        },
        {
            "comp": ["HMI", "HMI screen", "touchscreen", "operator panel", "PanelView"],
            "sym": [
                "frozen",
                "not responding to touch",
                "black screen",
                "stuck on loading",
                "showing wrong values",
                "buttons not working",
                "lost connection to the PLC",
                "clock is wrong",
            ],
            "act": ["reset", "reload", "check", "look at"],
            "tpl": [
                "{mach} HMI frozen on the alarm page",
                "Touchscreen on {mach} not calibrated, hitting wrong buttons",
            ],
        },
        {
            "comp": [
                "SCADA",
                "SCADA screen",
                "historian",
                "network switch",
                "Ethernet/IP comms",
                "comms to the PLC",
                "remote I/O",
            ],
            "sym": [
                "alarm won't clear",
                "comms lost",
                "showing stale data",
                "not updating",
                "dropping out",
                "timing out",
                "flagging comm errors",
            ],
            "act": ["check", "reset", "look at"],
            "tpl": ["SCADA not showing {mach} data since {since}", "{mach} comms dropping every few min, {alarm}"],
        },
        {
            "comp": [
                "photo eye",
                "prox sensor",
                "proximity switch",
                "level sensor",
                "flow meter",
                "temp probe",
                "pressure transmitter",
                "load cell",
                "checkweigher",
            ],
            "sym": [
                "not detecting",
                "reading wrong",
                "out of calibration",
                "false triggering",
                "reading {n2} when it should be {n3}",
                "due for calibration",
                "stuck on",
                "drifting",
                "reading zero",
            ],
            "act": ["recalibrate", "check", "replace", "adjust"],
            "tpl": ["{comp} on {mach} {sym}, QA flagged it", "Calibrate {comp} on {mach}, cal sticker expired"],
        },
        {
            "comp": ["encoder", "encoder counts", "servo axis", "servo drive", "position feedback", "home position"],
            "sym": [
                "losing counts",
                "drifting",
                "off by {n2} mm",
                "not homing",
                "throwing following error",
                "lost after power cycle",
                "counts jumping",
            ],
            "act": ["check", "rehome", "re-teach", "look at"],
            "mach": ["{mach_any}", "{robot}", "{cnc}", "{labeler}"],
        },
        {
            "comp": [
                "recipe",
                "recipe for SKU {n3}{n2}",
                "setpoint",
                "parameters",
                "speed setpoint",
                "timer",
                "batch report",
                "label template",
            ],
            "sym": [
                "not loading",
                "has wrong values",
                "reset to default after power cycle",
                "won't save",
                "downloading wrong",
                "missing",
                "changed by someone",
            ],
            "act": ["reload", "fix", "check", "restore"],
            "mach": [
                "{filler}",
                "{mixer}",
                "{oven}",
                "{ext}",
                "{labeler}",
                "{capper}",
                "{casepk}",
                "{molder}",
                "{wrap}",
            ],
            "tpl": [
                "Wrong recipe loaded on {filler}, fill weights off",
                "Can't select SKU {n3}{n2} on {mach} HMI, recipe missing",
            ],
        },
        {
            "comp": [
                "vision system",
                "camera",
                "barcode scanner",
                "label check camera",
                "reject system",
                "code reader",
            ],
            "sym": [
                "rejecting good product",
                "not reading codes",
                "failing every part",
                "not rejecting",
                "lost its settings",
                "triggering late",
            ],
            "act": ["retrain", "check", "adjust", "look at"],
            "mach": ["{labeler}", "{filler}", "{casepk}", "{capper}", "{conv}"],
        },
        {
            "comp": [
                "firmware",
                "program backup",
                "laptop for {mach}",
                "PLC program",
                "robot program",
                "HMI project",
                "license",
            ],
            "sym": ["needs update", "expired", "out of date", "won't connect", "missing", "corrupted"],
            "act": ["update", "restore", "check"],
            "tpl": [
                "Need latest PLC program backup for {mach} before the upgrade",
                "{comp} on {mach} {sym}, can't go online",
            ],
        },
    ],
    hard=[
        {  # a pressure reading (instrument) vs actual pressure
            "tpl": [
                "Pressure sensor on {mach} reading {psi_h} psi on HMI, gauge shows normal",
                "{mach} pressure transmitter stuck at 0, actual pressure fine",
                "HMI says low air but header gauge reads {psi_a} psi, check pressure switch setpoint",
                "Hyd pressure display on {mach} jumping around, gauge steady",
                "Low air alarm on {mach} every few min, header at {psi_a} psi, switch setpoint wrong",
            ],
        },
        {  # outputs and signals from the PLC
            "tpl": [
                "{mach} motor won't start, PLC output {n1} not turning on",
                "No output from PLC card slot {n1} to {mach} starter, starter ok",
                "Valve on {mach} not getting signal from PLC, manual override works",
                "{mach} hyd pump won't start from HMI, starts fine in local",
            ],
        },
        {  # drive parameters and speed setpoints
            "tpl": [
                "VFD on {mach} replaced, needs parameters downloaded",
                "{mach} drive running wrong speed, setpoint on HMI says {hz} Hz",
                "Drive params on {mach} reset to default after power bump",
                "{mach} VFD accel time changed, motor jerks on start",
            ],
        },
        {  # robot programs and positions
            "tpl": [
                "{robot} lost position, needs re-teach",
                "{robot} placing boxes {n2} mm off, program offset?",
                "{robot} stops at home waiting on signal from PLC",
                "{robot} pallet pattern wrong after the update",
            ],
        },
        {  # temperature readings and loops (heaters fine)
            "tpl": [
                "{oven} reads {tc} degC on HMI but handheld shows {tc2} degC",
                "Thermocouple on {ext} zone {n1} reading {tc} degC, heaters ok",
                "{oven} temp cycling {n1}0 degC above setpoint, PID tuning?",
                "Bearing temp on SCADA for {mach} shows -40, sensor bad",
            ],
        },
        {  # cylinder / clamp position sensing
            "tpl": [
                "Cylinder on {mach} extends fine but HMI says not extended",
                "{mach} faulting clamp not closed, clamp is closed, check reed switch",
                "Cyl position sensor on {mach} not seeing home",
                "Level sensor on {hpu} reservoir reading empty, tank is full",
            ],
        },
        {  # speeds, counts and monitors that disagree with reality
            "tpl": [
                "Conveyor speed on HMI doesn't match actual on {conv}",
                "Case count on {mach} off by {n2} from actual",
                "{conv} belt speed set {n2} ft/min but HMI shows {n3}",
                "Vibration monitor on {mach} flat-lined on SCADA, machine sounds fine",
            ],
        },
    ],
)

# --------------------------------------------------------------------------------------------------------
# Safety/Facilities: safeguards, EHS equipment, spills and housekeeping hazards, building services
# --------------------------------------------------------------------------------------------------------

SAFETY = Category(
    label="Safety/Facilities",
    slots={
        "mach": ["{mach_any}"],
        "loc": ["{area}"],
        "locp": ["in {area}", "in {area}", "by {area}"],
        "urg": [
            "asap",
            "urgent",
            "not urgent",
            "low priority",
            "when you get a chance",
            "P1",
            "P2",
            "P3",
            "before the audit",
            "need it today",
            "high priority",
            "pls advise",
            "before next shift",
            "someone will get hurt",
        ],
        "act": ["fix", "replace", "repair", "look at", "check"],
        "tried_any": [
            "Lead is aware",
            "Second ticket on this",
            "Photos in the shift log",
            "Called it in at {hh}:{mm}",
            "Call before coming, {person} will show you",
        ],
        "ruled": [
            "machine running fine otherwise",
            "nobody hurt",
            "production not affected",
            "no one injured",
            "equipment is fine",
            "line still running",
        ],
        "tried": [
            "Put cones out",
            "Taped off the area",
            "Told the supervisor",
            "Area roped off for now",
            "Posted a sign",
            "Near miss reported",
            "Told people to use the other aisle",
        ],
    },
    templates=[
        "{comp} {sym} {locp}",
        "{loc}: {comp} {sym}",
        "Operator reports the {comp} {locp} is {sym}.",
        "{comp} {locp} {sym}, someone could get hurt",
        "Near miss: {comp} {sym} {locp}",
        "{loc} - {comp} {sym}",
        "Pls {act} the {comp} {locp}, it's {sym}",
        "{comp} {sym} {locp} again",
        "During the audit found {comp} {sym} {locp}",
        "Can someone look at the {comp} {locp}? It's {sym}.",
        "{comp} {locp} has been {sym} for a week",
        "{loc}: {comp} {sym}, {urg}",
        "{comp} {sym} {locp}, taped off for now",
        "Still waiting on the {comp} {locp}, {sym}",
        "Walkthrough: {comp} {sym} {locp}",
        "Found {comp} {sym} {locp} on rounds",
        "EHS request: {comp} {locp} {sym}",
        (
            "{person} pointed out that the {comp} {locp} is {sym}. Nobody got hurt but it has been like this "
            "for a while, can someone take care of it"
        ),
        "Third shift noticed the {comp} {locp} {sym}. We put up a sign, please fix before the audit on Thursday",
        "Reporting for {person}: {comp} {locp} {sym} since {since}, {urg}",
    ],
    groups=[
        {
            "comp": ["guard", "machine guard", "chain guard", "belt guard", "fixed guard", "guard panel", "guard door"],
            "sym": [
                "missing",
                "removed and not put back",
                "damaged",
                "loose, you can reach in",
                "missing bolts",
                "cracked",
                "propped open",
            ],
            "loc": ["{mach}"],
            "locp": ["on {mach}", "on {mach}", "at {mach}"],
            "act": ["replace", "fix", "reinstall"],
            "tpl": ["Pinch point exposed on {mach}, {comp} {sym}", "{mach} running with the {comp} {sym}"],
        },
        {
            "comp": [
                "e-stop",
                "E-stop button",
                "emergency stop",
                "light curtain",
                "door interlock",
                "interlock switch",
                "safety mat",
                "pull cord",
                "gate switch",
            ],
            "sym": [
                "not working",
                "bypassed",
                "not stopping the machine",
                "taped over",
                "cracked",
                "failed the weekly test",
                "not latching",
                "zip tied",
            ],
            "loc": ["{mach}"],
            "locp": ["on {mach}", "on {mach}", "at {mach}"],
            "act": ["fix", "test", "replace"],
            "tpl": ["{mach} {comp} {sym}, operators still running it", "Weekly check: {comp} on {mach} {sym}"],
        },
        {
            "spill": ["oil", "coolant", "water", "glycol", "product", "grease", "ink", "syrup"],
            "only_tpl": ["y"],
            "tpl": [
                "{spill} spill {locp}, slip hazard",
                "Puddle of {spill} {locp}, need absorbent",
                "{spill} all over the floor {locp}, someone almost fell",
                "Need spill kit {locp}, {spill} on the walkway",
                "Slippery floor {locp} from {spill}, pls clean",
                "{loc}: {spill} spill, {urg}",
            ],
        },
        {
            "comp": ["floor", "floor drain", "floor coating", "expansion joint", "floor plate", "trench cover"],
            "sym": ["cracked", "broken up", "a trip hazard", "sunk", "clogged", "missing", "slippery"],
            "act": ["repair", "fix", "patch"],
            "tpl": ["Pothole in the floor {locp}, pallet jacks getting stuck", "Trip hazard {locp}, {comp} {sym}"],
        },
        {
            "comp": ["lights", "light fixture", "high bay light", "emergency light", "exit sign", "LED panel"],
            "sym": ["out", "flickering", "not working", "dim", "burnt out", "hanging by one chain"],
            "locp": ["in {area}", "over {area}", "above {line}", "in {area}"],
            "act": ["replace", "fix"],
            "tpl": ["Half the {comp} {locp} {sym}, hard to see", "Dark {locp}, {comp} {sym}"],
        },
        {
            "comp": [
                "HVAC",
                "AC",
                "AHU",
                "exhaust fan",
                "makeup air unit",
                "thermostat",
                "unit heater",
                "swamp cooler",
            ],
            "sym": [
                "not cooling",
                "blowing warm air",
                "not working",
                "leaking water",
                "stuck on heat",
                "out",
                "making a racket",
            ],
            "locp": ["in {area}", "for {area}", "in {area}"],
            "act": ["fix", "look at", "check"],
            "tpl": [
                "It's {n2}F {locp}, {comp} {sym}",
                "Too hot {locp}, people are complaining, {comp} {sym}",
                "{comp} {locp} {sym}, freezing in here",
            ],
        },
        {
            "comp": [
                "fire extinguisher",
                "eyewash station",
                "safety shower",
                "first aid kit",
                "AED",
                "sprinkler head",
                "fire alarm pull station",
            ],
            "sym": ["expired", "missing", "blocked", "not flowing", "empty", "out of date", "damaged", "tag overdue"],
            "act": ["replace", "restock", "check", "inspect"],
            "tpl": ["Monthly check: {comp} {locp} {sym}", "{comp} {locp} {sym}, inspection due"],
        },
        {
            "comp": ["roof", "ceiling", "ceiling tile", "skylight", "roof drain", "gutter"],
            "sym": ["leaking", "dripping", "sagging", "stained and wet", "leaking again", "overflowing"],
            "act": ["fix", "repair", "look at"],
            "tpl": ["Roof leaking {locp}, buckets out", "Water dripping from the ceiling {locp}"],
        },
        {
            "comp": ["dock door", "overhead door", "roll-up door", "man door", "fire door", "dock leveler", "window"],
            "sym": ["stuck open", "won't close", "broken", "damaged by forklift", "off its track", "cracked"],
            "act": ["fix", "repair", "look at"],
            "tpl": ["{comp} {locp} {sym}, cold air coming in", "Birds getting in, {comp} {locp} {sym}"],
        },
        {
            "comp": ["restroom toilet", "break room sink", "drinking fountain", "urinal", "hand sink", "water heater"],
            "sym": ["clogged", "leaking", "running constantly", "overflowing", "broken", "no hot water"],
            "locp": ["in {area}", "in the break room", "in the locker room", "by {area}"],
            "act": ["fix", "repair", "look at"],
        },
        {
            "comp": [
                "ladder",
                "step ladder",
                "platform",
                "handrail",
                "stair tread",
                "PPE station",
                "glove dispenser",
                "earplug dispenser",
                "safety glasses station",
                "walkway markings",
                "racking upright",
            ],
            "sym": ["broken rung", "bent", "loose", "empty", "missing", "faded", "damaged by forklift", "wobbly"],
            "act": ["replace", "restock", "fix", "repaint"],
            "tpl": ["{comp} {locp} {sym}, pls tag it out", "Need {comp} {locp} restocked, {sym}"],
        },
    ],
    hard=[
        {  # a missing or defeated safeguard on any machine
            "tpl": [
                "{press_id} hydraulic press guard missing",
                "Guard on {hpu} pump coupling left off after PM",
                "Belt guard missing on {cmp}",
                "Chain guard on {conv} hanging off, pinch point exposed",
                "Guard over the {mach} motor coupling missing",
            ],
        },
        {  # light curtains, e-stops, interlocks, pull cords: Safety even though controls are involved
            "tpl": [
                "Light curtain on {robot} cell not tripping",
                "E-stop on {mach} HMI panel cracked, doesn't latch",
                "Robot cell door interlock on {robot} bypassed with a zip tie",
                "Pull cord on {conv} doesn't stop the motor",
                "{press} two-hand control bypassed, one button taped down",
            ],
        },
        {  # spill clean-up and slip hazards, whatever leaked
            "tpl": [
                "Hyd oil on the walkway near {hpu}, slip hazard, need absorbent",
                "Oil puddle by {press_id}, someone almost slipped, pls clean up",
                "Compressor condensate all over the floor in {area}",
                "Coolant from {cnc} running into the aisle, slip hazard",
            ],
        },
        {  # building lighting and emergency lights (not plant power)
            "tpl": [
                "Lights out over {line}, whole row dark",
                "High bay lights flickering in {area}",
                "Exit sign over the {area} door not lit",
                "Emergency light by {area} failed the monthly test",
            ],
        },
        {  # building fans and HVAC, whatever the failure mode
            "tpl": [
                "Roof exhaust fan over {area} belt squealing",
                "AHU-{n1} blower vibrating, loud in the office",
                "Unit heater in {area} making a grinding noise",
                "Exhaust fan motor in {area} seized, fumes building up",
            ],
        },
        {  # eyewash and showers with low pressure
            "tpl": [
                "Eyewash in {area} low pressure, barely flows",
                "Safety shower by {area} no water pressure",
                "Eyewash station at {hpu} blocked by pallets",
                "Eyewash near the {cmp_name} has rusty water",
            ],
        },
        {  # clearance, labels, housekeeping around electrical equipment
            "tpl": [
                "Electrical panel {panel} blocked by pallets, no 36 in clearance",
                "Arc flash label missing on {panel}",
                "Stuff stacked in front of the disconnect for {mach}",
                "Extension cord run across aisle {n1}, trip hazard",
            ],
        },
        {  # hoses and cables routed into walkways; roof leaks and doors
            "tpl": [
                "Air hose strung across aisle {n1}, trip hazard",
                "Hyd hose hanging at head height by the {press_id} walkway",
                "Roof leaking onto {mach}, water dripping near the panel",
                "Dock door {n1} motor not working, door stuck open",
            ],
        },
    ],
)

CATEGORIES: tuple[Category, ...] = (MECHANICAL, ELECTRICAL, HYDRAULIC, CONTROLS, SAFETY)

# --------------------------------------------------------------------------------------------------------
# Shared objects: one noun, several categories; the symptom decides the route (half of the hard tickets)
# --------------------------------------------------------------------------------------------------------

SHARED_OBJECTS: tuple[dict[str, Sequence[str]], ...] = (
    {
        "obj": ["motor", "mtr", "drive motor", "gear motor", "main motor"],
        "mach": ["{mach_any}", "{mach_any}", "{blower}", "{pump}"],
        "Mechanical": [
            "bearing growling",
            "shaft has play",
            "coupling worn out",
            "vibrating at {vib}",
            "mounting bolts loose",
            "end bell cracked",
            "fan blade hitting the shroud",
        ],
        "Electrical": [
            "tripping on overload",
            "won't start",
            "humming, won't turn",
            "smells burnt",
            "pulling {amps} A",
            "single phasing",
            "megs low to ground",
            "blowing fuses",
        ],
        "Software/Controls": [
            "not getting a run signal from the PLC",
            "speed on HMI doesn't match",
            "starts in manual but not in auto",
        ],
        "Safety/Facilities": ["coupling guard missing", "coupling guard left off after PM"],
    },
    {
        "obj": ["valve", "solenoid valve", "sol valve", "directional valve", "valve on the manifold"],
        "mach": ["{press}", "{hpu}", "{molder}", "{fixture}", "{casepk}", "{pal}", "{filler}", "{capper}"],
        "Hydraulic/Pneumatic": [
            "sticking",
            "leaking by",
            "stuck open",
            "not shifting with the coil energized",
            "hissing",
            "spool sticking",
        ],
        "Electrical": ["coil burnt", "coil open", "no 24V at the coil", "coil connector melted", "coil shorted"],
        "Software/Controls": [
            "not getting an output from the PLC",
            "shows open on the HMI but it's closed",
            "position feedback wrong on HMI",
        ],
    },
    {
        "obj": ["pressure", "system pressure", "line pressure", "working pressure"],
        "mach": ["{press}", "{hpu}", "{molder}", "{fixture}"],
        "Hydraulic/Pneumatic": [
            "dropping, hose weeping",
            "low, leak at a fitting",
            "won't build",
            "bleeding off overnight",
            "falls off under load",
            "drops when the cylinder strokes",
        ],
        "Software/Controls": [
            "reading wrong on HMI",
            "transmitter stuck at 0",
            "display jumping, gauge steady",
            "alarm setpoint wrong",
            "trend not logging on SCADA",
        ],
    },
    {
        "obj": ["pump", "process pump", "CIP pump", "coolant pump", "transfer pump"],
        "mach": ["{pump_id}", "{pump_id}", "{line}"],
        "Mechanical": ["seal leaking product", "bearing growling", "impeller worn", "coupling chewed up"],
        "Electrical": ["motor tripping", "won't start, fuse blown", "motor smells burnt"],
        "Software/Controls": [
            "not starting from the HMI",
            "flow meter reads 0 but pump is running",
            "speed setpoint keeps resetting",
        ],
    },
    {
        "obj": ["temp", "temperature", "running temp"],
        "mach": ["{mach_any}", "{oven}", "{ext}", "{blower}"],
        "mach:Mechanical": ["{conv}", "{mixer}", "{blower}", "{ext}", "{pump}", "{grind}"],
        "mach:Hydraulic/Pneumatic": ["{hpu}", "{press}", "{molder}"],
        "mach:Software/Controls": ["{oven}", "{ext}", "{chiller}", "{mixer}", "{molder}"],
        "Mechanical": ["high on the gearbox, {temp}", "at {temp} on the bearing", "high at the drive end brg"],
        "Hydraulic/Pneumatic": ["high on the hyd oil, {temp}", "up to {temp} on the oil, cooler plugged"],
        "Software/Controls": [
            "reads {tc} on HMI, handheld shows {tc2}",
            "probe reading -40",
            "loop oscillating around setpoint",
        ],
        "Electrical": ["high in the panel, {temp} on IR", "at {temp} on the breaker lugs"],
    },
    {
        "obj": ["noise", "loud noise", "weird noise", "racket"],
        "mach": ["{mach_any}", "{cmp}", "{conv}", "{mixer}"],
        "mach:Hydraulic/Pneumatic": ["{press}", "{molder}", "{casepk}", "{pal}", "{robot}"],
        "Mechanical": [
            "from the gearbox, grinding",
            "from the idler brg, squealing",
            "from the drive, knocking every rev",
        ],
        "Hydraulic/Pneumatic": [
            "from an air line, hissing",
            "from the hyd pump, whining",
            "from the valve bank, air leak hissing",
        ],
        "Electrical": [
            "from the contactor, buzzing",
            "from the control transformer, humming loud",
            "in the panel, sounds like arcing",
        ],
        "Safety/Facilities": ["from the HVAC duct overhead, rattling", "from the roof exhaust fan, squealing"],
    },
    {
        "obj": ["cylinder", "cyl", "clamp cyl", "lift cylinder"],
        "mach": ["{fixture}", "{press}", "{casepk}", "{pal}", "{robot}", "{capper}", "{labeler}", "{conv}"],
        "Hydraulic/Pneumatic": ["leaking at the rod", "drifting down", "slow to extend", "bypassing"],
        "Software/Controls": [
            "extends but HMI says not extended",
            "position sensor not seeing it",
            "reed switch not picking up",
        ],
        "Mechanical": ["mounting bracket cracked", "clevis bracket bent", "mount bolts sheared"],
    },
    {
        "obj": ["encoder", "encoder on the drive", "shaft encoder"],
        "mach": ["{conv}", "{labeler}", "{cnc}", "{robot}", "{casepk}", "{filler}", "{wrap}"],
        "Software/Controls": ["losing counts", "counts jumping", "position drifting", "needs re-homing"],
        "Mechanical": ["coupling broken", "mount loose", "bracket cracked"],
        "Electrical": ["cable cut", "cable crushed", "connector pins bent"],
    },
    {
        "obj": ["light", "lights"],
        "mach": ["{mach_any}"],
        "Safety/Facilities": ["out", "flickering", "burnt out", "hanging loose", "overhead out"],
        "Software/Controls": ["on the stack not showing faults", "on the stack stuck on red, no fault on HMI"],
    },
)
SHARED_HARD_TEMPLATES: tuple[str, ...] = (
    "{mach} {obj} {sym}",
    "{obj} on {mach} {sym}",
    "Operator says {obj} on {mach} {sym}",
    "{obj} {sym} - {mach}",
    "{mach}: {obj} {sym}, pls check",
    "Checked {mach}, {obj} {sym}",
    "{mach} {obj} issue, {sym}",
)

# --------------------------------------------------------------------------------------------------------
# Expansion and noise
# --------------------------------------------------------------------------------------------------------

_SLOT_RE = re.compile(r"\{(\w+)\}")


class Expander:
    """Fills ``{slot}`` references from the first scope that defines them, recursively."""

    def __init__(self, rng: random.Random, scopes: Sequence[Scope]) -> None:
        self.rng = rng
        self.scopes = scopes
        self.cache: dict[str, str] = {}

    def _lookup(self, name: str) -> Slot:
        for scope in self.scopes:
            if name in scope:
                return scope[name]  # type: ignore[return-value]
        raise KeyError(f"unknown slot {{{name}}}")

    def _slot(self, name: str, depth: int) -> str:
        if name in FRESH or name not in self.cache:
            value = self._lookup(name)
            raw = value(self.rng) if callable(value) else self.rng.choice(value)
            text = self.expand(raw, depth + 1)
            if name in FRESH:
                return text
            self.cache[name] = text
        return self.cache[name]

    def expand_fresh(self, name: str) -> str:
        """Expand one option of slot ``name`` that repeats no context slot the ticket already used."""
        options = self._lookup(name)
        if callable(options):
            raise TypeError(f"slot {{{name}}} is not a list of options")
        used = [f"{{{k}}}" for k in CONTEXT_SLOTS if k in self.cache]
        return self.expand(self.rng.choice([o for o in options if not any(u in o for u in used)]))

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > 10:
            raise RecursionError(f"slot recursion too deep in {text!r}")
        return _SLOT_RE.sub(lambda m: self._slot(m.group(1), depth), text)


ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "bearing": ("brg",),
    "bearings": ("brgs",),
    "motor": ("mtr",),
    "hydraulic": ("hyd",),
    "pneumatic": ("pnu", "pneu"),
    "circuit": ("ckt",),
    "please": ("pls", "plz"),
    "with": ("w/",),
    "without": ("w/o",),
    "maintenance": ("maint",),
    "replace": ("repl",),
    "temperature": ("temp",),
    "conveyor": ("conv",),
    "operator": ("op",),
    "cylinder": ("cyl",),
    "pressure": ("pres",),
    "check": ("chk",),
    "about": ("abt",),
    "because": ("bc", "b/c"),
    "minutes": ("min",),
    "transformer": ("xfmr",),
    "someone": ("s/o",),
    "sensor": ("snsr",),
    "the": ("",),
    "and": ("&", "+"),
    "is": ("",),
    "shift": ("shft",),
}
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
    if hard and rng.random() < 0.6:
        obj = rng.choice([o for o in SHARED_OBJECTS if cat.label in o])
        mach = obj.get(f"mach:{cat.label}", obj["mach"])
        group = {"obj": obj["obj"], "sym": obj[cat.label], "mach": mach}
        template = rng.choice(SHARED_HARD_TEMPLATES)
    elif hard:
        group = rng.choice(cat.hard)
        template = rng.choice(group["tpl"])  # type: ignore[arg-type]
    else:
        group = rng.choice(cat.groups)
        own: Sequence[str] = group.get("tpl", ())  # type: ignore[assignment]
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in build(args.seed).items():
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} records to {path}")


if __name__ == "__main__":
    main()
