"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: a wrong name, value, file or spec. Never shown with a traceback."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """An error for an unknown `name` of `kind`, suggesting the closest valid one."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = f"'{name}'" if str(name).isprintable() else repr(name)  # a newline in a name stays on one line
    return UserError(f"unknown {kind} {shown}{hint} (valid: {', '.join(valid)})")


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type's name where it has none): a foreign error in one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
