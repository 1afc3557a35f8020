"""Shared fixtures. Integration tests run the REAL modal client (SDK in-process, CLI as a
subprocess) against one local Modal started for the session; tests isolate themselves by
working in their own Modal environment (`modal_environment`)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

@pytest.fixture(scope="session")
def local_modal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One local Modal for the whole session; os.environ points the SDK at it."""
    from harvest_iac.emulator.server import LocalModal

    data_dir = tmp_path_factory.mktemp("local-modal")
    # Schedules are kept but never fire here: the many test apps' crons must not start
    # containers mid-test (tests/runtime/test_schedules.py fires them in a local Modal of its own).
    lm = LocalModal(data_dir, fire_schedules=False).start()
    saved = {k: os.environ.get(k) for k in lm.client_env()}
    os.environ.update(lm.client_env())
    os.environ.pop("MODAL_ENVIRONMENT", None)
    os.environ.pop("MODAL_PROFILE", None)
    try:
        yield lm
    finally:
        lm.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def modal_environment(local_modal: object) -> str:
    """A fresh Modal environment of the local Modal, for one test."""
    import modal

    name = "t-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(name)
    return name


def modal_cli(*args: str, env_extra: dict[str, str] | None = None, check: bool = True,
              input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `modal` CLI as a subprocess against the session's local Modal."""
    env = dict(os.environ)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "modal", *args],
        capture_output=True, text=True, env=env, input=input, cwd=cwd, timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"modal {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def raw_rpc(method: str, request: object, *, metadata: dict[str, str] | None = None,
            workspace: bool = True, env: Mapping[str, str] | None = None) -> object:
    """Send one RPC straight to the session's local Modal (or the one `env` points at),
    bypassing the client's own checks, with the token the client would send (none with
    `workspace=False`) and `metadata`. Raises grpclib's GRPCError."""
    import asyncio
    from urllib.parse import urlparse

    from grpclib.client import Channel
    from modal_proto import api_grpc

    env = os.environ if env is None else env
    url = urlparse(env["MODAL_SERVER_URL"])
    md = {
        "x-modal-token-id": env["MODAL_TOKEN_ID"],
        "x-modal-token-secret": env["MODAL_TOKEN_SECRET"],
    } if workspace else {}
    md.update(metadata or {})

    async def call() -> object:
        channel = Channel(url.hostname, url.port)
        try:
            stub = api_grpc.ModalClientStub(channel)
            return await getattr(stub, method)(request, metadata=md)
        finally:
            channel.close()

    return asyncio.run(call())
