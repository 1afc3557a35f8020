"""`modal deploy` of a user-written app against the local Modal, with the real CLI (a
subprocess) and SDK: schedule, retries, volume, secret, resources; redeploy, `--tag`,
`modal app list / history / rollback / stop`, app tags, and `Function.from_name(...).info()`
after each step."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import modal
import pytest

from tests.conftest import modal_cli, raw_rpc

APP_PY = '''
import modal

app = modal.App("nightly-reports", tags={{"owner": "data-team"}})
volume = modal.Volume.from_name("reports-data", create_if_missing=True)
secret = modal.Secret.from_name("reports-creds", required_keys=["API_KEY"])
image = modal.Image.debian_slim(python_version="3.12").pip_install("requests==2.32.3")


@app.function(
    image=image,
    schedule=modal.Cron("{cron}", timezone="Europe/Paris"),
    retries=modal.Retries(max_retries={retries}, backoff_coefficient=2.0, initial_delay=5.0),
    volumes={{"/data": volume}},
    secrets=[secret],
    cpu={cpu},
    memory=1024,
    timeout={timeout},
)
def build_report() -> str:
    return "report"


@app.function(schedule=modal.Period(hours=6))
def cleanup() -> None:
    pass
'''


def write_app(path: Path, *, cron: str = "0 9 * * *", retries: int = 3, cpu: float = 2.0,
              timeout: int = 600) -> Path:
    app_py = path / "app.py"
    app_py.write_text(APP_PY.format(cron=cron, retries=retries, cpu=cpu, timeout=timeout))
    return app_py


def deploy(app_py: Path, env: str, *extra: str) -> str:
    out = modal_cli("deploy", str(app_py), "--env", env, *extra, cwd=app_py.parent)
    return out.stdout + out.stderr


def info(env: str, name: str = "build_report") -> Any:
    return modal.Function.from_name("nightly-reports", name, environment_name=env).info()


def app_list(env: str) -> list[dict[str, Any]]:
    return list(json.loads(modal_cli("app", "list", "--env", env, "--json").stdout))


def history(env: str) -> list[dict[str, Any]]:
    return list(json.loads(
        modal_cli("app", "history", "nightly-reports", "--env", env, "--json").stdout
    ))


@pytest.fixture
def deploy_env(modal_environment: str) -> str:
    modal_cli("secret", "create", "reports-creds", "API_KEY=not-a-real-key",
              "--env", modal_environment)
    return modal_environment


def test_deploy_lifecycle(deploy_env: str, tmp_path: Path) -> None:
    env = deploy_env
    app_py = write_app(tmp_path)

    # -- first deploy --------------------------------------------------------------------
    assert "App deployed" in deploy(app_py, env)
    first = info(env)
    assert first.schedule == "Cron('0 9 * * *', Europe/Paris)"
    assert first.max_retries == 3
    assert first.timeout == 600
    assert first.cpu == 2.0 and first.memory_mib == 1024
    volume = modal.Volume.from_name("reports-data", environment_name=env)
    volume.hydrate()
    secret = modal.Secret.from_name("reports-creds", environment_name=env)
    secret.hydrate()
    assert {p: v.volume_id for p, v in first.volumes.items()} == {"/data": volume.object_id}
    assert first.secrets == [secret.object_id]
    assert first.image_info.image_id and first.image_info.image_id.startswith("im-")
    assert info(env, "cleanup").schedule == "Period(hours=6)"
    fn_id = modal.Function.from_name("nightly-reports", "build_report",
                                     environment_name=env).hydrate().object_id
    policy = _function_get(env, "build_report").function.ranked_functions[0].function.retry_policy
    assert (policy.retries, policy.backoff_coefficient, policy.initial_delay_ms) == (3, 2.0, 5000)

    [listed] = app_list(env)
    assert listed["description"] == "nightly-reports" and listed["state"] == "deployed"
    app = modal.App.lookup("nightly-reports", environment_name=env)
    assert app.get_tags() == {"owner": "data-team"}

    # -- redeploy with a change and a tag ------------------------------------------------
    write_app(tmp_path, cron="30 6 * * 1-5", retries=5, cpu=1.0, timeout=900)
    deploy(app_py, env, "--tag", "release-2")
    second = info(env)
    assert second.schedule == "Cron('30 6 * * 1-5', Europe/Paris)"
    assert (second.max_retries, second.timeout, second.cpu) == (5, 900, 1.0)
    assert modal.Function.from_name("nightly-reports", "build_report",
                                    environment_name=env).hydrate().object_id == fn_id
    assert len(app_list(env)) == 1  # same app, new version
    rows = history(env)
    assert [r["version"] for r in rows] == ["v2", "v1"]
    assert rows[0]["tag"] == "release-2"

    # -- app tags ------------------------------------------------------------------------
    app.set_tags({"owner": "data-team", "managed-by": "harvest"})
    assert modal.App.lookup("nightly-reports", environment_name=env).get_tags() == {
        "owner": "data-team", "managed-by": "harvest"}

    # -- rollback to v1 restores v1's definitions -----------------------------------------
    modal_cli("app", "rollback", "nightly-reports", "v1", "--env", env)
    rolled = info(env)
    assert rolled.schedule == "Cron('0 9 * * *', Europe/Paris)"
    assert (rolled.max_retries, rolled.timeout, rolled.cpu) == (3, 600, 2.0)
    assert [r["version"] for r in history(env)] == ["v3", "v2", "v1"]
    # ... and an app-info summary agrees.
    app_info = json.loads(modal_cli("app", "info", "nightly-reports", "--env", env,
                                    "--json").stdout)
    assert app_info["lifecycle"]["version"] == 3
    summary = app_info["functions"]["build_report"]["summary"]
    assert summary["schedule"]["cron"] == {"cron_string": "0 9 * * *", "timezone": "Europe/Paris"}

    # -- stop ----------------------------------------------------------------------------
    modal_cli("app", "stop", "nightly-reports", "--env", env, "--yes")
    assert [a["state"] for a in app_list(env)] == ["stopped"]
    with pytest.raises(modal.exception.NotFoundError):
        info(env)
    # A new deploy of the name after a stop is a new app.
    deploy(app_py, env)
    states = sorted(a["state"] for a in app_list(env))
    assert states == ["deployed", "stopped"]
    assert [r["version"] for r in history(env)] == ["v1"]


def test_redeploy_unchanged_uploads_nothing_and_keeps_definitions(
    deploy_env: str, tmp_path: Path, local_modal: Any
) -> None:
    app_py = write_app(tmp_path)
    deploy(app_py, deploy_env)
    first = _function_get(deploy_env, "build_report")
    before = local_modal.stats()["calls"].get("MountPutFile", 0)
    deploy(app_py, deploy_env)
    assert local_modal.stats()["calls"].get("MountPutFile", 0) == before
    second = _function_get(deploy_env, "build_report")
    assert second.function_id == first.function_id
    assert second.handle_metadata.definition_id == first.handle_metadata.definition_id
    assert [r["version"] for r in history(deploy_env)] == ["v2", "v1"]


def test_missing_secret_key_fails_the_deploy(modal_environment: str, tmp_path: Path) -> None:
    modal_cli("secret", "create", "reports-creds", "OTHER=1", "--env", modal_environment)
    proc = modal_cli("deploy", str(write_app(tmp_path)), "--env", modal_environment,
                     check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "API_KEY" in proc.stdout + proc.stderr
    assert app_list(modal_environment) == [] or all(
        a["state"] == "stopped" for a in app_list(modal_environment))


def test_large_local_file_goes_through_a_blob(
    modal_environment: str, tmp_path: Path, local_modal: Any
) -> None:
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    (tmp_path / "app.py").write_text(
        "import modal\n"
        "app = modal.App('blob-app')\n"
        "image = modal.Image.debian_slim().add_local_file("
        f"{str(big)!r}, '/opt/model.bin')\n"
        "@app.function(image=image)\n"
        "def f() -> None:\n    pass\n"
    )
    before = local_modal.stats()["calls"].get("BlobCreate", 0)
    modal_cli("deploy", str(tmp_path / "app.py"), "--env", modal_environment, cwd=tmp_path)
    assert local_modal.stats()["calls"].get("BlobCreate", 0) == before + 1
    fn = _function_get(modal_environment, "f", app="blob-app")
    mount_ids = list(fn.function.ranked_functions[0].function.mount_ids)
    emu = local_modal.emulator
    from harvest_iac.emulator.services.mounts import mount_files

    indexes = [_on_loop(local_modal, lambda m=m: mount_files(emu, m)) for m in mount_ids]
    entries = [e for index in indexes for e in index if e["filename"] == "/opt/model.bin"]
    assert len(entries) == 1
    assert emu.store.get_bytes(entries[0]["sha256_hex"]) == big.read_bytes()


def test_a_deployed_function_runs(deploy_env: str, tmp_path: Path) -> None:
    """The scheduled function, with its volume and secret, called by hand (the runtime's
    own tests are in tests/runtime)."""
    deploy(write_app(tmp_path), deploy_env)
    fn = modal.Function.from_name("nightly-reports", "build_report", environment_name=deploy_env)
    stats = fn.get_current_stats()
    assert (stats.backlog, stats.num_total_runners) == (0, 0)
    assert fn.remote() == "report"


def _function_get(env: str, name: str, app: str = "nightly-reports") -> Any:
    from modal_proto import api_pb2

    return raw_rpc("FunctionGet", api_pb2.FunctionGetRequest(
        app_name=app, object_tag=name, environment_name=env))


def _on_loop(lm: Any, fn: Any) -> Any:
    import asyncio

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), lm._loop).result(timeout=10)


def test_history_shows_the_git_commit_deployed(modal_environment: str, tmp_path: Path) -> None:
    import subprocess

    app_py = tmp_path / "app.py"
    app_py.write_text("import modal\napp = modal.App('committed')\n"
                      "@app.function()\ndef f() -> None:\n    pass\n")
    git = ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    # Deploying imports app.py, which writes __pycache__ unless the caller's environment says
    # otherwise; a real project ignores it, and so does this one.
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "app.py", ".gitignore"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout.strip()
    modal_cli("deploy", str(app_py), "--env", modal_environment, cwd=tmp_path)
    rows = json.loads(modal_cli("app", "history", "committed", "--env", modal_environment,
                                "--json").stdout)
    assert rows[0]["commit"] == head[:7]
