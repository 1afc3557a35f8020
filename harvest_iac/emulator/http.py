"""The small HTTP endpoint that file and blob bytes go through (the client PUTs and GETs
pre-signed URLs in real Modal; here they point at this server).

Every URL the API hands out is signed (`Authority.sign`: method, path, expiry and byte
limit under an HMAC of the emulator's secret) and good for a few minutes; anything else is
refused with 403. A PUT larger than its URL allows is refused with 413.

* `PUT/GET /blobs/{blob_id}`: blobs made by BlobCreate (mount files of 4 MiB and more, large
  payloads), at most the declared length. The PUT answers `ETag: "<md5hex>"`, as S3 does and
  the client checks. A blob id lives an hour unless a `blob_roots` hook keeps it.
* `PUT/GET /blocks/{sha256}`: content-addressed blocks (volume files), at most 8 MiB; a PUT
  is refused when the bytes do not hash to the name.
* `GET /_stats`: RPC counts since start, with the workspace token in the headers
  (`x-modal-token-id`, `x-modal-token-secret`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from harvest_iac.emulator.auth import ADMIN, Unauthenticated
from harvest_iac.emulator.store import Store, new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

log = logging.getLogger("harvest.emulator")

BLOB_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY, sha256 TEXT, created_at REAL NOT NULL
);
"""
BLOB_MAX_BYTES = 1024**3
"""The largest blob: above it the modal client uploads in parts, which is not implemented."""
BLOCK_MAX_BYTES = 8 * 1024 * 1024
BLOB_LIFETIME_S = 3600.0
_CHUNK = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start_http(emu: Emulator) -> web.AppRunner:
    emu.store.add_schema(BLOB_SCHEMA)
    emu.content_roots.append(lambda: _blob_digests(emu.store))
    store, authority = emu.store, emu.authority

    def limit(request: web.Request) -> int:
        """The byte limit the request's signed URL grants, or 403."""
        try:
            return authority.check_signed(request.method, request.path, request.query)
        except Unauthenticated as exc:
            raise web.HTTPForbidden(text=str(exc)) from None

    async def put_blob(request: web.Request) -> web.Response:
        max_bytes = limit(request)
        blob_id = request.match_info["blob_id"]
        if store.one("SELECT id FROM blobs WHERE id = ?", blob_id) is None:
            return web.Response(status=404, text="unknown blob")
        digest, md5 = await _receive(request, store, max_bytes)
        with store.tx():
            store.run("UPDATE blobs SET sha256 = ? WHERE id = ?", digest, blob_id)
        return web.Response(status=200, headers={"ETag": f'"{md5}"'})

    async def get_blob(request: web.Request) -> web.Response:
        limit(request)
        try:
            digest = _blob_digest(store, request.match_info["blob_id"])
        except KeyError:
            return web.Response(status=404, text="unknown blob")
        return web.Response(body=store.get_bytes(digest))

    async def put_block(request: web.Request) -> web.Response:
        max_bytes = limit(request)
        name = request.match_info["sha256"]
        digest, md5 = await _receive(request, store, max_bytes, expected_sha256=name)
        return web.Response(status=200, headers={"ETag": f'"{md5}"'})

    async def get_block(request: web.Request) -> web.Response:
        limit(request)
        digest = request.match_info["sha256"]
        if not store.has_bytes(digest):
            return web.Response(status=404, text="unknown block")
        # RFC 9530, as Modal sends it: the client checks the block against it.
        b64 = base64.b64encode(bytes.fromhex(digest)).decode()
        return web.Response(body=store.get_bytes(digest), headers={"Repr-Digest": f"sha-256=:{b64}:"})

    async def stats(request: web.Request) -> web.Response:
        try:
            authority.authorize(ADMIN, request.headers)
        except Unauthenticated as exc:
            raise web.HTTPUnauthorized(text=str(exc)) from None
        return web.Response(text=json.dumps(emu.stats.as_dict()), content_type="application/json")

    app = web.Application(middlewares=[_logged])
    app.router.add_put("/blobs/{blob_id}", put_blob)
    app.router.add_get("/blobs/{blob_id}", get_blob)
    app.router.add_put("/blocks/{sha256}", put_block)
    app.router.add_get("/blocks/{sha256}", get_block)
    app.router.add_get("/_stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, emu.host, emu.http_port)
    await site.start()
    server: Any = site._server
    emu.http_port = server.sockets[0].getsockname()[1]
    return runner


@web.middleware
async def _logged(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log each request's method, route, status and duration (never the query: it is a credential)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else "(no route)"
        log.debug("http %s %s %d %.1f ms", request.method, path, status,
                  (time.perf_counter() - start) * 1000)


async def _receive(request: web.Request, store: Store, max_bytes: int, *,
                   expected_sha256: str | None = None) -> tuple[str, str]:
    """Store a PUT's body (413 past `max_bytes`, 400 if it does not hash to `expected_sha256`);
    returns its sha256 and md5 (hex)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)
    md5 = hashlib.md5()
    with store.incoming() as upload:
        while chunk := await request.content.read(_CHUNK):
            if upload.size + len(chunk) > max_bytes:
                raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=upload.size + len(chunk))
            upload.write(chunk)
            md5.update(chunk)
        if expected_sha256 is not None and upload.sha256.hexdigest() != expected_sha256:
            raise web.HTTPBadRequest(text="block content does not match its sha256")
        return upload.commit(), md5.hexdigest()


def new_blob(emu: Emulator, size: int) -> tuple[str, str]:
    """Register a blob id for `size` bytes and return (blob_id, signed upload URL). Call
    inside a transaction."""
    blob_id = new_id("bl")
    emu.store.run("INSERT INTO blobs (id, sha256, created_at) VALUES (?, NULL, ?)", blob_id, time.time())
    return blob_id, file_url(emu, "PUT", f"/blobs/{blob_id}", max_bytes=size)


def blob_url(emu: Emulator, blob_id: str) -> str:
    """A signed download URL of an uploaded blob; KeyError if there is none."""
    _blob_digest(emu.store, blob_id)
    return file_url(emu, "GET", f"/blobs/{blob_id}")


def block_url(emu: Emulator, method: str, digest: str) -> str:
    """A signed URL to upload (PUT) or download (GET) one volume block."""
    return file_url(emu, method, f"/blocks/{digest}", max_bytes=BLOCK_MAX_BYTES if method == "PUT" else 0)


def file_url(emu: Emulator, method: str, path: str, *, max_bytes: int = 0) -> str:
    return emu.http_url + emu.authority.sign(method, path, max_bytes=max_bytes)


def blob_bytes(emu: Emulator, blob_id: str) -> bytes:
    return emu.store.get_bytes(_blob_digest(emu.store, blob_id))


def _blob_digest(store: Store, blob_id: str) -> str:
    """The sha256 of an uploaded blob; KeyError if unknown or not uploaded."""
    row = store.one("SELECT sha256 FROM blobs WHERE id = ?", blob_id)
    if row is None or row["sha256"] is None:
        raise KeyError(blob_id)
    return str(row["sha256"])


def expire_blobs(store: Store, keep: set[str], now: float) -> None:
    """Forget blob ids older than BLOB_LIFETIME_S that no root keeps (their bytes stay while
    anything else references them)."""
    for row in store.all("SELECT id FROM blobs WHERE created_at < ?", now - BLOB_LIFETIME_S):
        if row["id"] not in keep:
            store.run("DELETE FROM blobs WHERE id = ?", row["id"])


def _blob_digests(store: Store) -> Iterable[str]:
    return [row["sha256"] for row in store.all("SELECT sha256 FROM blobs WHERE sha256 IS NOT NULL")]
