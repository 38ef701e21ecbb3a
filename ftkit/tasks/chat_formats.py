"""Instruction-data formats -> one chat shape: a list of {"role", "content"} messages ending on an assistant turn.

Shared by the generation recipes (sft_instruct, report). Four record formats are read, chosen per file from the
first record's keys (or forced with recipe.format):

| format | keys of a record |
| --- | --- |
| `alpaca` | `instruction`, optional `input`, `output` |
| `sharegpt` | `conversations`: [{"from": "system" / "human" / "gpt", "value": ...}, ...] |
| `messages` | `messages`: [{"role": "system" / "user" / "assistant", "content": ...}, ...] |
| `prompt_completion` | `prompt`, `completion`: two strings, or TRL's conversational lists of messages |

Every record becomes a conversation: an optional system turn, then user and assistant turns alternating, ending on
an assistant turn. A record that does not fit is an FtkitError naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.errors import FtkitError, closest
from ftkit.tasks.readers import read_records

Message = dict[str, str]
FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")
FORMAT_KEYS = {
    "messages": "messages",
    "sharegpt": "conversations",
    "prompt_completion": "prompt + completion",
    "alpaca": "instruction + output (input optional)",
}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
ROLES = ("system", "user", "assistant")


def detect_format(record: dict[str, Any], where: str) -> str:
    """The format a record's keys name, checked in the order messages, sharegpt, prompt_completion, alpaca."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    expected = "; ".join(f"{name}: {keys}" for name, keys in FORMAT_KEYS.items())
    raise FtkitError(
        f"cannot tell the record format from its keys ({', '.join(map(repr, record)) or 'none'})",
        f"give the records the keys of one format ({expected}), or name it with recipe.format=<format>",
        where=where,
    )


def load_conversations(path: Path, fmt: str = "auto") -> tuple[str, list[tuple[str, list[Message]]]]:
    """(the file's format, [(file:line, conversation)]) for a JSONL / CSV file; fmt="auto" detects from line 1."""
    rows = read_records(path)
    first_line, first = rows[0]
    detected = detect_format(first, f"{path}:{first_line}") if fmt == "auto" else fmt
    how = f"detected from line {first_line}" if fmt == "auto" else "set by recipe.format"
    conversations = [(f"{path}:{line}", to_messages(record, detected, f"{path}:{line}", how)) for line, record in rows]
    return detected, conversations


def alpaca_user_turn(instruction: str, extra: str | None) -> str:
    """The user turn of an alpaca record: the instruction, then its input after a blank line when there is one."""
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra and extra.strip() else instruction.strip()


def to_messages(record: dict[str, Any], fmt: str, where: str, how: str = "set by recipe.format") -> list[Message]:
    """A record of format fmt as a checked conversation; FtkitError (at where) when it does not fit."""
    if fmt == "alpaca":
        instruction = _text(record, "instruction", fmt, where, how)
        extra = record.get("input")
        if extra is not None and not isinstance(extra, str):
            raise FtkitError(
                f"field 'input' must be text, got {extra!r}", "make it a string (or leave it out)", where=where
            )
        user = alpaca_user_turn(instruction, extra)
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(record, "output", fmt, where, how)},
        ]
    elif fmt == "sharegpt":
        turns = _turns(record, "conversations", fmt, where, how)
        messages = []
        for index, turn in enumerate(turns):
            speaker, value = _pair(turn, ("from", "value"), f"conversations[{index}]", where)
            if speaker not in SHAREGPT_ROLES:
                raise FtkitError(
                    f"conversations[{index}] comes from {speaker!r}, which is not a ShareGPT role ftkit reads",
                    f"use one of {', '.join(SHAREGPT_ROLES)}; {closest(speaker, list(SHAREGPT_ROLES))}",
                    where=where,
                )
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": value})
    elif fmt == "messages":
        messages = _message_list(_turns(record, "messages", fmt, where, how), "messages", where)
    elif fmt == "prompt_completion":
        prompt, completion = (_field(record, key, fmt, where, how) for key in ("prompt", "completion"))
        if isinstance(prompt, str) and isinstance(completion, str):
            messages = [
                {"role": "user", "content": _text(record, "prompt", fmt, where, how)},
                {"role": "assistant", "content": _text(record, "completion", fmt, where, how)},
            ]
        elif isinstance(prompt, list) and isinstance(completion, list):
            messages = _message_list(prompt, "prompt", where) + _message_list(completion, "completion", where)
            if len(completion) != 1 or messages[-1]["role"] != "assistant":
                raise FtkitError(
                    "a conversational completion must be exactly one assistant message",
                    'write "completion": [{"role": "assistant", "content": "..."}]',
                    where=where,
                )
        else:
            raise FtkitError(
                f"prompt and completion must both be text or both be lists of messages, got "
                f"{type(prompt).__name__} and {type(completion).__name__}",
                'write {"prompt": "...", "completion": "..."} or TRL\'s conversational form',
                where=where,
            )
    else:
        raise FtkitError(
            f"unknown record format {fmt!r}", f"use one of auto, {', '.join(FORMATS)}", where="recipe.format"
        )
    check_conversation(messages, where)
    return messages


def with_system_prompt(messages: list[Message], system_prompt: str | None) -> list[Message]:
    """The messages with recipe.system_prompt as the first turn, when set and the messages have no system turn."""
    if system_prompt is None or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def check_conversation(messages: list[Message], where: str) -> None:
    """Optional system turn first, then user / assistant alternating, ending on an assistant turn."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            position = index + len(messages) - len(body)
            raise FtkitError(
                f"turn {position} has role {message['role']!r} where {expected!r} belongs (roles in order: "
                f"{', '.join(m['role'] for m in messages)})",
                "start with an optional system turn, then alternate user and assistant turns; merge consecutive "
                "turns of one speaker",
                where=where,
            )
    if not body or body[-1]["role"] != "assistant":
        raise FtkitError(
            "the conversation does not end on an assistant turn, so it has no reference answer",
            "end every record with the assistant's answer (drop a trailing user turn)",
            where=where,
        )


def assistant_turns(messages: list[Message]) -> list[list[Message]]:
    """One conversation per assistant turn, each ending on that turn: the units trained on."""
    return [messages[: index + 1] for index, message in enumerate(messages) if message["role"] == "assistant"]


def _field(record: dict[str, Any], key: str, fmt: str, where: str, how: str) -> Any:
    if key not in record:
        raise FtkitError(
            f"the record has no {key!r} field, so it does not fit the {fmt} format {how} (it has: "
            f"{', '.join(map(repr, record)) or 'none'})",
            f"give every record {FORMAT_KEYS[fmt]}; a file that mixes formats must be split into one file per "
            "format (recipe.data.<split> takes a list of files), and recipe.format=auto detects each",
            where=where,
        )
    return record[key]


def _text(record: dict[str, Any], key: str, fmt: str, where: str, how: str) -> str:
    value = _field(record, key, fmt, where, how)
    if not isinstance(value, str) or not value.strip():
        raise FtkitError(f"field {key!r} must be non-empty text, got {value!r}", "fix or drop the record", where=where)
    return value.strip()


def _turns(record: dict[str, Any], key: str, fmt: str, where: str, how: str) -> list[Any]:
    value = _field(record, key, fmt, where, how)
    if not isinstance(value, list) or not value:
        raise FtkitError(
            f"field {key!r} must be a non-empty list of turns, got {type(value).__name__}",
            f"write {key} as a JSON list of turn objects",
            where=where,
        )
    return value


def _pair(turn: Any, keys: tuple[str, str], name: str, where: str) -> tuple[str, str]:
    """The two text fields of one turn object (role and content, or from and value)."""
    if not isinstance(turn, dict) or any(key not in turn for key in keys):
        shown = ", ".join(map(repr, turn)) if isinstance(turn, dict) else type(turn).__name__
        raise FtkitError(
            f"{name} is not a turn with {keys[0]!r} and {keys[1]!r} (it has: {shown})",
            f'write each turn as {{"{keys[0]}": ..., "{keys[1]}": ...}}',
            where=where,
        )
    speaker, content = turn[keys[0]], turn[keys[1]]
    if not isinstance(content, str) or not content.strip():
        raise FtkitError(
            f"{name}.{keys[1]} must be non-empty text, got {content!r}", "fix or drop the turn", where=where
        )
    return str(speaker), content.strip()


def _message_list(turns: list[Any], name: str, where: str) -> list[Message]:
    messages = []
    for index, turn in enumerate(turns):
        role, content = _pair(turn, ("role", "content"), f"{name}[{index}]", where)
        if role not in ROLES:
            raise FtkitError(
                f"{name}[{index}] has role {role!r}, which ftkit does not train on",
                f"use one of {', '.join(ROLES)}; {closest(role, list(ROLES))}",
                where=where,
            )
        messages.append({"role": role, "content": content})
    return messages
