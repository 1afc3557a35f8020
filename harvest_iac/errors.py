"""One error tree for harvest. Only the CLI turns these into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


def printable(text: str, *, keep: str = "") -> str:
    """`text` safe to show on a terminal: every character that is not printable (control
    characters, bidi overrides and other format characters, line separators, lone surrogates)
    is written as its escape, `\\u202e`, as repr() would; characters in `keep` (a newline in
    a message of several lines) stay."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class HarvestError(Exception):
    """Base of every error harvest reports to a user (exit code 1, no traceback)."""

    exit_code = 1


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a user's file, pointing at the offending key or value."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{printable(self.file)}:{self.line}:{self.col}: {printable(self.message)}"


class SpecError(HarvestError):
    """The desired-state files are invalid. Carries every problem found, sorted."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class TargetError(HarvestError):
    """The target (Modal or the local emulator) cannot be reached or chosen."""


class BackendError(HarvestError):
    """A call to Modal failed permanently; the message names the resource."""


class LockError(HarvestError):
    """The environment's lock is held by someone else."""


class StalePlanError(HarvestError):
    """A saved plan no longer matches the live state it was made from."""
