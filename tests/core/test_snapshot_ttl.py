"""The default lifetime of snapshot images: never unbounded unless `ttl: none`."""

from __future__ import annotations

from typing import Any

import pytest

from harvest_iac.desired import MIN_DEFAULT_TTL_S, NO_MAX_AGE_TTL_S, snapshot_ttl
from harvest_iac.estimate import longest_interval
from harvest_iac.spec.models import EnvironmentSpec


def _spec(snapshot: dict[str, Any], crons: dict[str, Any] | None = None) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({
        "harvest": 1, "environment": "dev", "app": "a", "images": {"i": {"from": "debian_slim"}},
        "snapshots": {"warm": {"image": "i", **snapshot}}, "crons": crons or {}})


REFRESH = {"r": {"schedule": "0 */6 * * *", "task": "refresh-snapshots"}}


@pytest.mark.parametrize(("snapshot", "crons", "expected"), [
    ({"ttl": "none"}, None, None),
    ({"ttl": "36h", "max_age": "20h"}, None, 36 * 3600),
    ({}, None, NO_MAX_AGE_TTL_S),  # no max_age: Modal's 30 days
    ({"max_age": "20h"}, REFRESH, MIN_DEFAULT_TTL_S),  # 2 x (20h + 6h) is under a week
    ({"max_age": "3d", "keep": 3}, REFRESH, 2 * 3 * (3 * 86400 + 6 * 3600)),
    ({"max_age": "3d", "keep": 3}, None, 2 * 3 * 3 * 86400),  # re-made by apply only
])
def test_default_ttl(snapshot: dict[str, Any], crons: dict[str, Any] | None, expected: int | None) -> None:
    assert snapshot_ttl(_spec(snapshot, crons), "warm") == expected


def test_longest_interval_between_runs() -> None:
    assert longest_interval("*/30 * * * *", "UTC") == 1800
    assert longest_interval("0 9 * * 1-5", "Europe/Paris") == 3 * 86400  # Friday 9:00 to Monday 9:00
    assert longest_interval("0 0 1 * *", "UTC") == 31 * 86400
