"""Dicts: named key/value stores scoped to an environment.

Keys and values are the client's serialized bytes, compared byte for byte (as Modal does).
`DictUpdate(if_not_exists=True)` is an atomic put-if-absent answering `created`: harvest's
lock is built on it. Entries do not expire here (Modal drops them after 7 idle days).

Tables: `dicts(id, environment_id, name, app_id, created_at)` and
`dict_entries(dict_id, key, value)`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service, streaming
from harvest_iac.emulator.services.named import Kind, creation_info, environment_name, now

DICTS = Kind(table="dicts", prefix="di", label="Dict")

SCHEMA = """
CREATE TABLE IF NOT EXISTS dicts (
    id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, name TEXT, app_id TEXT,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dicts_by_name ON dicts (environment_id, name)
    WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS dict_entries (
    dict_id TEXT NOT NULL REFERENCES dicts (id) ON DELETE CASCADE,
    key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (dict_id, key)
);
"""


def _metadata(row: Any) -> api_pb2.DictMetadata:
    return api_pb2.DictMetadata(name=row["name"] or "", creation_info=creation_info(row))


class DictService(Service):
    schema = SCHEMA

    def __init__(self, emu: Any) -> None:
        super().__init__(emu)
        self.emu.environment_delete_hooks.append(
            lambda env_id: DICTS.drop_environment(self.store, env_id)
        )

    def _check(self, dict_id: str) -> None:
        DICTS.row(self.store, dict_id)

    def _put(self, dict_id: str, entries: Any, *, if_not_exists: bool = False) -> bool:
        verb = "INSERT OR IGNORE" if if_not_exists else "INSERT OR REPLACE"
        created = False
        for entry in entries:
            cur = self.store.run(
                f"{verb} INTO dict_entries (dict_id, key, value) VALUES (?, ?, ?)",
                dict_id, entry.key, entry.value,
            )
            created = created or cur.rowcount > 0
        return created

    def DictGetOrCreate(
        self, req: api_pb2.DictGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.DictGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        anonymous = req.object_creation_type in (
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        )

        def insert(dict_id: str) -> None:
            self.store.run(
                "INSERT INTO dicts (id, environment_id, name, app_id, created_at) VALUES (?, ?, ?, ?, ?)",
                dict_id, env_id, None if anonymous else req.deployment_name, None, now(),
            )
            self._put(dict_id, req.data)

        def delete(dict_id: str) -> None:
            self.store.run("DELETE FROM dicts WHERE id = ?", dict_id)

        dict_id, _ = DICTS.get_or_create(
            self.store, env_id, req.deployment_name, req.object_creation_type, insert, delete=delete
        )
        return api_pb2.DictGetOrCreateResponse(dict_id=dict_id, metadata=_metadata(DICTS.row(self.store, dict_id)))

    def DictGetById(self, req: api_pb2.DictGetByIdRequest, ctx: Ctx) -> api_pb2.DictGetByIdResponse:
        return api_pb2.DictGetByIdResponse(dict_id=req.dict_id, metadata=_metadata(DICTS.row(self.store, req.dict_id)))

    def DictList(self, req: api_pb2.DictListRequest, ctx: Ctx) -> api_pb2.DictListResponse:
        env_id = self.emu.environment_id(req.environment_name)
        infos = [
            api_pb2.DictListResponse.DictInfo(
                name=row["name"], created_at=row["created_at"], dict_id=row["id"], metadata=_metadata(row)
            )
            for row in DICTS.list_rows(self.store, env_id, req.pagination)
        ]
        return api_pb2.DictListResponse(dicts=infos, environment_name=environment_name(self.store, env_id))

    def DictDelete(self, req: api_pb2.DictDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._check(req.dict_id)
        self.store.run("DELETE FROM dicts WHERE id = ?", req.dict_id)
        return empty_pb2.Empty()

    def DictHeartbeat(self, req: api_pb2.DictHeartbeatRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._check(req.dict_id)
        return empty_pb2.Empty()

    def DictClear(self, req: api_pb2.DictClearRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._check(req.dict_id)
        self.store.run("DELETE FROM dict_entries WHERE dict_id = ?", req.dict_id)
        return empty_pb2.Empty()

    def DictUpdate(self, req: api_pb2.DictUpdateRequest, ctx: Ctx) -> api_pb2.DictUpdateResponse:
        self._check(req.dict_id)
        created = self._put(req.dict_id, req.updates, if_not_exists=req.if_not_exists)
        return api_pb2.DictUpdateResponse(created=created)

    def DictGet(self, req: api_pb2.DictGetRequest, ctx: Ctx) -> api_pb2.DictGetResponse:
        self._check(req.dict_id)
        row = self.store.one(
            "SELECT value FROM dict_entries WHERE dict_id = ? AND key = ?", req.dict_id, req.key
        )
        if row is None:
            return api_pb2.DictGetResponse(found=False)
        return api_pb2.DictGetResponse(found=True, value=bytes(row["value"]))

    def DictContains(self, req: api_pb2.DictContainsRequest, ctx: Ctx) -> api_pb2.DictContainsResponse:
        self._check(req.dict_id)
        row = self.store.one("SELECT 1 FROM dict_entries WHERE dict_id = ? AND key = ?", req.dict_id, req.key)
        return api_pb2.DictContainsResponse(found=row is not None)

    def DictLen(self, req: api_pb2.DictLenRequest, ctx: Ctx) -> api_pb2.DictLenResponse:
        self._check(req.dict_id)
        row = self.store.one("SELECT COUNT(*) AS n FROM dict_entries WHERE dict_id = ?", req.dict_id)
        return api_pb2.DictLenResponse(len=min(int(row["n"]) if row else 0, 100_000))

    def DictPop(self, req: api_pb2.DictPopRequest, ctx: Ctx) -> api_pb2.DictPopResponse:
        self._check(req.dict_id)
        row = self.store.one(
            "SELECT value FROM dict_entries WHERE dict_id = ? AND key = ?", req.dict_id, req.key
        )
        if row is None:
            return api_pb2.DictPopResponse(found=False)
        self.store.run("DELETE FROM dict_entries WHERE dict_id = ? AND key = ?", req.dict_id, req.key)
        return api_pb2.DictPopResponse(found=True, value=bytes(row["value"]))

    @streaming
    async def DictContents(self, stream: Any, ctx: Ctx) -> None:
        req: api_pb2.DictContentsRequest = await stream.recv_message()
        with self.store.tx():
            self._check(req.dict_id)
            rows = self.store.all(
                "SELECT key, value FROM dict_entries WHERE dict_id = ? ORDER BY rowid", req.dict_id
            )
        for row in rows:
            await stream.send_message(
                api_pb2.DictEntry(
                    key=bytes(row["key"]) if req.keys or req.values else b"",
                    value=bytes(row["value"]) if req.values else b"",
                )
            )
