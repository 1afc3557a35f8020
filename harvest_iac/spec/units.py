"""Durations and sizes with units, as users write them (`30s`, `10m`, `1h30m`; `512MiB`, `1GiB`).

Pure functions: each returns the normalised number or raises `UnitError` with a message that
says what is wrong and how to write it instead.
"""

from __future__ import annotations

import math
import re

DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_UNITS_MIB: dict[str, float] = {"MiB": 1, "Mi": 1, "GiB": 1024, "Gi": 1024, "TiB": 1024 * 1024, "Ti": 1024 * 1024}
_DECIMAL_SIZE_UNITS = {"k", "K", "KB", "kB", "M", "MB", "G", "GB", "T", "TB", "KiB", "Ki"}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$")

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(MiB|Mi|GiB|Gi|TiB|Ti)$"


class UnitError(ValueError):
    """A duration or size that cannot be read; the message tells the user the fix."""


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def format_duration(seconds: float) -> str:
    """The shortest unit form of a number of seconds (`1800` -> `30m`), for messages."""
    for unit in ("d", "h", "m", "s"):
        size = DURATION_UNITS[unit]
        if (unit == "d" and seconds < 2 * size) or (unit == "m" and seconds <= 60):
            continue
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: object) -> int | float:
    """`"1h30m"` -> 5400. Bare numbers are refused: a unit is always required."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"expected a duration such as 30s, 10m or 1h, got {describe(value)}")
    if not isinstance(value, str):
        raise UnitError(f"a duration needs a unit: write {value:g}s, or use m (minutes), h (hours), d (days)")
    text = value.strip().replace(" ", "")
    if not _DURATION.match(text):
        raise UnitError(f"{value!r} is not a duration: write a number with a unit, such as 30s, 10m, 1h or 1h30m "
                        "(units: ms, s, m, h, d)")
    total = sum(float(n) * DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if not math.isfinite(total):
        raise UnitError(f"{value!r} is too long a duration")
    return _number(round(total, 3))


def parse_size_mib(value: object) -> int:
    """`"1GiB"` -> 1024 (MiB). Binary units only, and the result is a whole number of MiB."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"expected a size such as 512MiB or 1GiB, got {describe(value)}")
    if not isinstance(value, str):
        raise UnitError(f"a size needs a unit: write {value}MiB or {value}GiB")
    match = _SIZE.match(value.strip())
    if not match:
        raise UnitError(f"{value!r} is not a size: write a number with a unit, such as 512MiB or 1GiB")
    number, unit = match.groups()
    if unit in _DECIMAL_SIZE_UNITS:
        raise UnitError(f"{value!r}: use binary units MiB or GiB (Modal counts memory in MiB), e.g. {number}GiB")
    if unit not in SIZE_UNITS_MIB:
        if not unit:
            raise UnitError(f"a size needs a unit: write {number}MiB or {number}GiB")
        raise UnitError(f"{value!r}: unknown size unit {unit!r}; use MiB or GiB")
    mib = float(number) * SIZE_UNITS_MIB[unit]
    if not mib.is_integer():
        raise UnitError(f"{value!r} is not a whole number of MiB; Modal counts memory in whole MiB")
    return int(mib)


def format_size(mib: int) -> str:
    """`1024` -> `1GiB`, `512` -> `512MiB`, for messages."""
    return f"{mib // 1024}GiB" if mib % 1024 == 0 else f"{mib}MiB"


def describe(value: object) -> str:
    """A short description of a YAML value's type, for messages (never the value itself)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
