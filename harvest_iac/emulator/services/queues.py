"""Queues: named FIFO queues with independent partitions, scoped to an environment.

Partition b'' is the default one. A partition holds at most 5,000 items (a put beyond
that answers RESOURCE_EXHAUSTED, which the client turns into `queue.Full`) and is cleared
`partition_ttl_seconds` after its last put. QueueGet and QueueNextItems long-poll up to
the timeout the client sends. QueueGet removes items, so it answers a retried call (same
`x-idempotency-key`) from the idempotency cache instead of removing more.

Tables: `queues(id, environment_id, name, app_id, created_at)`,
`queue_items(id, queue_id, partition, value)` (id orders the FIFO and is the entry id)
and `queue_partitions(queue_id, partition, expires_at)`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.services.named import Kind, creation_info, environment_name, now

QUEUES = Kind(table="queues", prefix="qu", label="Queue")
MAX_PARTITION_ITEMS = 5000
POLL_INTERVAL_S = 0.02
MAX_POLL_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, name TEXT, app_id TEXT,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS queues_by_name ON queues (environment_id, name)
    WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id TEXT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    partition BLOB NOT NULL, value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_items_fifo ON queue_items (queue_id, partition, id);
CREATE TABLE IF NOT EXISTS queue_partitions (
    queue_id TEXT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    partition BLOB NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (queue_id, partition)
);
"""


def _metadata(row: Any) -> api_pb2.QueueMetadata:
    return api_pb2.QueueMetadata(name=row["name"] or "", creation_info=creation_info(row))


class QueueService(Service):
    schema = SCHEMA

    def __init__(self, emu: Any) -> None:
        super().__init__(emu)
        self.emu.environment_delete_hooks.append(
            lambda env_id: QUEUES.drop_environment(self.store, env_id)
        )

    def _check(self, queue_id: str) -> None:
        QUEUES.row(self.store, queue_id)
        self._expire(queue_id)

    def _expire(self, queue_id: str) -> None:
        expired = self.store.all(
            "SELECT partition FROM queue_partitions WHERE queue_id = ? AND expires_at < ?",
            queue_id, time.time(),
        )
        for row in expired:
            self._clear(queue_id, bytes(row["partition"]))

    def _clear(self, queue_id: str, partition: bytes | None) -> None:
        if partition is None:
            self.store.run("DELETE FROM queue_items WHERE queue_id = ?", queue_id)
            self.store.run("DELETE FROM queue_partitions WHERE queue_id = ?", queue_id)
            return
        self.store.run("DELETE FROM queue_items WHERE queue_id = ? AND partition = ?", queue_id, partition)
        self.store.run("DELETE FROM queue_partitions WHERE queue_id = ? AND partition = ?", queue_id, partition)

    def _count(self, queue_id: str, partition: bytes | None) -> int:
        if partition is None:
            row = self.store.one("SELECT COUNT(*) AS n FROM queue_items WHERE queue_id = ?", queue_id)
        else:
            row = self.store.one(
                "SELECT COUNT(*) AS n FROM queue_items WHERE queue_id = ? AND partition = ?", queue_id, partition
            )
        return int(row["n"]) if row else 0

    # -- the objects -----------------------------------------------------------------
    def QueueGetOrCreate(
        self, req: api_pb2.QueueGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.QueueGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        anonymous = req.object_creation_type in (
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        )

        def insert(queue_id: str) -> None:
            self.store.run(
                "INSERT INTO queues (id, environment_id, name, app_id, created_at) VALUES (?, ?, ?, ?, ?)",
                queue_id, env_id, None if anonymous else req.deployment_name, None, now(),
            )

        def delete(queue_id: str) -> None:
            self.store.run("DELETE FROM queues WHERE id = ?", queue_id)

        queue_id, _ = QUEUES.get_or_create(
            self.store, env_id, req.deployment_name, req.object_creation_type, insert, delete=delete
        )
        return api_pb2.QueueGetOrCreateResponse(
            queue_id=queue_id, metadata=_metadata(QUEUES.row(self.store, queue_id))
        )

    def QueueGetById(self, req: api_pb2.QueueGetByIdRequest, ctx: Ctx) -> api_pb2.QueueGetByIdResponse:
        return api_pb2.QueueGetByIdResponse(
            queue_id=req.queue_id, metadata=_metadata(QUEUES.row(self.store, req.queue_id))
        )

    def QueueList(self, req: api_pb2.QueueListRequest, ctx: Ctx) -> api_pb2.QueueListResponse:
        env_id = self.emu.environment_id(req.environment_name)
        infos = []
        for row in QUEUES.list_rows(self.store, env_id, req.pagination):
            self._expire(row["id"])
            parts = self.store.one(
                "SELECT COUNT(DISTINCT partition) AS n FROM queue_items WHERE queue_id = ?", row["id"]
            )
            infos.append(
                api_pb2.QueueListResponse.QueueInfo(
                    name=row["name"], created_at=row["created_at"], queue_id=row["id"],
                    num_partitions=int(parts["n"]) if parts else 0,
                    total_size=self._count(row["id"], None), metadata=_metadata(row),
                )
            )
        return api_pb2.QueueListResponse(queues=infos, environment_name=environment_name(self.store, env_id))

    def QueueDelete(self, req: api_pb2.QueueDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        QUEUES.row(self.store, req.queue_id)
        self.store.run("DELETE FROM queues WHERE id = ?", req.queue_id)
        return empty_pb2.Empty()

    def QueueHeartbeat(self, req: api_pb2.QueueHeartbeatRequest, ctx: Ctx) -> empty_pb2.Empty:
        QUEUES.row(self.store, req.queue_id)
        return empty_pb2.Empty()

    def QueueClear(self, req: api_pb2.QueueClearRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._check(req.queue_id)
        self._clear(req.queue_id, None if req.all_partitions else req.partition_key)
        return empty_pb2.Empty()

    # -- contents --------------------------------------------------------------------
    def QueuePut(self, req: api_pb2.QueuePutRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._check(req.queue_id)
        if self._count(req.queue_id, req.partition_key) + len(req.values) > MAX_PARTITION_ITEMS:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"Queue partition is full (at most {MAX_PARTITION_ITEMS} items)",
            )
        for value in req.values:
            self.store.run(
                "INSERT INTO queue_items (queue_id, partition, value) VALUES (?, ?, ?)",
                req.queue_id, req.partition_key, value,
            )
        ttl = req.partition_ttl_seconds or 24 * 3600
        self.store.run(
            "INSERT OR REPLACE INTO queue_partitions (queue_id, partition, expires_at) VALUES (?, ?, ?)",
            req.queue_id, req.partition_key, time.time() + ttl,
        )
        return empty_pb2.Empty()

    def QueueLen(self, req: api_pb2.QueueLenRequest, ctx: Ctx) -> api_pb2.QueueLenResponse:
        self._check(req.queue_id)
        return api_pb2.QueueLenResponse(len=self._count(req.queue_id, None if req.total else req.partition_key))

    def _take(self, req: api_pb2.QueueGetRequest, key: str | None) -> api_pb2.QueueGetResponse | None:
        """One transaction: pop up to n values; None when the partition is empty."""
        with self.store.tx():
            if key:
                cached = self.store.cached_response("QueueGet", key)
                if cached is not None:
                    return api_pb2.QueueGetResponse.FromString(cached)
            self._check(req.queue_id)
            rows = self.store.all(
                "SELECT id, value FROM queue_items WHERE queue_id = ? AND partition = ? ORDER BY id LIMIT ?",
                req.queue_id, req.partition_key, max(1, req.n_values),
            )
            if not rows:
                return None
            self.store.run(
                f"DELETE FROM queue_items WHERE id IN ({','.join('?' * len(rows))})", *[r["id"] for r in rows]
            )
            resp = api_pb2.QueueGetResponse(values=[bytes(r["value"]) for r in rows])
            if key:
                self.store.cache_response("QueueGet", key, resp.SerializeToString())
            return resp

    async def QueueGet(self, req: api_pb2.QueueGetRequest, ctx: Ctx) -> api_pb2.QueueGetResponse:
        key = ctx.metadata.get("x-idempotency-key")
        deadline = time.monotonic() + min(max(req.timeout, 0.0), MAX_POLL_S)
        while True:
            resp = self._take(req, key)
            if resp is not None:
                return resp
            if time.monotonic() >= deadline:
                return api_pb2.QueueGetResponse()
            await asyncio.sleep(POLL_INTERVAL_S)

    async def QueueNextItems(
        self, req: api_pb2.QueueNextItemsRequest, ctx: Ctx
    ) -> api_pb2.QueueNextItemsResponse:
        after = int(req.last_entry_id) if req.last_entry_id else 0
        deadline = time.monotonic() + min(max(req.item_poll_timeout, 0.0), MAX_POLL_S)
        while True:
            with self.store.tx():
                self._check(req.queue_id)
                rows = self.store.all(
                    "SELECT id, value FROM queue_items WHERE queue_id = ? AND partition = ? AND id > ? "
                    "ORDER BY id LIMIT 100",
                    req.queue_id, req.partition_key, after,
                )
            if rows or time.monotonic() >= deadline:
                return api_pb2.QueueNextItemsResponse(
                    items=[api_pb2.QueueItem(value=bytes(r["value"]), entry_id=str(r["id"])) for r in rows]
                )
            await asyncio.sleep(POLL_INTERVAL_S)
