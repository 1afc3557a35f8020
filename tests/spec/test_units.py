"""Durations and sizes: the forms users write, and the messages for the ones they get wrong."""

from __future__ import annotations

import pytest

from harvest_iac.spec.names import environment_name_problem, object_name_problem
from harvest_iac.spec.units import UnitError, format_duration, parse_duration, parse_size_mib


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("10m", 600), ("1h", 3600), ("20h", 72000), ("2d", 172800), ("1h30m", 5400),
    ("1.5s", 1.5), ("250ms", 0.25), ("0s", 0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert type(parse_duration(text)) is type(seconds)


@pytest.mark.parametrize(("value", "message"), [
    (300, "a duration needs a unit: write 300s"),
    ("10 minutes", "is not a duration"),
    ("1w", "is not a duration"),
    ("", "is not a duration"),
    (True, "expected a duration"),
    ([1], "expected a duration"),
])
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(("text", "mib"), [("512MiB", 512), ("1GiB", 1024), ("1.5GiB", 1536), ("2Gi", 2048)])
def test_sizes(text: str, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize(("value", "message"), [
    ("1GB", "use binary units"), ("512", "a size needs a unit"), (512, "a size needs a unit"),
    ("0.3MiB", "not a whole number of MiB"), ("lots", "not a size"), ("1 parsec", "unknown size unit"), ("1XiB", "unknown size unit"),
])
def test_bad_sizes(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parse_size_mib(value)


def test_durations_are_shown_in_the_unit_users_write() -> None:
    assert [format_duration(s) for s in (86400, 60, 600, 3600, 172800, 1.5)] == ["24h", "60s", "10m", "1h", "2d",
                                                                                  "1.5s"]


@pytest.mark.parametrize("name", ["agent-state", "a.b_c-1", "x" * 64, "ap-short"])
def test_valid_object_names(name: str) -> None:
    assert object_name_problem(name, "volume") is None


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a/b", "ap-" + "a" * 22, "é"])
def test_invalid_object_names(name: str) -> None:
    assert object_name_problem(name, "volume")


@pytest.mark.parametrize(("name", "valid"), [
    ("dev", True), ("prod-eu_1", True), ("-dev", False), ("prod.eu", False), ("en-dev", False), ("EN-x", False),
])
def test_environment_names(name: str, valid: bool) -> None:
    assert (environment_name_problem(name) is None) is valid
