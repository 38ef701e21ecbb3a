"""The command line of `ftkit train`: Hydra's flags apart from overrides, and trainer.* overrides checked early.

Nothing here imports torch or composes a config; ftkit.config does that with what this returns.
"""

from __future__ import annotations

from typing import Any

from ftkit.config import trainer_fields
from ftkit.errors import FtkitError, closest

# Hydra's command-line flags and whether each takes a value; everything else is an override.
HYDRA_FLAGS = {
    "--help": False,
    "-h": False,
    "--hydra-help": False,
    "--version": False,
    "--resolve": False,
    "--run": False,
    "-r": False,
    "--multirun": False,
    "-m": False,
    "--cfg": True,
    "-c": True,
    "--package": True,
    "-p": True,
    "--info": True,
    "-i": True,
    "--config-path": True,
    "-cp": True,
    "--config-name": True,
    "-cn": True,
    "--config-dir": True,
    "-cd": True,
    "--experimental-rerun": True,
    "--shell-completion": True,
    "-sc": True,
}
INFO_ONLY = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc"}


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra flags (with their values) from overrides."""
    flags, overrides = [], []
    it = iter(range(len(args)))
    for i in it:
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in HYDRA_FLAGS:
            flags.append(arg)
            takes_value = HYDRA_FLAGS[name] and "=" not in arg
            # --info's value is optional; only take the next word if it is not an override.
            if takes_value and i + 1 < len(args) and "=" not in args[i + 1]:
                flags.append(args[i + 1])
                next(it, None)
        elif arg.startswith("-") and "=" not in arg:
            raise FtkitError(
                f"unknown option {arg!r}",
                f"ftkit takes Hydra overrides (key=value) and Hydra's flags; {closest(arg, list(HYDRA_FLAGS))}",
                where="command line",
            )
        else:
            overrides.append(arg)
    return flags, overrides


def parse_overrides(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as error:
            raise FtkitError(
                f"cannot parse the override {text!r} ({str(error).splitlines()[0]})",
                "write key=value; quote values holding spaces or special characters, e.g. "
                "'recipe.system_prompt=\"Route the ticket.\"', and lists as key=[a,b]",
                where="command line",
            ) from None
    return parsed


def rewrite_trainer_overrides(overrides: list[str]) -> list[str]:
    """Let `trainer.<any SFTConfig field>=v` work without Hydra's `+` prefix; refuse unknown fields.

    The trainer group only lists ftkit's defaults, so Hydra's struct mode would reject a valid SFTConfig field
    that is not among them; `++` adds or overrides it. A name that is not an SFTConfig field is refused here.
    """
    rewritten = []
    for text, override in zip(overrides, parse_overrides(overrides), strict=True):
        key = override.key_or_group
        if key.startswith("trainer.") and not override.is_delete():
            name = key.split(".")[1]
            check_trainer_name(name, where=key)
            if trainer_fields.current_name(name) != name:  # the old name of a renamed field: pass the new one
                lhs, sep, rhs = text.partition("=")
                text = lhs.replace(f"trainer.{name}", f"trainer.{trainer_fields.current_name(name)}", 1) + sep + rhs
            if not text.startswith("+"):
                text = "++" + text
        rewritten.append(text)
    return rewritten


def is_key(override: str, key: str) -> bool:
    """Whether an override sets (or, with ~, deletes) key, with or without Hydra's + / ++ prefix."""
    return override.lstrip("+~").split("=", 1)[0] == key


def given_value(overrides: list[str], key: str) -> str | None:
    """The value the last override setting key gives it (as typed), or None when none sets it."""
    given = [o.split("=", 1)[1] for o in overrides if "=" in o and not o.startswith("~") and is_key(o, key)]
    return given[-1] if given else None


def check_trainer_name(name: str, where: str) -> None:
    if name in trainer_fields.OWNED_ELSEWHERE:
        raise FtkitError(f"trainer.{name} is set by ftkit", trainer_fields.OWNED_ELSEWHERE[name], where=where)
    if name not in trainer_fields.load():
        raise FtkitError(
            f"unknown trainer option {name!r}: it is not a field of TRL's SFTConfig",
            closest(name, list(trainer_fields.load())),
            where=where,
        )


def parse_command_options(command: str, args: list[str], defaults: dict[str, str | None]) -> tuple[dict, list[str]]:
    """(options, overrides) of eval / predict / export: `name=value` for the command's own options, the rest config
    overrides (key=value); flags are refused (ftkit.cli answers -h / --help before this is called)."""
    options = dict(defaults)
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        elif arg.startswith("-"):
            raise FtkitError(
                f"ftkit {command} takes no flag {arg!r}",
                f"give {', '.join(f'{k}=' for k in options)} and config overrides (key=value); "
                f"ftkit {command} --help shows them with examples",
                where="command line",
            )
        else:
            overrides.append(arg)
    return options, overrides
