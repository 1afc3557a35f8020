"""The small HTTP endpoint that file and blob bytes go through (the client PUTs and GETs
pre-signed URLs in real Modal; here they point at this server).

* `PUT/GET /blobs/{blob_id}`: blobs made by BlobCreate (mount files of 4 MiB and more, large
  payloads). The PUT answers `ETag: "<md5hex>"`, as S3 does and the client checks.
* `PUT/GET /blocks/{sha256}`: content-addressed blocks (volume files); a PUT is refused when
  the bytes do not hash to the name.
* `GET /_stats`: RPC counts since start, for benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

BLOB_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY, sha256 TEXT, created_at REAL NOT NULL
);
"""


async def start_http(emu: Emulator) -> web.AppRunner:
    emu.store.add_schema(BLOB_SCHEMA)
    app = web.Application(client_max_size=1024**3)

    async def put_blob(request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        with emu.store.tx():
            row = emu.store.one("SELECT id FROM blobs WHERE id = ?", blob_id)
        if row is None:
            return web.Response(status=404, text="unknown blob")
        data = await request.read()
        digest = emu.store.put_bytes(data)
        with emu.store.tx():
            emu.store.run("UPDATE blobs SET sha256 = ? WHERE id = ?", digest, blob_id)
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def get_blob(request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        row = emu.store.one("SELECT sha256 FROM blobs WHERE id = ?", blob_id)
        if row is None or row["sha256"] is None:
            return web.Response(status=404, text="unknown blob")
        return web.Response(body=emu.store.get_bytes(row["sha256"]))

    async def put_block(request: web.Request) -> web.Response:
        digest = request.match_info["sha256"]
        data = await request.read()
        if hashlib.sha256(data).hexdigest() != digest:
            return web.Response(status=400, text="block content does not match its sha256")
        emu.store.put_bytes(data)
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def get_block(request: web.Request) -> web.Response:
        digest = request.match_info["sha256"]
        if not emu.store.has_bytes(digest):
            return web.Response(status=404, text="unknown block")
        # RFC 9530, as Modal sends it: the client checks the block against it.
        b64 = base64.b64encode(bytes.fromhex(digest)).decode()
        return web.Response(body=emu.store.get_bytes(digest), headers={"Repr-Digest": f"sha-256=:{b64}:"})

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(emu.stats.as_dict()), content_type="application/json")

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


def new_blob(emu: Emulator) -> tuple[str, str]:
    """Register a blob id and return (blob_id, upload_url). Call inside a transaction."""
    from harvest_iac.emulator.store import new_id

    blob_id = new_id("bl")
    emu.store.run("INSERT INTO blobs (id, sha256, created_at) VALUES (?, NULL, ?)", blob_id, time.time())
    return blob_id, f"{emu.http_url}/blobs/{blob_id}"


def blob_bytes(emu: Emulator, blob_id: str) -> bytes:
    row = emu.store.one("SELECT sha256 FROM blobs WHERE id = ?", blob_id)
    if row is None or row["sha256"] is None:
        raise KeyError(blob_id)
    return emu.store.get_bytes(row["sha256"])
