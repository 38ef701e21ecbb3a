"""User-facing errors: one paragraph that names the problem, where it is and the fix; exit code 2."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

USAGE_ERROR = 2
# Console log lines outside Hydra's run (eval, predict, export, serve, resume's plan) look like Hydra's own.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

F = TypeVar("F", bound=Callable[..., Any])


class FtkitError(Exception):
    """A mistake in what the user gave us (config, command line, data), as opposed to a bug in ftkit."""

    def __init__(self, problem: str, fix: str, where: str | None = None) -> None:
        self.problem, self.fix, self.where = problem.rstrip("."), fix.rstrip("."), where
        super().__init__(str(self))

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        end = "" if self.fix.endswith(("?", ")")) else "."
        return one_line(f"{place}{self.problem}. Fix: {self.fix}{end}")


def one_line(text: str) -> str:
    """text with every character that is not printable escaped (\\x0b, \\n, \\u2028): a value quoted from a file or
    the command line must not break the one-paragraph error into lines, or hide in it."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def debug() -> bool:
    return os.environ.get("FTKIT_DEBUG", "") not in ("", "0")


def exit_on_user_error(func: F) -> F:
    """Print an FtkitError as one paragraph and exit 2; with FTKIT_DEBUG=1 let the traceback through.

    It also guards the Hydra task function: Hydra would otherwise print its own report and exit 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FtkitError as error:
            if debug():
                raise
            print(f"ftkit: error: {error}", file=sys.stderr)
            sys.exit(USAGE_ERROR)
        except OSError as error:
            if debug() or error.errno not in PATH_ERRORS:
                raise
            print(f"ftkit: error: {path_error(error)}", file=sys.stderr)
            sys.exit(USAGE_ERROR)

    return wrapper  # type: ignore[return-value]


# What the file system answers about a path itself (as typed, or where it leads): the path is the user's to change.
PATH_ERRORS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS}


def path_error(error: OSError) -> FtkitError:
    """A path that the file system refuses, wherever it was given (a data file, a run or output directory, ...)."""
    name = str(error.filename) if error.filename is not None else "a path given on the command line"
    shown = name if len(name) <= 80 else f"{name[:60]}...({len(name)} characters)"
    return FtkitError(
        f"the file system refuses the path {shown!r}: {error.strerror or error}",
        "check the paths on the command line and in the config (each name under 255 bytes, folders that exist "
        "and that you may read and write)",
    )


def closest(word: str, candidates: list[str]) -> str:
    """'did you mean' text for an unknown name, or the list of valid names when nothing is close."""
    import difflib

    near = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    if near:
        return "did you mean " + " or ".join(repr(n) for n in near) + "?"
    shown = ", ".join(sorted(candidates)[:25]) + (", ..." if len(candidates) > 25 else "")
    return f"valid names: {shown}"
