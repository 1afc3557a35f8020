"""`modal run` (also with `-e`), `app.run()` in a script, `modal app logs` and
`modal container list / stop` against the local Modal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import modal
import pytest

from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc

APP = Path(__file__).parent / "apps" / "run_app.py"
NEVER_RETRIEVED = "Task exception was never retrieved"


@pytest.fixture(scope="module")
def env(local_modal: object) -> str:
    name = "rr-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(name)
    return name


def containers(env: str) -> list[str]:
    """Ids of the environment's running containers (what `modal container list` shows)."""
    listing = raw_rpc("TaskList", api_pb2.TaskListRequest(environment_name=env))
    return [t.task_id for t in listing.tasks]  # type: ignore[attr-defined]


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.3)


def test_modal_run_streams_the_containers_output_and_stops_the_app(env: str) -> None:
    ran = modal_cli("run", "-e", env, str(APP), "--n", "3", cwd=APP.parent)
    assert "local result 9 [0, 1, 4]" in ran.stdout
    assert "in the container: squaring 3" in ran.stdout and "to stderr: 3" in ran.stdout
    assert "App completed" in ran.stdout + ran.stderr and NEVER_RETRIEVED not in ran.stderr
    apps = json.loads(modal_cli("app", "list", "--env", env, "--json").stdout)
    assert [a["state"] for a in apps if a["description"] == "rt-run"] == ["stopped"]
    wait_until(lambda: containers(env) == [])


def test_a_failing_modal_run_reports_the_remote_error(env: str) -> None:
    ran = modal_cli("run", "-e", env, str(APP), "--n", "-2", cwd=APP.parent, check=False)
    assert ran.returncode == 1
    assert "cannot square -2 here" in ran.stderr and NEVER_RETRIEVED not in ran.stderr


def test_app_run_in_a_script(env: str) -> None:
    script = subprocess.run([sys.executable, str(APP), "4"], capture_output=True, text=True, timeout=120,
                            cwd=APP.parent, env={**os.environ, "MODAL_ENVIRONMENT": env})
    assert script.returncode == 0, script.stderr
    assert "script result 16" in script.stdout and "in the container: squaring 4" in script.stdout
    assert NEVER_RETRIEVED not in script.stderr


def test_app_logs_of_a_deployed_app_follow_until_it_stops(env: str) -> None:
    modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent)
    follow = subprocess.Popen([sys.executable, "-m", "modal", "app", "logs", "rt-run", "-f", "--env", env],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert modal.Function.from_name("rt-run", "square", environment_name=env).remote(5) == 25
        assert "in the container: squaring 5" in modal_cli("app", "logs", "rt-run", "--env", env).stdout
        since = modal_cli("app", "logs", "rt-run", "--since", "1h", "--env", env).stdout
        assert "in the container: squaring 5" in since
        modal_cli("app", "stop", "rt-run", "--yes", "--env", env)
        out, _ = follow.communicate(timeout=60)  # the stream ends once the app has stopped
    finally:
        if follow.poll() is None:
            follow.send_signal(signal.SIGKILL)
    assert follow.returncode == 0 and "in the container: squaring 5" in out


def test_container_stop(env: str) -> None:
    modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent)
    assert modal.Function.from_name("rt-run", "square", environment_name=env).remote(2) == 4
    listed = json.loads(modal_cli("container", "list", "--env", env, "--json").stdout)
    (running,) = [c["container_id"] for c in listed]
    apps = json.loads(modal_cli("app", "list", "--env", env, "--json").stdout)
    assert [a["tasks"] for a in apps if a["state"] == "deployed"] == ["1"]
    modal_cli("container", "stop", running, "--yes")
    wait_until(lambda: running not in containers(env))
    assert modal.Function.from_name("rt-run", "square", environment_name=env).remote(3) == 9


def test_container_exec_runs_a_command_in_a_function_container(env: str) -> None:
    modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent)
    assert modal.Function.from_name("rt-run", "square", environment_name=env).remote(6) == 36
    (running,) = [c["container_id"] for c in json.loads(
        modal_cli("container", "list", "--env", env, "--json").stdout)]
    code = "import os, sys; print(os.environ['MODAL_TASK_ID'], os.path.isfile('run_app.py')); print('err', file=sys.stderr)"
    ran = modal_cli("container", "exec", running, "--", "python", "-c", code)
    assert ran.stdout.split()[:2] == [running, "True"] and "err" in ran.stdout + ran.stderr
    modal_cli("app", "stop", "rt-run", "--yes", "--env", env)
