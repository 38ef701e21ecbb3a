"""Token-level entity mechanics shared by NER recipes: CoNLL/BIO reading, BIO <-> spans, text -> token alignment,
and entity-level scoring with seqeval.

Conventions
  - Tags are IOB2 (`O`, `B-<type>`, `I-<type>`). Reading is lenient the way conlleval and seqeval's default mode
    are: an `I-` tag that follows `O` or another type starts a new entity (IOB1 files read correctly). Writing
    (`spans_to_tags`) always produces IOB2, so adjacent entities of one type stay apart (`B-X B-X`).
  - Token spans are `(start, end, type)` with `end` exclusive.
  - Alignment (`align_entities`) maps predicted entity strings onto a sentence's tokens: an entity matches a run of
    whole tokens whose concatenation equals the entity with all whitespace removed (so "(APC)" matches the tokens
    "( APC )"); a case-sensitive match anywhere in the sentence wins over a case-insensitive one; among matches,
    the first occurrence whose tokens are not yet taken by an earlier entity of the same answer wins. Entities
    are placed in the order the model wrote them, so a mention written twice claims two occurrences. An entity
    that matches nowhere (a paraphrase, part of a token, or every occurrence taken) is dropped and counted.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError, closest
from ftkit.tasks.readers import is_integer, json_type, read_utf8

Span = tuple[int, int, str]
DOCSTART = "-DOCSTART-"
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    lines: list[int]  # line number of each token in its file
    source: str  # "file:line" of the first token


def read_conll(path: Path, types: Sequence[str] | None = None) -> list[Sentence]:
    """Sentences from a CoNLL-style file: one `token<TAB>tag` per line, a blank line between sentences.

    Lines without a tab split on whitespace, so `token tag` works too; with more than two columns the first is the
    token and the last the tag (CoNLL-2003's `token POS chunk tag`); every token line must have as many columns as
    the file's first one (a token with a space in a space-separated file would otherwise lose its first word to the
    tag column unnoticed). `-DOCSTART-` lines are skipped. With `types`, an entity type outside it is an error
    naming the line.
    """
    text = read_utf8(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    width: tuple[int, int] | None = None  # (columns, line) of the first token line

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags), list(lines), f"{path}:{lines[0]}"))
            tokens.clear()
            tags.clear()
            lines.clear()

    # Split at \n only (read_utf8 made every line end one): str.splitlines also splits inside a token at \x0c etc.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            flush()
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if columns[0].strip() == DOCSTART:
            flush()
            continue
        token, tag = columns[0].strip(), columns[-1].strip()
        if len(columns) < 2 or not tag:
            raise FtkitError(
                f"the line {line.strip()!r} has a token but no tag",
                "write one token and its tag per line, e.g. 'fever<TAB>O' or 'asthma<TAB>B-Disease', and leave "
                "a blank line between sentences",
                where=f"{path}:{number}",
            )
        if not token:
            raise FtkitError(
                f"the line {line!r} has a tag but no token",
                "put the token in the first column",
                where=f"{path}:{number}",
            )
        if width is None:
            width = (len(columns), number)
        elif len(columns) != width[0]:
            raise FtkitError(
                f"the line {line.strip()!r} has {len(columns)} columns, and the file's first token line (line "
                f"{width[1]}) has {width[0]}",
                "give every token line the same columns, token first and tag last; separate them with tabs when a "
                "token holds a space",
                where=f"{path}:{number}",
            )
        check_tag(tag, types, where=f"{path}:{number}")
        tokens.append(token)
        tags.append(tag)
        lines.append(number)
    flush()
    if not sentences:
        raise FtkitError(
            "the file holds no sentences", "point to a CoNLL file with at least one token<TAB>tag line", where=str(path)
        )
    return sentences


def check_tag(tag: str, types: Sequence[str] | None, where: str) -> None:
    """Raise FtkitError unless tag is O, B-<type> or I-<type> (with type in types, when given)."""
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise FtkitError(
            f"tag {tag!r} is not O, B-<type> or I-<type>",
            "use IOB2 tags (convert BIOES/BILOU files first: S- -> B-, E- -> I-)",
            where=where,
        )
    if types is not None and kind not in types:
        raise FtkitError(
            f"entity type {kind!r} (tag {tag}) is not one of recipe.entity_types ({', '.join(types)})",
            f"correct the tag, or add the type to recipe.entity_types; {closest(kind, list(types))}",
            where=where,
        )


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """Entity token spans of a tag sequence (an I- after O or after another type starts a new entity)."""
    spans: list[Span] = []
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, this = tag.partition("-")
        continues = prefix == "I" and this == kind and start is not None
        if start is not None and not continues:
            spans.append((start, i, kind))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, this
    return spans


def spans_to_tags(length: int, spans: Sequence[Span]) -> list[str]:
    """IOB2 tags for `length` tokens; spans must not overlap."""
    tags = ["O"] * length
    for start, end, kind in sorted(spans):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end)} is outside a sentence of {length} tokens")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {(start, end, kind)} overlaps another span")
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return tags


def tokenize(text: str, boundaries: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Character (start, end) of each token: runs of word characters and single punctuation marks, also split at
    the given character offsets (entity span edges), so every span covers whole tokens."""
    cuts = set(boundaries)
    offsets = []
    for match in TOKEN_PATTERN.finditer(text):
        start = match.start()
        for cut in sorted(c for c in cuts if match.start() < c < match.end()):
            offsets.append((start, cut))
            start = cut
        offsets.append((start, match.end()))
    return offsets


def sentence_from_char_spans(
    text: str, spans: Any, types: Sequence[str] | None, where: str
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(tokens, IOB2 tags, [(entity text, type)]) for a text with character spans [{"start", "end", "type"}].

    Spans are trimmed of surrounding whitespace; a span that is malformed, outside the text, empty, overlapping
    another, or of a type outside `types` raises FtkitError at `where`.
    """
    if not isinstance(spans, list):
        raise FtkitError(
            f"the spans field must be a list, got {type(spans).__name__}",
            'write spans as a list, e.g. [{"start": 0, "end": 6, "type": "Disease"}] ([] for none)',
            where=where,
        )
    cleaned: list[tuple[int, int, str]] = []
    shape = 'write each span as {"start": <int>, "end": <int>, "type": "<type>"} (character offsets, end exclusive)'
    for span in spans:
        if not isinstance(span, dict):
            raise FtkitError(f"span {span!r} is {json_type(span)}, not an object", shape, where=where)
        start, end, kind = (span.get(k) for k in ("start", "end", "type"))
        for name, offset in (("start", start), ("end", end)):
            # is_integer, not isinstance(int): JSON true/false are Python bools, an int subclass (1 and 0)
            if not is_integer(offset):
                raise FtkitError(
                    f"span {span!r} has {name} {json.dumps(offset)}, which is {json_type(offset)}, not an integer "
                    "character offset",
                    shape,
                    where=where,
                )
        if not (isinstance(kind, str) and kind.strip()):
            raise FtkitError(f"span {span!r} has no type (got {json.dumps(kind)})", shape, where=where)
        if not 0 <= start < end <= len(text):
            raise FtkitError(
                f"span {start}-{end} ({kind}) lies outside the text, which has {len(text)} characters",
                "character offsets start at 0 and end is exclusive; check the offsets against the text",
                where=where,
            )
        if types is not None and kind not in types:
            raise FtkitError(
                f"entity type {kind!r} is not one of recipe.entity_types ({', '.join(types)})",
                f"correct the span's type, or add it to recipe.entity_types; {closest(kind, list(types))}",
                where=where,
            )
        piece = text[start:end]
        if not piece.strip():
            raise FtkitError(f"span {start}-{end} ({kind}) covers only whitespace", "fix or drop the span", where=where)
        start += len(piece) - len(piece.lstrip())
        end -= len(piece) - len(piece.rstrip())
        cleaned.append((start, end, kind))
    cleaned.sort()
    for (s1, e1, k1), (s2, e2, k2) in zip(cleaned, cleaned[1:], strict=False):
        if s2 < e1:
            raise FtkitError(
                f"spans {s1}-{e1} ({k1}) and {s2}-{e2} ({k2}) overlap, which BIO tags cannot represent",
                "keep one of the two (nested entities are not supported)",
                where=where,
            )
    offsets = tokenize(text, [edge for s, e, _ in cleaned for edge in (s, e)])
    # Every non-space character is in a token and span edges are cut points, so each edge is a token edge.
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i + 1 for i, (_, e) in enumerate(offsets)}
    token_spans = [(starts[start], ends[end], kind) for start, end, kind in cleaned]
    tokens = [text[s:e] for s, e in offsets]
    return tokens, spans_to_tags(len(tokens), token_spans), [(text[s:e], k) for s, e, k in cleaned]


def _find(target: str, tokens: Sequence[str], taken: Sequence[bool], fold: bool) -> tuple[int, int] | None:
    for start in range(len(tokens)):
        joined = ""
        for end in range(start, len(tokens)):
            if taken[end]:
                break
            joined += tokens[end].casefold() if fold else tokens[end]
            if joined == target:
                return start, end + 1
            if not target.startswith(joined):
                break
    return None


def align_entities(entities: Sequence[tuple[str, str]], tokens: Sequence[str]) -> tuple[list[Span], int]:
    """Token spans for predicted (text, type) entities, in sentence order, and how many matched nowhere.

    The rule (whitespace-insensitive, exact case first, first untaken occurrence) is in the module docstring.
    """
    taken = [False] * len(tokens)
    spans: list[Span] = []
    missed = 0
    for text, kind in entities:
        target = "".join(text.split())
        found = _find(target, tokens, taken, fold=False) if target else None
        if found is None and target:
            found = _find(target.casefold(), tokens, taken, fold=True)
        if found is None:
            missed += 1
            continue
        start, end = found
        taken[start:end] = [True] * (end - start)
        spans.append((start, end, kind))
    return sorted(spans), missed


def entity_metrics(gold: list[list[str]], predicted: list[list[str]], types: Sequence[str]) -> dict[str, Any]:
    """Entity-level exact-match scores by seqeval (default, conlleval-compatible mode): micro and macro
    precision/recall/F1 and, for every type in `types`, precision, recall, F1, gold support and predicted count."""
    from seqeval.metrics import classification_report
    from seqeval.metrics.sequence_labeling import get_entities

    with warnings.catch_warnings():  # numpy's "mean of empty slice" when nothing is gold or predicted
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    counted = {"gold": get_entities(gold), "predicted": get_entities(predicted)}
    per_type: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(types) | {k for found in counted.values() for k, _, _ in found}):
        row = report.get(kind, {})
        per_type[kind] = {
            "precision": _number(row.get("precision", 0.0)),
            "recall": _number(row.get("recall", 0.0)),
            "f1": _number(row.get("f1-score", 0.0)),
            "support": sum(1 for k, _, _ in counted["gold"] if k == kind),
            "predicted": sum(1 for k, _, _ in counted["predicted"] if k == kind),
        }
    micro, macro = report["micro avg"], report["macro avg"]
    return {
        "micro_precision": _number(micro["precision"]),
        "micro_recall": _number(micro["recall"]),
        "micro_f1": _number(micro["f1-score"]),
        "macro_f1": _number(macro["f1-score"]),  # seqeval's: over the types that occur in gold or predictions
        "gold_entities": len(counted["gold"]),
        "predicted_entities": len(counted["predicted"]),
        "per_class": per_type,
    }


def _number(value: Any) -> float:
    """A JSON-ready float; seqeval's undefined scores (nothing gold, nothing predicted) count as 0."""
    value = float(value)
    return 0.0 if value != value else value
