"""Apps against the local Modal: SDK deploy and stop, environment scoping and deletion,
state surviving a restart, retried RPCs not doubling versions, and the errors users see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import modal
import pytest

from tests.conftest import modal_cli, raw_rpc

SMALL_APP = """
import modal

app = modal.App("{name}")


@app.function(schedule=modal.Period(minutes={minutes}), timeout=60)
def tick() -> None:
    pass
"""


def write_app(path: Path, name: str = "ticker", minutes: int = 30) -> Path:
    app_py = path / "app.py"
    app_py.write_text(SMALL_APP.format(name=name, minutes=minutes))
    # `minutes=20` has the size of `minutes=30`: rewritten within the second of the last
    # deploy's import, the cached bytecode of the old file would be deployed.
    shutil.rmtree(path / "__pycache__", ignore_errors=True)
    return app_py


sdk_app = modal.App("sdk-app")


@sdk_app.function(schedule=modal.Cron("*/5 * * * *"), serialized=True)
def every_five() -> None:
    pass


def test_sdk_deploy_stop_and_environment_scoping(modal_environment: str) -> None:
    app = sdk_app
    app.deploy(environment_name=modal_environment, tag="sdk-1")
    fn = modal.Function.from_name("sdk-app", "every_five", environment_name=modal_environment)
    assert fn.info().schedule == "Cron('*/5 * * * *', UTC)"
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("sdk-app", "every_five", environment_name="main").hydrate()
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("sdk-app", "nope", environment_name=modal_environment).hydrate()
    listed = json.loads(modal_cli("app", "list", "--env", modal_environment, "--json").stdout)
    assert [a["description"] for a in listed] == ["sdk-app"]
    assert "sdk-app" not in modal_cli("app", "list", "--env", "main", "--json").stdout

    app.stop()
    assert modal.App.lookup("sdk-app", environment_name=modal_environment, create_if_missing=True
                            ).app_id != app.app_id  # the name was freed


def test_errors_users_see(modal_environment: str, tmp_path: Path) -> None:
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError
    from modal_proto import api_pb2

    env = modal_environment
    modal_cli("deploy", str(write_app(tmp_path)), "--env", env, cwd=tmp_path)
    again = modal_cli("app", "rollback", "ticker", "v1", "--env", env, check=False)
    assert again.returncode != 0 and "already at version v1" in again.stdout + again.stderr
    app = modal.App.lookup("ticker", environment_name=env)
    with pytest.raises(GRPCError) as missing:
        raw_rpc("AppRollback", api_pb2.AppRollbackRequest(app_id=app.app_id, version=7))
    assert missing.value.status == Status.NOT_FOUND and "v7 not found" in str(missing.value.message)
    with pytest.raises(GRPCError) as bad_tag:  # the client checks too; prove the server does
        raw_rpc("AppSetTags", api_pb2.AppSetTagsRequest(app_id=app.app_id, tags={"bad key": "x"}))
    assert bad_tag.value.status == Status.INVALID_ARGUMENT
    app.stop()
    stopped = modal_cli("app", "stop", "ticker", "--env", env, "--yes", check=False)
    assert "already stopped" in stopped.stdout + stopped.stderr


DEPLOY_RPCS = frozenset({
    "AppGetOrCreate", "AppCreate", "AppGetLayout", "AppPublish", "AppClientDisconnect",
    "FunctionPrecreate", "FunctionCreate", "ClassCreate", "MountGetOrCreate", "MountPutFile",
    "ImageGetOrCreate", "ImageJoinStreaming", "SecretGetOrCreate", "VolumeGetOrCreate",
})


def test_retried_publish_and_rollback_do_not_double_versions(
    modal_environment: str, tmp_path: Path, local_modal: Any
) -> None:
    env = modal_environment
    app_py = write_app(tmp_path)
    modal_cli("deploy", str(app_py), "--env", env, cwd=tmp_path)
    before = local_modal.stats()
    faults = local_modal.faults
    # A fixed fault sequence, drawn only by the deploy's RPCs (not by what other tests left
    # running on this local Modal, such as heartbeats and schedules): the test is repeatable.
    local_modal.emulator._rng.seed(1234)
    faults.methods = DEPLOY_RPCS
    faults.error_rate = 0.15
    try:
        modal_cli("deploy", str(write_app(tmp_path, minutes=20)), "--env", env, cwd=tmp_path)
    finally:
        faults.error_rate = 0.0
        faults.methods = frozenset()
        local_modal.emulator._rng.seed()  # back to an unpredictable sequence for other tests
    assert local_modal.stats()["injected_errors"] > before["injected_errors"]
    history = json.loads(modal_cli("app", "history", "ticker", "--env", env, "--json").stdout)
    assert [h["version"] for h in history] == ["v2", "v1"]
    assert modal.Function.from_name("ticker", "tick", environment_name=env).info().schedule == (
        "Period(minutes=20)")

    from modal_proto import api_pb2

    app_id = modal.App.lookup("ticker", environment_name=env).app_id
    md = {"x-idempotency-key": f"rollback-{app_id}"}
    for _ in range(3):
        raw_rpc("AppRollback", api_pb2.AppRollbackRequest(app_id=app_id, version=1), metadata=md)
    history = json.loads(modal_cli("app", "history", "ticker", "--env", env, "--json").stdout)
    assert [h["version"] for h in history] == ["v3", "v2", "v1"]
    fn = modal.Function.from_name("ticker", "tick", environment_name=env)
    assert fn.info().schedule == "Period(minutes=30)"


def test_deleting_an_environment_drops_its_apps_images_and_names(
    local_modal: Any, tmp_path: Path
) -> None:
    env = "doomed-env"
    modal.Environment.objects.create(env)
    modal_cli("deploy", str(write_app(tmp_path)), "--env", env, cwd=tmp_path)
    builder = modal.App.lookup("builder", create_if_missing=True, environment_name=env)
    modal.Image.debian_slim().build(builder).publish("base:v1", environment_name=env)
    modal_cli("environment", "delete", env, "--yes")
    modal.Environment.objects.create(env)
    assert json.loads(modal_cli("app", "list", "--env", env, "--json").stdout) == []
    assert json.loads(modal_cli("image", "names", "list", "--env", env, "--json").stdout) == []
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("ticker", "tick", environment_name=env).hydrate()


def test_deployed_state_survives_a_restart(tmp_path: Path) -> None:
    """Deploy against one local Modal, stop it, start another on the same data directory:
    the app, its history and its function definitions are all there."""
    from harvest_iac.emulator.server import LocalModal

    data = tmp_path / "state"
    app_py = write_app(tmp_path, name="durable", minutes=45)
    with LocalModal(data) as first:
        cli(first.client_env(), "deploy", str(app_py), cwd=tmp_path)
        cli(first.client_env(), "deploy", str(app_py), "--tag", "second", cwd=tmp_path)
    with LocalModal(data) as second:
        env = second.client_env()
        history = json.loads(cli(env, "app", "history", "durable", "--json"))
        assert [(h["version"], h.get("tag")) for h in history] == [("v2", "second"), ("v1", None)]
        info = json.loads(cli(env, "app", "info", "durable", "--json"))
        period = info["functions"]["tick"]["summary"]["schedule"]["period"]
        assert period == {"minutes": 45}


def cli(client_env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """The `modal` CLI against a local Modal other than the session's."""
    env = {**os.environ, **client_env}
    proc = subprocess.run([sys.executable, "-m", "modal", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
