"""`harvest rollback` against the local Modal: back to the previous harvest deployment through
AppRollback, recorded; the plan shows the YAML's difference as drift until the YAML is reverted;
a second run changes nothing; a kill in the middle then a re-run finishes without rolling back
twice."""

from __future__ import annotations

import json
from pathlib import Path

import modal
import pytest

from tests.conftest import modal_cli
from tests.integration.helpers import harvest, write_env

BODY = """\
harvest: 1
environment: {env}
app: agents

volumes:
  data: {{version: 2}}

crons:
  tick:
    schedule: "0 9 * * *"
    volumes: {{/mnt/data: data}}
    task: reload-volumes
"""


def _history(env: str) -> list[dict[str, object]]:
    out = modal_cli("app", "history", "agents", "--env", env, "--json").stdout
    return list(json.loads(out))


def _schedule(env: str) -> str:
    return str(modal.Function.from_name("agents", "tick", environment_name=env).info().schedule)


def _apply(path: Path) -> None:
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=path.parent)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kill_at", [None, "after:app.agents rollback"])
def test_rollback_serves_the_previous_deployment_and_plan_shows_drift(
        tmp_path: Path, modal_environment: str, kill_at: str | None) -> None:
    env = modal_environment
    modal_cli("volume", "create", "data", "--version", "2", "--env", env)
    path = write_env(tmp_path, env, BODY)
    _apply(path)
    write_env(tmp_path, env, BODY.replace("0 9 * * *", "0 10 * * *"))
    _apply(path)
    assert _schedule(env) == "Cron('0 10 * * *', UTC)"
    versions = len(_history(env))

    refused = harvest("rollback", str(path), "--target", "modal", cwd=tmp_path)
    assert refused.returncode == 1 and "--auto-approve" in refused.stderr
    assert len(_history(env)) == versions
    if kill_at is not None:
        killed = harvest("rollback", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path,
                         env={"HARVEST_KILL_AT": kill_at})
        assert killed.returncode == -9, killed.stderr
        assert harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path).returncode == 0
    done = harvest("rollback", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    if kill_at is None:  # the versions involved are shown (a re-run after a kill only records)
        assert "serving now" in done.stdout and "<- rolls back to this one" in done.stdout, done.stdout
    assert f"Version {versions + 1} of app agents serves version {versions - 1}'s functions" in done.stdout
    history = _history(env)
    assert len(history) == versions + 1  # one rollback, even after a kill
    assert _schedule(env) == "Cron('0 9 * * *', UTC)"
    if kill_at is not None:
        return  # what follows does not depend on how the rollback got done

    plan = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", cwd=tmp_path)
    assert plan.returncode == 2
    assert (f"# app.agents was rolled back with `harvest rollback` to version {versions - 1} (serving as "
            f"version {versions + 1})") in plan.stdout, plan.stdout
    assert '~ schedule = "Cron(\'0 10 * * *\', UTC)" -> "Cron(\'0 9 * * *\', UTC)"' in plan.stdout
    assert harvest("drift", str(path), "--target", "modal", cwd=tmp_path).returncode == 2
    state = harvest("state", "list", str(path), "--target", "modal", cwd=tmp_path)
    assert f"rolled back to version {versions - 1} as version {versions + 1}" in state.stdout

    again = harvest("rollback", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to roll back: already rolled back" in again.stdout
    assert len(_history(env)) == versions + 1
    unknown = harvest("rollback", str(path), "--to", "99", "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert unknown.returncode == 1 and unknown.stderr.startswith("Error: the app has no version 99 (versions: v")

    # the YAML reverted too: apply redeploys it, and the plan and the drift check are clean again
    write_env(tmp_path, env, BODY)
    _apply(path)
    assert harvest("drift", str(path), "--target", "modal", cwd=tmp_path).returncode == 0
    assert {v.name for v in modal.Volume.objects.list(environment_name=env)} == {"data", "harvest-state"}
