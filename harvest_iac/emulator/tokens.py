"""Tokens the local Modal issues: HS256 JWTs signed with its own secret.

The client decodes their payload (`exp`); the server checks the signature, the expiry and
the claims before it lets a call through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

TOKEN_LIFETIME_S = 3600.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_jwt(key: str, claims: dict[str, Any], lifetime_s: float = TOKEN_LIFETIME_S) -> str:
    """An HS256 JWT signed with `key`, expiring after `lifetime_s`."""
    now = int(time.time())
    body = {"iat": now, "exp": int(now + lifetime_s), **claims}
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(body, sort_keys=True).encode())
    sig = hmac.new(key.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{_b64url(sig)}"


def verify_jwt(key: str, token: str) -> dict[str, Any] | None:
    """The claims of a JWT we issued that has not expired, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = hmac.new(key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_b64url(expected), parts[2]):
            return None
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict) or float(claims.get("exp", 0)) < time.time():
        return None
    return claims
