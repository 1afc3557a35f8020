"""Who may call the local Modal: only credentials it issued, each for the calls it is meant
for. Attacks are sent as raw gRPC calls; the real client shows the legitimate paths work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from urllib.parse import urlparse

import modal
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2, task_command_router_grpc
from modal_proto import task_command_router_pb2 as sr_pb2

from harvest_iac.emulator.auth import issue_container_token
from harvest_iac.emulator.tokens import issue_jwt
from tests.conftest import raw_rpc

SECRET_VALUE = "sv-" + uuid.uuid4().hex


def _status(method: str, request: object, metadata: dict[str, str]) -> Status:
    try:
        raw_rpc(method, request, metadata=metadata, workspace=False)
    except GRPCError as err:
        return err.status
    return Status.OK


def _key(local_modal: object) -> str:
    return str(local_modal.emulator.token_secret)  # type: ignore[attr-defined]


@pytest.fixture
def app_with_a_secret(modal_environment: str) -> modal.App:
    modal.Secret.objects.create("guarded", {"TOKEN": SECRET_VALUE}, environment_name=modal_environment)
    return modal.App.lookup("auth", create_if_missing=True, environment_name=modal_environment)


@pytest.mark.parametrize("header", [
    {"x-modal-auth-token": "x"},
    {"x-modal-sandbox-token": "x"},
    {"authorization": "Bearer x"},
    {"x-harvest-task-token": "x"},
    {"x-modal-token-id": "ak-x", "x-modal-token-secret": "as-x"},
    {},
])
def test_a_header_the_local_modal_did_not_issue_opens_nothing(
    app_with_a_secret: modal.App, modal_environment: str, header: dict[str, str]
) -> None:
    listing = api_pb2.SecretListRequest(environment_name=modal_environment)
    assert _status("SecretList", listing, header) == Status.UNAUTHENTICATED
    create = api_pb2.SandboxCreateV2Request(
        app_id=app_with_a_secret.app_id,
        definition=api_pb2.Sandbox(entrypoint_args=["sh", "-c", "env"]),
    )
    assert _status("SandboxCreateV2", create, header) == Status.UNAUTHENTICATED
    assert list(modal.Sandbox.list(app_id=app_with_a_secret.app_id)) == []


def test_forged_expired_and_wrong_scope_tokens_are_refused(
    local_modal: object, modal_environment: str
) -> None:
    key = _key(local_modal)
    listing = api_pb2.SecretListRequest(environment_name=modal_environment)
    refused = {
        "forged": issue_container_token("not-the-key", "ta-forged"),
        "expired": issue_jwt(key, {"sub": "ta-old", "scope": "container"}, lifetime_s=-10),
        "router scope": issue_jwt(key, {"sub": "ta-1", "scope": "router"}),
        "auth scope": issue_jwt(key, {"sub": "workspace", "scope": "auth"}),
        "no scope": issue_jwt(key, {"sub": "ta-1"}),
        "no subject": issue_jwt(key, {"scope": "container"}),
    }
    for what, token in refused.items():
        status = _status("SecretList", listing, {"x-harvest-task-token": token})
        assert status == Status.UNAUTHENTICATED, what
    # A task command router token is for that router only, never for the client API.
    router = issue_jwt(key, {"sub": "ta-1", "scope": "router"})
    assert _status("SecretList", listing, {"authorization": f"Bearer {router}"}) == Status.UNAUTHENTICATED
    # An auth token on its own opens nothing, and beside another caller's credentials is refused.
    auth = issue_jwt(key, {"sub": "workspace", "scope": "auth"})
    assert _status("SecretList", listing, {"x-modal-auth-token": auth}) == Status.UNAUTHENTICATED
    container = issue_container_token(key, "ta-other")
    assert _status("SecretList", listing, {
        "x-harvest-task-token": container, "x-modal-auth-token": auth,
    }) == Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as err:
        raw_rpc("SecretList", listing, metadata={"x-modal-auth-token": "x"})
    assert err.value.status == Status.UNAUTHENTICATED


def test_the_router_token_is_for_its_own_task_only(app_with_a_secret: modal.App) -> None:
    sb = modal.Sandbox.create("sleep", "30", app=app_with_a_secret, timeout=60)
    other = modal.Sandbox.create("sleep", "30", app=app_with_a_secret, timeout=60)
    try:
        access = raw_rpc("SandboxGetCommandRouterAccess",
                         api_pb2.SandboxGetCommandRouterAccessRequest(sandbox_id=other.object_id))
        url = urlparse(os.environ["MODAL_SERVER_URL"])

        async def start_exec(task_id: str) -> Status:
            channel = Channel(url.hostname, url.port)
            try:
                stub = task_command_router_grpc.TaskCommandRouterStub(channel)
                req = sr_pb2.TaskExecStartRequest(task_id=task_id, exec_id=uuid.uuid4().hex,
                                                  command_args=["true"])
                await stub.TaskExecStart(req, metadata={"authorization": f"Bearer {access.jwt}"})  # type: ignore[attr-defined]
            except GRPCError as err:
                return err.status
            return Status.OK

        assert asyncio.run(start_exec(sb._get_task_id())) == Status.UNAUTHENTICATED
        assert asyncio.run(start_exec(other._get_task_id())) == Status.OK
    finally:
        sb.terminate()
        other.terminate()


def test_a_container_token_opens_the_client_api_as_in_a_modal_container(
    local_modal: object, app_with_a_secret: modal.App, modal_environment: str
) -> None:
    """What a function container's own modal client does: no workspace token, the task's
    token in MODAL_OVERRIDE_HEADERS (sent on every RPC), and sandboxes (auth tokens) work."""
    token = issue_container_token(_key(local_modal), "ta-" + uuid.uuid4().hex[:22])
    env = {k: v for k, v in os.environ.items() if k not in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")}
    env.update(MODAL_IS_REMOTE="1", MODAL_OVERRIDE_HEADERS=f"x-harvest-task-token:{token}")
    code = f"""
        import modal
        print(sorted(s.name for s in modal.Secret.objects.list(environment_name={modal_environment!r})))
        app = modal.App.lookup("auth", environment_name={modal_environment!r})
        sb = modal.Sandbox.create("echo", "from a container", app=app, timeout=60)
        sb.wait()
        print(sb.stdout.read().strip())
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['guarded']", "from a container"]
