"""Volumes v1 and v2: named file trees scoped to an environment, with real contents.

Files are stored as lists of 8 MiB content-addressed blocks (sha256, bytes under the
store's `blobs/`), whichever protocol wrote them:

* v2 (VolumePutFiles2): the client names each block by its sha256; blocks the server
  lacks are answered as `missing_blocks[].put_url` pointing at the HTTP endpoint
  `/blocks/{sha256}`, and the client asks again once they are uploaded.
* v1 (VolumePutFiles): whole files, uploaded first with MountPutFile (by sha256); the
  server splits them into blocks here.

Both versions are read with VolumeGetFile2 (`get_urls`, one per block).

Tables: `volumes(id, environment_id, name, app_id, created_at, version)` (version 1 or 2)
and `volume_files(volume_id, path, type, mode, size, mtime, blocks)` where `path` has no
leading slash, `type` is FileEntry.FileType (1 file, 2 directory) and `blocks` a JSON list
of sha256 hex digests. Other services use `volume_id_by_name`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service, streaming
from harvest_iac.emulator.http import block_url
from harvest_iac.emulator.services.named import (
    Kind,
    check_object_name,
    creation_info,
    environment_name,
    now,
)
from harvest_iac.emulator.store import Store

VOLUMES = Kind(table="volumes", prefix="vo", label="Volume")
BLOCK_SIZE = 8 * 1024 * 1024
FILE = api_pb2.FileEntry.FileType.FILE
DIRECTORY = api_pb2.FileEntry.FileType.DIRECTORY

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, name TEXT, app_id TEXT,
    created_at REAL NOT NULL, version INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS volumes_by_name ON volumes (environment_id, name)
    WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS volume_files (
    volume_id TEXT NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    path TEXT NOT NULL, type INTEGER NOT NULL, mode INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime INTEGER NOT NULL, blocks TEXT NOT NULL,
    PRIMARY KEY (volume_id, path)
);
"""


def volume_id_by_name(store: Store, environment_id: str, name: str) -> str | None:
    """The id of the volume `name` in an environment, or None."""
    return VOLUMES.lookup_id(store, environment_id, name)


def volume_version(store: Store, volume_id: str) -> int:
    """1 or 2."""
    return int(VOLUMES.row(store, volume_id)["version"])


def _metadata(row: sqlite3.Row) -> api_pb2.VolumeMetadata:
    return api_pb2.VolumeMetadata(
        version=int(row["version"]), name=row["name"] or "", creation_info=creation_info(row)
    )


def _norm(path: str) -> str:
    """A volume path without leading or trailing slashes; '' is the root."""
    parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid path '{path}': '..' is not allowed")
    return "/".join(parts)


def _requested_version(version: int) -> int:
    return 2 if version == api_pb2.VOLUME_FS_VERSION_V2 else 1


def _like_prefix(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}/%" if path else "%"


class VolumeFiles:
    """The file tree of one volume, in SQLite."""

    def __init__(self, store: Store, volume_id: str) -> None:
        self.store = store
        self.volume_id = volume_id

    def get(self, path: str) -> sqlite3.Row | None:
        return self.store.one(
            "SELECT * FROM volume_files WHERE volume_id = ? AND path = ?", self.volume_id, path
        )

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        row = self.get(path)
        return row is not None and row["type"] == DIRECTORY

    def below(self, path: str, *, recursive: bool) -> list[sqlite3.Row]:
        rows = self.store.all(
            "SELECT * FROM volume_files WHERE volume_id = ? AND path LIKE ? ESCAPE '\\' ORDER BY path",
            self.volume_id,
            _like_prefix(path),
        )
        if recursive:
            return rows
        depth = path.count("/") + 1 if path else 0
        return [r for r in rows if r["path"].count("/") == depth]

    def listing(self, path: str, *, recursive: bool) -> list[sqlite3.Row]:
        """What `ls` shows: the file itself, or a directory's entries; NOT_FOUND otherwise."""
        norm = _norm(path)
        row = self.get(norm) if norm else None
        if row is not None and row["type"] == FILE:
            return [row]
        if norm and row is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: '{path}'")
        return self.below(norm, recursive=recursive)

    def mkdirs(self, path: str, mtime: int) -> None:
        parts = path.split("/") if path else []
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            row = self.get(sub)
            if row is None:
                self.store.run(
                    "INSERT INTO volume_files (volume_id, path, type, mode, size, mtime, blocks) "
                    "VALUES (?, ?, ?, ?, 0, ?, '[]')",
                    self.volume_id, sub, DIRECTORY, 0o755, mtime,
                )
            elif row["type"] != DIRECTORY:
                raise GRPCError(Status.INVALID_ARGUMENT, f"'{sub}' is a file, not a directory")

    def write(self, path: str, mode: int, size: int, blocks: list[str], *, overwrite: bool) -> None:
        norm = _norm(path)
        if not norm:
            raise GRPCError(Status.INVALID_ARGUMENT, "A file cannot be written at the volume's root")
        existing = self.get(norm)
        if existing is not None and existing["type"] == DIRECTORY:
            raise GRPCError(Status.INVALID_ARGUMENT, f"'{norm}' is a directory")
        if existing is not None and not overwrite:
            raise GRPCError(
                Status.ALREADY_EXISTS,
                f"{norm}: already exists (use --force / force=True to overwrite)",
            )
        mtime = int(time.time())
        self.mkdirs(norm.rpartition("/")[0], mtime)
        self.store.run(
            "INSERT OR REPLACE INTO volume_files (volume_id, path, type, mode, size, mtime, blocks) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            self.volume_id, norm, FILE, mode or 0o644, size, mtime, json.dumps(blocks),
        )

    def remove(self, path: str, *, recursive: bool) -> None:
        norm = _norm(path)
        row = self.get(norm) if norm else None
        if norm and row is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: '{path}'")
        if row is None or row["type"] == DIRECTORY:
            if self.below(norm, recursive=False) and not recursive:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"'{path}' is a non-empty directory; remove it recursively (-r)",
                )
            self.store.run(
                "DELETE FROM volume_files WHERE volume_id = ? AND path LIKE ? ESCAPE '\\'",
                self.volume_id, _like_prefix(norm),
            )
        if norm:
            self.store.run(
                "DELETE FROM volume_files WHERE volume_id = ? AND path = ?", self.volume_id, norm
            )

    def copy(self, sources: Iterable[str], dst: str, *, recursive: bool) -> None:
        """`cp` semantics: into an existing directory keeps the base name."""
        srcs = [_norm(s) for s in sources]
        target = _norm(dst)
        into_dir = self.is_dir(target) or len(srcs) > 1 or dst.endswith("/")
        for src in srcs:
            row = self.get(src) if src else None
            if src and row is None:
                raise GRPCError(Status.NOT_FOUND, f"No such file or directory: '{src}'")
            dest = "/".join(p for p in (target, PurePosixPath(src).name) if p) if into_dir else target
            if row is not None and row["type"] == FILE:
                self.write(dest, row["mode"], row["size"], json.loads(row["blocks"]), overwrite=True)
                continue
            if not recursive:
                raise GRPCError(Status.INVALID_ARGUMENT, f"'{src}' is a directory (use recursive)")
            self.mkdirs(dest, int(time.time()))
            for child in self.below(src, recursive=True):
                rel = child["path"][len(src) + 1:] if src else child["path"]
                child_dest = f"{dest}/{rel}" if dest else rel
                if child["type"] == DIRECTORY:
                    self.mkdirs(child_dest, int(time.time()))
                else:
                    self.write(child_dest, child["mode"], child["size"],
                               json.loads(child["blocks"]), overwrite=True)


def _entry(row: sqlite3.Row) -> api_pb2.FileEntry:
    return api_pb2.FileEntry(path=row["path"], type=row["type"], mtime=row["mtime"], size=row["size"])


class VolumeService(Service):
    schema = SCHEMA

    def __init__(self, emu: Any) -> None:
        super().__init__(emu)
        self.emu.environment_delete_hooks.append(
            lambda env_id: VOLUMES.drop_environment(self.store, env_id)
        )
        self.emu.content_roots.append(self._referenced_blocks)

    def _referenced_blocks(self) -> set[str]:
        return {
            digest
            for row in self.store.all("SELECT DISTINCT blocks FROM volume_files WHERE type = ?", FILE)
            for digest in json.loads(row["blocks"])
        }

    def _files(self, volume_id: str) -> VolumeFiles:
        VOLUMES.row(self.store, volume_id)
        return VolumeFiles(self.store, volume_id)

    # -- the objects -----------------------------------------------------------------
    def VolumeGetOrCreate(
        self, req: api_pb2.VolumeGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.VolumeGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        anonymous = req.object_creation_type in (
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        )
        version = _requested_version(req.version)

        def insert(volume_id: str) -> None:
            self.store.run(
                "INSERT INTO volumes (id, environment_id, name, app_id, created_at, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                volume_id, env_id, None if anonymous else req.deployment_name,
                req.app_id or None, now(), version,
            )

        def delete(volume_id: str) -> None:
            self.store.run("DELETE FROM volumes WHERE id = ?", volume_id)

        volume_id, created = VOLUMES.get_or_create(
            self.store, env_id, req.deployment_name, req.object_creation_type, insert, delete=delete
        )
        row = VOLUMES.row(self.store, volume_id)
        if not created and req.version and int(row["version"]) != version:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"Volume '{req.deployment_name}' exists but has version v{row['version']}, "
                f"not v{version} as requested",
            )
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=volume_id, version=int(row["version"]), metadata=_metadata(row)
        )

    def VolumeGetById(self, req: api_pb2.VolumeGetByIdRequest, ctx: Ctx) -> api_pb2.VolumeGetByIdResponse:
        row = VOLUMES.row(self.store, req.volume_id)
        return api_pb2.VolumeGetByIdResponse(volume_id=req.volume_id, metadata=_metadata(row))

    def VolumeList(self, req: api_pb2.VolumeListRequest, ctx: Ctx) -> api_pb2.VolumeListResponse:
        env_id = self.emu.environment_id(req.environment_name)
        items = [
            api_pb2.VolumeListItem(
                label=row["name"], volume_id=row["id"], created_at=row["created_at"],
                metadata=_metadata(row),
            )
            for row in VOLUMES.list_rows(self.store, env_id, req.pagination)
        ]
        return api_pb2.VolumeListResponse(items=items, environment_name=environment_name(self.store, env_id))

    def VolumeDelete(self, req: api_pb2.VolumeDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        VOLUMES.row(self.store, req.volume_id)
        self.store.run("DELETE FROM volumes WHERE id = ?", req.volume_id)
        return empty_pb2.Empty()

    def VolumeRename(self, req: api_pb2.VolumeRenameRequest, ctx: Ctx) -> empty_pb2.Empty:
        row = VOLUMES.row(self.store, req.volume_id)
        check_object_name(req.name, "Volume")
        if VOLUMES.lookup_id(self.store, row["environment_id"], req.name) is not None:
            raise GRPCError(Status.ALREADY_EXISTS, f"Volume '{req.name}' already exists")
        self.store.run("UPDATE volumes SET name = ? WHERE id = ?", req.name, req.volume_id)
        return empty_pb2.Empty()

    def VolumeHeartbeat(self, req: api_pb2.VolumeHeartbeatRequest, ctx: Ctx) -> empty_pb2.Empty:
        VOLUMES.row(self.store, req.volume_id)
        return empty_pb2.Empty()

    def VolumeCommit(self, req: api_pb2.VolumeCommitRequest, ctx: Ctx) -> api_pb2.VolumeCommitResponse:
        # Writes through the API land at once; a commit only has to find the volume.
        VOLUMES.row(self.store, req.volume_id)
        return api_pb2.VolumeCommitResponse(skip_reload=False)

    def VolumeReload(self, req: api_pb2.VolumeReloadRequest, ctx: Ctx) -> empty_pb2.Empty:
        VOLUMES.row(self.store, req.volume_id)
        return empty_pb2.Empty()

    # -- contents --------------------------------------------------------------------
    def VolumePutFiles2(
        self, req: api_pb2.VolumePutFiles2Request, ctx: Ctx
    ) -> api_pb2.VolumePutFiles2Response:
        files = self._files(req.volume_id)
        missing = [
            api_pb2.VolumePutFiles2Response.MissingBlock(
                file_index=fi, block_index=bi, put_url=block_url(self.emu, "PUT", b.contents_sha256.hex())
            )
            for fi, f in enumerate(req.files)
            for bi, b in enumerate(f.blocks)
            if not self.store.has_bytes(b.contents_sha256.hex())
        ]
        if missing:
            return api_pb2.VolumePutFiles2Response(missing_blocks=missing)
        for f in req.files:
            blocks = [b.contents_sha256.hex() for b in f.blocks]
            files.write(f.path, f.mode, f.size, blocks, overwrite=not req.disallow_overwrite_existing_files)
        return api_pb2.VolumePutFiles2Response()

    def VolumePutFiles(self, req: api_pb2.VolumePutFilesRequest, ctx: Ctx) -> empty_pb2.Empty:
        files = self._files(req.volume_id)
        for f in req.files:
            if not self.store.has_bytes(f.sha256_hex):
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"{f.filename}: contents {f.sha256_hex} were not uploaded (MountPutFile)",
                )
            data = self.store.get_bytes(f.sha256_hex)
            blocks = [
                self.store.put_bytes(data[i : i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE)
            ]
            mode = f.mode if f.HasField("mode") else 0o644
            files.write(f.filename, mode, len(data), blocks,
                        overwrite=not req.disallow_overwrite_existing_files)
        return empty_pb2.Empty()

    def VolumeGetFile2(self, req: api_pb2.VolumeGetFile2Request, ctx: Ctx) -> api_pb2.VolumeGetFile2Response:
        row = self._files(req.volume_id).get(_norm(req.path))
        if row is None or row["type"] != FILE:
            raise GRPCError(Status.NOT_FOUND, f"No such file: '{req.path}'")
        blocks = json.loads(row["blocks"])
        urls = [block_url(self.emu, "GET", digest) for digest in blocks]
        return api_pb2.VolumeGetFile2Response(get_urls=urls, size=row["size"], start=0, len=row["size"])

    def VolumeGetFile(self, req: api_pb2.VolumeGetFileRequest, ctx: Ctx) -> api_pb2.VolumeGetFileResponse:
        row = self._files(req.volume_id).get(_norm(req.path))
        if row is None or row["type"] != FILE:
            raise GRPCError(Status.NOT_FOUND, f"No such file: '{req.path}'")
        data = b"".join(self.store.get_bytes(d) for d in json.loads(row["blocks"]))
        end = req.start + req.len if req.len else len(data)
        chunk = data[req.start : end]
        return api_pb2.VolumeGetFileResponse(data=chunk, size=len(data), start=req.start, len=len(chunk))

    @streaming
    async def VolumeListFiles2(self, stream: Any, ctx: Ctx) -> None:
        await self._list_files(stream, api_pb2.VolumeListFiles2Response)

    @streaming
    async def VolumeListFiles(self, stream: Any, ctx: Ctx) -> None:
        await self._list_files(stream, api_pb2.VolumeListFilesResponse)

    async def _list_files(self, stream: Any, response_type: Any) -> None:
        req = await stream.recv_message()
        with self.store.tx():
            rows = self._files(req.volume_id).listing(req.path, recursive=req.recursive)
        if req.HasField("max_entries"):
            rows = rows[: req.max_entries]
        for i in range(0, len(rows), 1000):
            await stream.send_message(response_type(entries=[_entry(r) for r in rows[i : i + 1000]]))

    def VolumeRemoveFile2(self, req: api_pb2.VolumeRemoveFile2Request, ctx: Ctx) -> empty_pb2.Empty:
        self._files(req.volume_id).remove(req.path, recursive=req.recursive)
        return empty_pb2.Empty()

    def VolumeRemoveFile(self, req: api_pb2.VolumeRemoveFileRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._files(req.volume_id).remove(req.path, recursive=req.recursive)
        return empty_pb2.Empty()

    def VolumeCopyFiles2(self, req: api_pb2.VolumeCopyFiles2Request, ctx: Ctx) -> empty_pb2.Empty:
        self._files(req.volume_id).copy(req.src_paths, req.dst_path, recursive=req.recursive)
        return empty_pb2.Empty()

    def VolumeCopyFiles(self, req: api_pb2.VolumeCopyFilesRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._files(req.volume_id).copy(req.src_paths, req.dst_path, recursive=req.recursive)
        return empty_pb2.Empty()


def file_bytes(store: Store, volume_id: str, path: str) -> bytes:
    """A volume file's contents (for other services, e.g. mounting into a sandbox)."""
    row = VolumeFiles(store, volume_id).get(_norm(path))
    if row is None or row["type"] != FILE:
        raise KeyError(path)
    return b"".join(store.get_bytes(d) for d in json.loads(row["blocks"]))
