"""Shared fixtures. Integration tests run the REAL modal client (SDK in-process, CLI as a
subprocess) against one local Modal started for the session; tests isolate themselves by
working in their own Modal environment (`modal_environment`).

Tests use no network: every local Modal they start (in-process, or `harvest` and `modal`
subprocesses, which inherit this environment) builds images with pip pointed at a wheelhouse
of small wheels the session builds (`PIP_NO_INDEX=1`, `PIP_FIND_LINKS`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.wheels import build_wheel

REPO = Path(__file__).resolve().parent.parent

#: Every package that an image of the tests installs (the example environments', the test
#: specs' and test apps'), at a version their pins accept.
IMAGE_PACKAGES = {"requests": "2.32.3", "numpy": "1.0", "pandas": "1.0", "anthropic": "1.0",
                  "openai": "1.0", "httpx": "1.0", "rich": "1.0"}


@contextmanager
def environ(updates: Mapping[str, str | None]) -> Iterator[None]:
    """os.environ with `updates` (None: unset) while the block runs."""
    saved = {k: os.environ.get(k) for k in updates}
    try:
        for k, v in updates.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session", autouse=True)
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheels of IMAGE_PACKAGES, and pip (of the host, so of image builds) limited to them."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    for name, version in IMAGE_PACKAGES.items():
        build_wheel(folder, name, version=version)
    with environ({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder)}):
        yield folder


@pytest.fixture(scope="session", autouse=True)
def layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One layer cache (HARVEST_LAYER_CACHE) for every local Modal of the session: a recipe
    chain is built once, whichever test, environment or data folder asks for it."""
    folder = tmp_path_factory.mktemp("layer-cache")
    with environ({"HARVEST_LAYER_CACHE": str(folder)}):
        yield folder


@pytest.fixture(scope="session")
def local_modal(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path,
                layer_cache: Path) -> Iterator[object]:
    """One local Modal for the whole session; os.environ points the SDK at it."""
    from harvest_iac.emulator.server import LocalModal

    # Schedules are kept but never fire here: the many test apps' crons must not start
    # containers mid-test (tests/runtime/test_schedules.py fires them in a local Modal of its own).
    lm = LocalModal(tmp_path_factory.mktemp("local-modal"), fire_schedules=False).start()
    try:
        with environ({**lm.client_env(), "MODAL_ENVIRONMENT": None, "MODAL_PROFILE": None}):
            yield lm
    finally:
        lm.stop()


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


def run_client(lm: object, code: str) -> str:
    """Run Python that uses the real modal SDK against the local Modal `lm` (not the session's:
    the in-process SDK is bound to that one); returns its stdout."""
    env = {**os.environ, **lm.client_env()}  # type: ignore[attr-defined]
    env.pop("MODAL_ENVIRONMENT", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


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
