"""Schedules on the local Modal: `modal.Period` and `modal.Cron` functions are called at
their times while it runs (here: `harvest emulator serve`), stop with their app, follow
redeploys and rollbacks, and `harvest emulator trigger` runs one now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import modal

from harvest_iac.emulator.runtime.schedules import Cron, Period
from tests.conftest import modal_cli
from tests.emulator.test_serve import serve

TICKS = Path(__file__).parent / "apps" / "ticks_app.py"
CRONS = Path(__file__).parent / "apps" / "crons_app.py"


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.3)


def test_cron_times_follow_the_timezone_and_its_daylight_saving() -> None:
    moment = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)
    paris = Cron("0 9 * * *", "Europe/Paris")
    assert paris.next_after(moment, moment) == datetime(2026, 3, 29, 7, 0, tzinfo=timezone.utc)
    after_switch = datetime(2026, 3, 29, 7, 0, tzinfo=timezone.utc)
    assert paris.next_after(after_switch, moment) == datetime(2026, 3, 30, 7, 0, tzinfo=timezone.utc)
    assert Cron("*/30 * * * *").next_after(moment, moment) == datetime(2026, 3, 28, 12, 30, tzinfo=timezone.utc)


def test_periods_step_from_the_deploy_and_by_calendar_months() -> None:
    deployed = datetime(2026, 1, 31, 10, 0, tzinfo=timezone.utc)
    later = datetime(2026, 1, 31, 10, 0, 7, tzinfo=timezone.utc)
    assert Period(seconds=2.5).next_after(later, deployed) == datetime(2026, 1, 31, 10, 0, 7, 500000,
                                                                       tzinfo=timezone.utc)
    assert Period(months=1).next_after(deployed, deployed) == datetime(2026, 2, 28, 10, 0, tzinfo=timezone.utc)


def _harvest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harvest_iac", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_period_ticks_while_serve_runs_and_stops_with_its_app(tmp_path: Path) -> None:
    with serve(tmp_path / "state") as (_, exports):
        exports.pop("files")

        def ticks() -> int:
            return len(json.loads(modal_cli("dict", "items", "rt-ticks", "--all", "--json",
                                            env_extra=exports).stdout))

        modal_cli("dict", "create", "rt-ticks", env_extra=exports)
        modal_cli("deploy", str(TICKS), env_extra=exports, cwd=TICKS.parent)
        wait_until(lambda: ticks() >= 2)
        modal_cli("app", "stop", "rt-ticks", "--yes", env_extra=exports)
        stopped_at = ticks()
        time.sleep(2.5)  # a period and more: a tick would have come
        assert ticks() <= stopped_at + 1  # at most one that had started before the stop


def test_trigger_runs_a_scheduled_function_now(modal_environment: str) -> None:
    modal_cli("deploy", str(CRONS), "--env", modal_environment, cwd=CRONS.parent)
    runs = modal.Dict.from_name("rt-runs", environment_name=modal_environment, create_if_missing=True)
    env = dict(os.environ)

    def trigger(function: str) -> subprocess.CompletedProcess[str]:
        return _harvest("emulator", "trigger", "rt-crons", function, "--env", modal_environment, env=env)

    ran = trigger("new_year")
    assert ran.returncode == 0, ran.stderr
    assert "rt-crons.new_year ran" in ran.stdout and list(runs.values()) == ["cron"]

    failed = trigger("always_fails")
    assert failed.returncode == 1 and "this job always fails" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert sorted(runs.values()) == ["attempt", "attempt", "cron"]  # the retry ran too

    plain = trigger("plain")
    assert plain.returncode == 1 and "has no schedule" in plain.stderr


def _fires(local_modal: object) -> set[str]:
    """Names of the schedules the in-process local Modal fires now."""
    runtime = local_modal.emulator.runtime  # type: ignore[attr-defined]
    return {entry.name for entry in list(runtime.schedules.entries.values())}


def test_redeploys_rollbacks_and_stops_change_what_fires(local_modal: object, tmp_path: Path) -> None:
    env = "rs-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(env)
    app_py = tmp_path / "sched.py"

    def deploy(schedule_of_a: str, schedule_of_b: str) -> None:
        app_py.write_text(
            "import modal\napp = modal.App('rt-sched')\n"
            f"@app.function({schedule_of_a})\ndef a() -> None:\n    pass\n"
            f"@app.function({schedule_of_b})\ndef b() -> None:\n    pass\n"
        )
        modal_cli("deploy", str(app_py), "--env", env, cwd=tmp_path)

    before = _fires(local_modal)
    deploy("schedule=modal.Period(hours=1)", "")
    assert _fires(local_modal) - before == {"a"}
    deploy("", "schedule=modal.Cron('0 3 * * *')")
    assert _fires(local_modal) - before == {"b"}
    modal_cli("app", "rollback", "rt-sched", "v1", "--env", env)
    assert _fires(local_modal) - before == {"a"}
    modal_cli("app", "stop", "rt-sched", "--yes", "--env", env)
    assert _fires(local_modal) - before == set()


def test_trigger_without_a_running_local_modal_uses_the_data_dir(tmp_path: Path) -> None:
    """No MODAL_SERVER_URL: trigger starts the local Modal on --data-dir itself."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    missing = _harvest("emulator", "trigger", "nope", "f", "--data-dir", str(tmp_path / "d"), env=clean)
    assert missing.returncode == 1 and "no function 'f' in a deployed app 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_deleting_an_environment_stops_its_apps(local_modal: object, tmp_path: Path) -> None:
    # a name no other test deploys: `_fires` sees every environment's schedules
    env = "rd-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(env)
    app_py = tmp_path / "gone.py"
    app_py.write_text("import modal\napp = modal.App('rt-gone')\n"
                      "@app.function(schedule=modal.Period(hours=1), min_containers=1)\n"
                      "def gone_hourly() -> None:\n    pass\n")
    modal_cli("deploy", str(app_py), "--env", env, cwd=tmp_path)
    runtime = local_modal.emulator.runtime  # type: ignore[attr-defined]

    def running() -> list[object]:
        return [t for t in list(runtime.tasks.values()) if t.pool.config.name == "gone_hourly"]

    wait_until(lambda: len(running()) == 1)
    assert "gone_hourly" in _fires(local_modal)
    modal_cli("environment", "delete", env, "--yes")
    assert "gone_hourly" not in _fires(local_modal)
    wait_until(lambda: running() == [])
