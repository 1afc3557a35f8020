"""A lean client for Modal's gRPC API, used by `modal_backend` for reads and simple writes.

It speaks the protocol of the installed modal client (`modal_proto`, grpclib), with the same
credentials, headers and transient-error retries (one idempotency key per call), but without
importing the `modal` package (about half a second of start-up), so a plan or a no-change
apply stays fast. The state record is written through it too (its retries are bounded). Deploys,
sandboxes and the lock Dict go through the SDK.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import platform
import ssl
import sys
import tomllib
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harvest_iac.errors import BackendError, TargetError

DEFAULT_SERVER_URL = "https://api.modal.com"
TRANSIENT = ("UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "CANCELLED")
MAX_RETRIES = 4
ATTEMPT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Credentials:
    server_url: str
    token_id: str
    token_secret: str


def _profile(environ: Mapping[str, str]) -> dict[str, Any]:
    """The active profile of the modal config file, as the modal client picks it."""
    path = Path(environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    profiles = {k: v for k, v in data.items() if isinstance(v, dict)}
    wanted = environ.get("MODAL_PROFILE")
    if wanted:
        return profiles.get(wanted, {})
    active = [v for v in profiles.values() if v.get("active")]
    if active:
        return active[0]
    return next(iter(profiles.values())) if len(profiles) == 1 else {}


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    """MODAL_SERVER_URL / MODAL_TOKEN_ID / MODAL_TOKEN_SECRET, else the active profile."""
    env = os.environ if environ is None else environ
    prof = _profile(env)
    server_url = env.get("MODAL_SERVER_URL") or prof.get("server_url") or DEFAULT_SERVER_URL
    token_id = env.get("MODAL_TOKEN_ID") or prof.get("token_id")
    token_secret = env.get("MODAL_TOKEN_SECRET") or prof.get("token_secret")
    if not token_id or not token_secret:
        raise TargetError("no Modal credentials: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or "
                          "run `modal token new`")
    return Credentials(str(server_url), str(token_id), str(token_secret))


def _client_version() -> str:
    try:
        return version("modal")
    except PackageNotFoundError:  # pragma: no cover - modal is a dependency
        return "0"


def _metadata(creds: Credentials) -> dict[str, str]:
    from modal_proto import api_pb2

    uname = platform.uname()
    return {
        "x-modal-client-version": _client_version(),
        "x-modal-client-type": str(api_pb2.CLIENT_TYPE_CLIENT),
        "x-modal-python-version": "%d.%d.%d" % sys.version_info[:3],
        "x-modal-node": urllib.parse.quote(platform.node()),
        "x-modal-platform": urllib.parse.quote(
            "-".join(s.replace("-", "_") for s in (uname.system, uname.release, uname.machine))),
        "x-modal-token-id": creds.token_id,
        "x-modal-token-secret": creds.token_secret,
    }


class NotFound(BackendError):
    """The object does not exist (NOT_FOUND)."""


class AlreadyExists(BackendError):
    """The object exists already (ALREADY_EXISTS)."""


@dataclass
class RpcClient:
    """One channel to Modal; `call()` is safe to run concurrently. Count of RPCs kept."""

    creds: Credentials
    rpcs: int = 0
    _channel: Any = None
    _stub: Any = None
    _metadata: dict[str, str] = field(default_factory=dict)

    @property
    def server_url(self) -> str:
        return self.creds.server_url

    async def open(self) -> RpcClient:
        from grpclib.client import Channel
        from modal_proto import api_grpc

        url = urllib.parse.urlparse(self.creds.server_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise TargetError(f"MODAL_SERVER_URL {self.creds.server_url!r} is not an http(s) URL")
        port = url.port or (443 if url.scheme == "https" else 80)
        tls = ssl.create_default_context() if url.scheme == "https" else None
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._channel = Channel(url.hostname, port, ssl=tls)
        self._stub = api_grpc.ModalClientStub(self._channel)
        self._metadata = _metadata(self.creds)
        return self

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def call(self, method: str, request: Any, *, missing_ok: bool = True) -> Any:
        """One RPC, retried on transient errors with backoff (same idempotency key).
        NOT_FOUND answers None when `missing_ok`, else raises NotFound."""
        from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
        from h2.exceptions import ProtocolError as H2ProtocolError

        key = str(uuid.uuid4())
        delay = 0.1
        for attempt in range(MAX_RETRIES + 1):
            self.rpcs += 1
            md = {**self._metadata, "x-idempotency-key": key, "x-retry-attempt": str(attempt)}
            try:
                return await getattr(self._stub, method)(request, metadata=md,
                                                         timeout=ATTEMPT_TIMEOUT_S)
            except GRPCError as exc:
                status = exc.status.name
                if status == "NOT_FOUND":
                    if missing_ok:
                        return None
                    raise NotFound(str(exc.message)) from exc
                if status == "ALREADY_EXISTS":
                    raise AlreadyExists(str(exc.message)) from exc
                if status in TRANSIENT and attempt < MAX_RETRIES:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if status == "UNAUTHENTICATED":
                    raise TargetError(f"Modal refused the credentials ({exc.message}); check "
                                      "MODAL_TOKEN_ID / MODAL_TOKEN_SECRET") from exc
                raise BackendError(f"{method}: {one_line(exc.message or status)}") from exc
            except (OSError, StreamTerminatedError, ProtocolError, H2ProtocolError,
                    asyncio.TimeoutError) as exc:
                if attempt < MAX_RETRIES:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise unreachable(self.creds.server_url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover


def one_line(text: str) -> str:
    """A message from elsewhere (Modal, a socket) as one line: its lines joined."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def unreachable(server_url: str, exc: BaseException) -> TargetError:
    """The error for a connection to Modal that failed (refused, lost, timed out)."""
    why = one_line(str(exc)) or type(exc).__name__
    return TargetError(f"cannot reach Modal at {server_url} ({why}); check MODAL_SERVER_URL and "
                       "your network, or use --target local")


async def http_put(url: str, data: bytes) -> bytes:
    """Upload to a pre-signed URL (a volume file block); returns the answer's body."""
    import urllib.request

    def put() -> bytes:
        request = urllib.request.Request(url, data=data, method="PUT")
        with urllib.request.urlopen(request, timeout=ATTEMPT_TIMEOUT_S) as resp:  # noqa: S310
            return bytes(resp.read())

    try:
        return await asyncio.to_thread(put)
    except (OSError, http.client.HTTPException) as exc:
        raise BackendError(f"uploading to {urllib.parse.urlparse(url).path}: "
                           f"{one_line(str(exc))}") from exc


async def http_get(url: str) -> bytes:
    """Fetch a pre-signed URL (volume file blocks) without importing aiohttp."""
    import urllib.request

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=ATTEMPT_TIMEOUT_S) as resp:  # noqa: S310
            return bytes(resp.read())

    try:
        return await asyncio.to_thread(get)
    except (OSError, http.client.HTTPException) as exc:
        raise BackendError(f"reading {urllib.parse.urlparse(url).path}: {one_line(str(exc))}") from exc
