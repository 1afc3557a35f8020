"""Who may call what on the local Modal: only credentials it issued, each for its own calls.

A call is let through on exactly one credential, each verified (signature, expiry, scope,
subject) and allowed only on the surfaces its scope lists in `MAY_CALL`:

* the workspace token (`x-modal-token-id` / `x-modal-token-secret`, printed at start):
  everything;
* a container token (`x-harvest-task-token: <jwt>`, claims `sub` = task id and
  `scope: container`), which function containers get through `MODAL_OVERRIDE_HEADERS`: the
  client API, as code in a Modal container can call it;
* a task command router token (`authorization: Bearer <jwt>`, `scope: router`), from
  SandboxCreateV2 / SandboxGetCommandRouterAccess: the TaskCommandRouter methods only (their
  handlers also check that it names the task they act on).

What the modal client (1.6) sends besides: `x-modal-auth-token` (from AuthTokenGet) on the
V2 sandbox and input-plane calls, always beside the workspace or container credentials. It
opens nothing by itself; when present it must be one we issued to that same caller. The
local Modal issues no sandbox tokens, so an `x-modal-sandbox-token` is refused.

Files (`/blobs`, `/blocks`) go through short-lived signed URLs the API hands out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harvest_iac.emulator.tokens import issue_jwt, verify_jwt

WORKSPACE = "workspace"
CONTAINER = "container"
ROUTER = "router"
AUTH = "auth"

CLIENT_API = "client"  # modal_proto's ModalClient service
TASK_ROUTER = "router"  # modal_proto's TaskCommandRouter service
ADMIN = "admin"  # the emulator's own endpoints (/_stats)

MAY_CALL: dict[str, frozenset[str]] = {
    WORKSPACE: frozenset({CLIENT_API, TASK_ROUTER, ADMIN}),
    CONTAINER: frozenset({CLIENT_API}),
    ROUTER: frozenset({TASK_ROUTER}),
}

TASK_TOKEN_HEADER = "x-harvest-task-token"
URL_LIFETIME_S = 900.0


class Unauthenticated(Exception):
    """A call without a credential valid for it; the message says which."""


@dataclass(frozen=True)
class Caller:
    """Who made a call: the scope of its credential and its subject (a task id, or 'workspace')."""

    scope: str
    subject: str


WORKSPACE_CALLER = Caller(WORKSPACE, WORKSPACE)


#: A container lives as long as it is warm: its token outlasts any container.
CONTAINER_TOKEN_LIFETIME_S = 7 * 24 * 3600.0


def issue_container_token(secret: str, task_id: str) -> str:
    """The token a function container sends (as `x-harvest-task-token`) for task `task_id`."""
    return issue_jwt(secret, {"sub": task_id, "scope": CONTAINER},
                     lifetime_s=CONTAINER_TOKEN_LIFETIME_S)


def verify_scoped(secret: str, token: str, scope: str) -> dict[str, Any] | None:
    """The claims of a valid token of ours with this scope and a subject, else None."""
    claims = verify_jwt(secret, token)
    if claims is None or claims.get("scope") != scope:
        return None
    subject = claims.get("sub")
    return claims if isinstance(subject, str) and subject else None


class Authority:
    """The local Modal's credentials: checks calls, issues tokens, signs file URLs."""

    def __init__(self, token_id: str, token_secret: str) -> None:
        self.token_id = token_id
        self.token_secret = token_secret
        self._url_key = hmac.new(token_secret.encode(), b"harvest-signed-urls", hashlib.sha256).digest()

    # -- calls ---------------------------------------------------------------------
    def authorize(self, surface: str, headers: Mapping[str, str]) -> Caller:
        """The caller, if its credential is valid and may call `surface`; else Unauthenticated."""
        caller = self._identify(headers)
        if surface not in MAY_CALL[caller.scope]:
            raise Unauthenticated(f"A {caller.scope} token cannot make this call")
        self._check_auth_token(headers, caller)
        if headers.get("x-modal-sandbox-token"):
            raise Unauthenticated("Invalid sandbox token: the local Modal issues none")
        return caller

    def _identify(self, headers: Mapping[str, str]) -> Caller:
        if "x-modal-token-id" in headers or "x-modal-token-secret" in headers:
            if self.is_workspace(headers):
                return WORKSPACE_CALLER
            raise Unauthenticated("Invalid token for the local Modal")
        task_token = headers.get(TASK_TOKEN_HEADER)
        if task_token is not None:
            return self._token_caller(task_token, CONTAINER)
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer "):
            return self._token_caller(bearer.removeprefix("Bearer ").strip(), ROUTER)
        raise Unauthenticated(
            "No token for the local Modal: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET to what "
            "`harvest emulator serve` printed"
        )

    def is_workspace(self, headers: Mapping[str, str]) -> bool:
        """Whether the headers carry the workspace token (compared in constant time)."""
        return hmac.compare_digest(
            headers.get("x-modal-token-id", "").encode(), self.token_id.encode()
        ) & hmac.compare_digest(
            headers.get("x-modal-token-secret", "").encode(), self.token_secret.encode()
        )

    def _token_caller(self, token: str, scope: str) -> Caller:
        claims = verify_scoped(self.token_secret, token, scope)
        if claims is None:
            raise Unauthenticated(f"Invalid or expired {scope} token")
        return Caller(scope, str(claims["sub"]))

    def _check_auth_token(self, headers: Mapping[str, str], caller: Caller) -> None:
        token = headers.get("x-modal-auth-token")
        if token is None:
            return
        claims = verify_scoped(self.token_secret, token, AUTH)
        if claims is None or claims["sub"] != caller.subject:
            raise Unauthenticated("Invalid or expired auth token")

    # -- tokens --------------------------------------------------------------------
    def issue(self, scope: str, subject: str) -> str:
        """A token of `scope` for `subject` (a task id, or the caller's subject)."""
        return issue_jwt(self.token_secret, {"sub": subject, "scope": scope})

    def verify(self, token: str, scope: str) -> dict[str, Any] | None:
        return verify_scoped(self.token_secret, token, scope)

    # -- signed file URLs ----------------------------------------------------------
    def sign(self, method: str, path: str, *, max_bytes: int = 0,
             lifetime_s: float = URL_LIFETIME_S) -> str:
        """`path` with a query that lets `method` on it until it expires (PUTs up to `max_bytes`)."""
        expires = int(time.time() + lifetime_s)
        sig = self._signature(method, path, expires, max_bytes)
        return f"{path}?expires={expires}&max_bytes={max_bytes}&sig={sig}"

    def check_signed(self, method: str, path: str, query: Mapping[str, str]) -> int:
        """The byte limit a signed URL grants, if its signature holds and it has not expired."""
        try:
            expires, max_bytes = int(query["expires"]), int(query["max_bytes"])
            sig = query["sig"]
        except (KeyError, ValueError):
            raise Unauthenticated("This URL is not signed by the local Modal") from None
        good = hmac.compare_digest(sig.encode(), self._signature(method, path, expires, max_bytes).encode())
        if not good:
            raise Unauthenticated("Bad signature for this URL")
        if expires < time.time():
            raise Unauthenticated("This URL has expired; ask the local Modal for a new one")
        return max_bytes

    def _signature(self, method: str, path: str, expires: int, max_bytes: int) -> str:
        message = f"{method}\n{path}\n{expires}\n{max_bytes}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()
