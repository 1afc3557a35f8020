"""Mounts and blobs.

File contents live in the store's content-addressed byte store (by sha256), shared by
every mount: `MountBatchedCheckExistence` says which hashes are missing, `MountPutFile`
adds one (inline bytes, or a blob id for files of 4 MiB and more), `MountGetOrCreate`
records a mount's index (file name, hash, mode). Anonymous mounts with the same index in
the same app (or environment) get the same id, so an unchanged redeploy keeps identical
function definitions.

The global `modal-client-mount-<version>` mount the client asks for on deploy exists for
every client version, and so do the `python-build-standalone.*` mounts that `add_python`
copies Python from (empty: the host's Python stands in, see `runtime.images`).

Blobs: `BlobCreate` answers an upload URL on the emulator's HTTP endpoint (`http.py`),
`BlobGet` a download URL.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.http import BLOB_MAX_BYTES, blob_bytes, blob_url, new_blob
from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.store import dumps, new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS mounts (
    id TEXT PRIMARY KEY,
    env_id TEXT,
    app_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    namespace INTEGER NOT NULL DEFAULT 0,
    checksum TEXT NOT NULL,
    files TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mounts_name ON mounts (namespace, env_id, name);
CREATE INDEX IF NOT EXISTS mounts_checksum ON mounts (app_id, env_id, checksum);
"""

CLIENT_MOUNT_PREFIX = "modal-client-mount-"
_BUILTIN_MOUNTS = (CLIENT_MOUNT_PREFIX, "python-build-standalone.")
GLOBAL = api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL


def mount_files(emu: Emulator, mount_id: str) -> list[dict[str, Any]]:
    """A mount's index: [{filename, sha256_hex, mode, size}]; bytes via store.get_bytes."""
    row = emu.store.one("SELECT files FROM mounts WHERE id = ?", mount_id)
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"Mount '{mount_id}' not found")
    return list(json.loads(row["files"]))


def _index(files: Any) -> tuple[list[dict[str, Any]], str]:
    entries = sorted(
        ({"filename": f.filename, "sha256_hex": f.sha256_hex, "mode": f.mode, "size": f.size}
         for f in files),
        key=lambda e: str(e["filename"]),
    )
    checksum = hashlib.sha256(dumps(entries).encode()).hexdigest()
    return entries, checksum


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class MountService(Service):
    """Mount* and Blob* RPCs."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        emu.environment_delete_hooks.append(self._drop_environment)
        emu.content_roots.append(self._referenced_files)

    def _referenced_files(self) -> set[str]:
        return {
            entry["sha256_hex"]
            for row in self.store.all("SELECT files FROM mounts")
            for entry in json.loads(row["files"])
        }

    def _drop_environment(self, env_id: str) -> None:
        self.store.run("DELETE FROM mounts WHERE env_id = ?", env_id)

    # -- files -------------------------------------------------------------------------
    def MountBatchedCheckExistence(
        self, req: api_pb2.MountBatchedCheckExistenceRequest, ctx: Ctx
    ) -> api_pb2.MountBatchedCheckExistenceResponse:
        missing = [h for h in req.sha256_hex_hashes if not self.store.has_bytes(h)]
        return api_pb2.MountBatchedCheckExistenceResponse(
            missing_sha256_hex_hashes=missing, checked_at=_now()
        )

    def MountPutFile(
        self, req: api_pb2.MountPutFileRequest, ctx: Ctx
    ) -> api_pb2.MountPutFileResponse:
        if req.data_blob_id:
            try:
                data = blob_bytes(self.emu, req.data_blob_id)
            except KeyError:
                raise GRPCError(
                    Status.NOT_FOUND, f"Blob '{req.data_blob_id}' not found or not uploaded"
                ) from None
        elif req.WhichOneof("data_oneof") is not None or not req.sha256_hex:
            data = req.data
        else:
            return api_pb2.MountPutFileResponse(
                exists=self.store.has_bytes(req.sha256_hex), checked_at=_now()
            )
        if hashlib.sha256(data).hexdigest() != req.sha256_hex:
            raise GRPCError(Status.INVALID_ARGUMENT, "File content does not match its sha256")
        self.store.put_bytes(data)
        return api_pb2.MountPutFileResponse(exists=True, checked_at=_now())

    # -- mounts ------------------------------------------------------------------------
    def MountGetOrCreate(
        self, req: api_pb2.MountGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.MountGetOrCreateResponse:
        kind = req.object_creation_type
        if kind in (api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
                    api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL):
            return self._anonymous(req)
        if req.namespace == GLOBAL:
            return self._global(req)
        return self._named(req)

    def _response(self, row: Any) -> api_pb2.MountGetOrCreateResponse:
        return api_pb2.MountGetOrCreateResponse(
            mount_id=row["id"],
            handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=row["checksum"]),
        )

    def _check_files_present(self, entries: list[dict[str, Any]]) -> None:
        missing = [e["filename"] for e in entries if not self.store.has_bytes(e["sha256_hex"])]
        if missing:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"Mount files were never uploaded: {', '.join(missing[:5])}",
            )

    def _insert(self, *, env_id: str | None, app_id: str = "", name: str = "", namespace: int = 0,
                entries: list[dict[str, Any]], checksum: str) -> Any:
        mount_id = new_id("mo")
        self.store.run(
            "INSERT INTO mounts (id, env_id, app_id, name, namespace, checksum, files, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            mount_id, env_id, app_id, name, namespace, checksum, dumps(entries), time.time(),
        )
        return self.store.one("SELECT * FROM mounts WHERE id = ?", mount_id)

    def _anonymous(self, req: api_pb2.MountGetOrCreateRequest) -> api_pb2.MountGetOrCreateResponse:
        entries, checksum = _index(req.files)
        self._check_files_present(entries)
        if req.app_id:
            from harvest_iac.emulator.services.apps import app_row

            env_id = str(app_row(self.emu, req.app_id)["env_id"])
        else:
            env_id = self.emu.environment_id(req.environment_name)
        row = self.store.one(
            "SELECT * FROM mounts WHERE app_id = ? AND env_id = ? AND checksum = ? AND name = ''",
            req.app_id, env_id, checksum,
        )
        if row is None:
            row = self._insert(env_id=env_id, app_id=req.app_id, entries=entries, checksum=checksum)
        return self._response(row)

    def _global(self, req: api_pb2.MountGetOrCreateRequest) -> api_pb2.MountGetOrCreateResponse:
        row = self.store.one(
            "SELECT * FROM mounts WHERE namespace = ? AND name = ?", GLOBAL, req.deployment_name
        )
        if row is None:
            if not req.deployment_name.startswith(_BUILTIN_MOUNTS):
                raise GRPCError(Status.NOT_FOUND, f"Mount '{req.deployment_name}' not found")
            entries, checksum = _index([])
            row = self._insert(env_id=None, name=req.deployment_name, namespace=GLOBAL,
                               entries=entries, checksum=checksum)
        return self._response(row)

    def _named(self, req: api_pb2.MountGetOrCreateRequest) -> api_pb2.MountGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        name = req.deployment_name
        row = self.store.one(
            "SELECT * FROM mounts WHERE namespace != ? AND env_id = ? AND name = ?",
            GLOBAL, env_id, name,
        )
        kind = req.object_creation_type
        if row is not None:
            if kind == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                raise GRPCError(Status.ALREADY_EXISTS, f"Mount '{name}' already exists")
            return self._response(row)
        if kind not in (api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                        api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS):
            raise GRPCError(Status.NOT_FOUND, f"Mount '{name}' not found")
        entries, checksum = _index(req.files)
        self._check_files_present(entries)
        row = self._insert(env_id=env_id, name=name, namespace=req.namespace, entries=entries,
                           checksum=checksum)
        return self._response(row)

    # -- blobs -------------------------------------------------------------------------
    def BlobCreate(self, req: api_pb2.BlobCreateRequest, ctx: Ctx) -> api_pb2.BlobCreateResponse:
        if req.content_length > BLOB_MAX_BYTES:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"Blobs over {BLOB_MAX_BYTES // 1024**3} GiB are not supported by the local Modal",
            )
        blob_id, url = new_blob(self.emu, req.content_length)
        return api_pb2.BlobCreateResponse(
            blob_id=blob_id, upload_url=url, blob_ids=[blob_id],
            upload_urls=api_pb2.UploadUrlList(items=[url]),
        )

    def BlobGet(self, req: api_pb2.BlobGetRequest, ctx: Ctx) -> api_pb2.BlobGetResponse:
        try:
            return api_pb2.BlobGetResponse(download_url=blob_url(self.emu, req.blob_id))
        except KeyError:
            raise GRPCError(Status.NOT_FOUND, f"Blob '{req.blob_id}' not found") from None
