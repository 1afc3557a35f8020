"""State record round trip and hashing; target resolution; fire times and cost estimates."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harvest_iac.errors import HarvestError, TargetError
from harvest_iac.estimate import (
    cron_runs_per_month,
    function_run_cost,
    next_cron_fires,
    sandbox_hour_cost,
)
from harvest_iac.state import ResourceRecord, SnapshotRecord, StateRecord
from harvest_iac.targets import resolve_target


def test_state_round_trip_and_serial() -> None:
    st = StateRecord.new("dev", "app").with_resource(
        "snapshot.warm",
        ResourceRecord(spec={"image": "agent"}, snapshots=(SnapshotRecord("im-1", 10.0),)),
    ).bumped()
    again = StateRecord.from_json(st.to_json())
    assert again == st and again.serial == 1


_GOOD = {"format": 1, "environment": "dev", "app": "a", "serial": 1, "lineage": "l", "salt": "s"}


@pytest.mark.parametrize("text, fragment", [
    ("[]", "corrupt"), ('{"format": 99}', "format 99"), ("not json", "corrupt"),
    (json.dumps({**_GOOD, "resources": []}), r"corrupt \(resources: expected a mapping, got a list\)"),
    (json.dumps({**_GOOD, "resources": {"volume.v": "x"}}),
     r"corrupt \(resources\[volume.v\]: expected a mapping, got a string\)"),
    (json.dumps({**_GOOD, "resources": {"volume": {}}}),
     r"corrupt \(resources: 'volume' is not an address like volume.NAME\)"),
    (json.dumps({**_GOOD, "resources": {"volume.v": {"spec": []}}}),
     r"corrupt \(resources\[volume.v\].spec: expected a mapping, got a list\)"),
    (json.dumps({**_GOOD, "resources": {"snapshot.s": {"snapshots": [{"image_id": 1}]}}}),
     r"corrupt \(resources\[snapshot.s\].snapshots\[0\].image_id: expected a string, got a number\)"),
    (json.dumps({**_GOOD, "serial": "7", "resources": {}}), r"corrupt \(serial: expected a whole number"),
])
def test_bad_state_is_a_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(HarvestError, match=fragment) as caught:
        StateRecord.from_json(text)
    assert str(caught.value).endswith("fix or remove it") or "format 99" in fragment


def test_target_resolution(tmp_path: Path) -> None:
    none = {"MODAL_CONFIG_PATH": str(tmp_path / "missing.toml")}
    assert resolve_target(None, none).name == "local"
    assert resolve_target(None, none).notice
    creds = {**none, "MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"}
    assert resolve_target(None, creds).name == "modal"
    assert resolve_target(None, {**creds, "HARVEST_TARGET": "local"}).name == "local"
    with pytest.raises(TargetError, match="no Modal credentials in CI"):
        resolve_target(None, {**none, "CI": "true"})
    assert resolve_target("local", {**none, "CI": "true"}).name == "local"
    with pytest.raises(TargetError, match="unknown target"):
        resolve_target("prod", none)
    profile = tmp_path / "modal.toml"
    profile.write_text('[me]\ntoken_id = "ak-x"\ntoken_secret = "as-x"\nactive = true\n')
    assert resolve_target(None, {"MODAL_CONFIG_PATH": str(profile)}).name == "modal"


def test_cron_fire_times_respect_timezone() -> None:
    now = datetime(2026, 11, 27, 22, 10, tzinfo=timezone.utc)
    fires = next_cron_fires("0 9 * * *", "America/New_York", now)
    assert [f.strftime("%Y-%m-%d %H:%M %Z") for f in fires] == [
        "2026-11-28 09:00 EST", "2026-11-29 09:00 EST", "2026-11-30 09:00 EST"]
    half_hourly = next_cron_fires("*/30 * * * *", "UTC", now)
    assert [f.strftime("%H:%M") for f in half_hourly] == ["22:30", "23:00", "23:30"]


def test_costs() -> None:
    now = datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert cron_runs_per_month("*/30 * * * *", "UTC", now) == pytest.approx(1460, rel=0.01)
    # 10 minutes at 1 core and 1 GiB
    assert function_run_cost(600, 1.0, 1024) == pytest.approx(600 * (0.0000131 + 0.00000222))
    assert sandbox_hour_cost(0.5, 1024) == pytest.approx(3600 * (0.5 * 0.00003942 + 0.00000672))
