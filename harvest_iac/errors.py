"""One error tree for harvest. Only the CLI turns these into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


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
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


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
