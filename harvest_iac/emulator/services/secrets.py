"""Secrets: named key/value sets scoped to an environment.

Values are stored in SQLite and never logged or returned by any RPC; only key names are
readable (`SecretMetadata.keys`), as with real Modal.

Table `secrets(id, environment_id, name, app_id, created_at, last_used_at, env_dict)`;
`env_dict` is a JSON object. Other services use `secret_id_by_name` and `secret_values`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.services.named import Kind, creation_info, environment_name, now
from harvest_iac.emulator.store import Store

SECRETS = Kind(table="secrets", prefix="st", label="Secret")

SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, name TEXT, app_id TEXT,
    created_at REAL NOT NULL, last_used_at REAL, env_dict TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS secrets_by_name ON secrets (environment_id, name)
    WHERE name IS NOT NULL;
"""


def secret_id_by_name(store: Store, environment_id: str, name: str) -> str | None:
    """The id of the secret `name` in an environment, or None."""
    return SECRETS.lookup_id(store, environment_id, name)


def secret_values(store: Store, secret_id: str) -> dict[str, str]:
    """A secret's values, for a running container's environment only. Never log them."""
    row = store.one("SELECT env_dict FROM secrets WHERE id = ?", secret_id)
    if row is None:
        raise KeyError(secret_id)
    return dict(json.loads(row["env_dict"]))


def _metadata(store: Store, row: sqlite3.Row) -> api_pb2.SecretMetadata:
    return api_pb2.SecretMetadata(
        name=row["name"] or "",
        creation_info=creation_info(row),
        keys=sorted(json.loads(row["env_dict"])),
        environment_name=environment_name(store, row["environment_id"]),
        last_used_at=float(row["last_used_at"] or 0.0),
    )


def _check_required_keys(row: sqlite3.Row, required: list[str]) -> None:
    present = json.loads(row["env_dict"])
    missing = sorted(set(required) - set(present))
    if missing:
        raise GRPCError(
            Status.NOT_FOUND,
            f"Secret '{row['name']}' is missing required key(s): {', '.join(missing)}",
        )


class SecretService(Service):
    schema = SCHEMA

    def __init__(self, emu: Any) -> None:
        super().__init__(emu)
        self.emu.environment_delete_hooks.append(
            lambda env_id: SECRETS.drop_environment(self.store, env_id)
        )

    def SecretGetOrCreate(
        self, req: api_pb2.SecretGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.SecretGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        values = dict(req.env_dict)
        creation = req.object_creation_type
        anonymous = creation in (
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        )

        def insert(secret_id: str) -> None:
            self.store.run(
                "INSERT INTO secrets (id, environment_id, name, app_id, created_at, env_dict) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                secret_id, env_id, None if anonymous else req.deployment_name,
                req.app_id or None, now(), json.dumps(values, sort_keys=True),
            )

        def overwrite(secret_id: str) -> None:
            # `--force` replaces the values but keeps the id deployed functions refer to.
            self.store.run(
                "UPDATE secrets SET env_dict = ? WHERE id = ?", json.dumps(values, sort_keys=True), secret_id
            )

        existing = SECRETS.lookup_id(self.store, env_id, req.deployment_name)
        if creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS and existing:
            overwrite(existing)
            secret_id = existing
        else:
            secret_id, _ = SECRETS.get_or_create(self.store, env_id, req.deployment_name, creation, insert)
        row = SECRETS.row(self.store, secret_id)
        if req.required_keys:
            _check_required_keys(row, list(req.required_keys))
        return api_pb2.SecretGetOrCreateResponse(secret_id=secret_id, metadata=_metadata(self.store, row))

    def SecretGetInfo(self, req: api_pb2.SecretGetInfoRequest, ctx: Ctx) -> api_pb2.SecretGetInfoResponse:
        row = SECRETS.row(self.store, req.secret_id)
        return api_pb2.SecretGetInfoResponse(metadata=_metadata(self.store, row))

    def SecretList(self, req: api_pb2.SecretListRequest, ctx: Ctx) -> api_pb2.SecretListResponse:
        env_id = self.emu.environment_id(req.environment_name)
        items = []
        for row in SECRETS.list_rows(self.store, env_id, req.pagination):
            meta = _metadata(self.store, row)
            items.append(
                api_pb2.SecretListItem(
                    label=row["name"], secret_id=row["id"], created_at=row["created_at"],
                    last_used_at=meta.last_used_at, environment_name=meta.environment_name,
                    metadata=meta,
                )
            )
        return api_pb2.SecretListResponse(items=items, environment_name=environment_name(self.store, env_id))

    def SecretUpdate(self, req: api_pb2.SecretUpdateRequest, ctx: Ctx) -> empty_pb2.Empty:
        values = secret_values_or_404(self.store, req.secret_id)
        for update in req.updates:
            if update.HasField("value"):
                values[update.key] = update.value
            else:
                values.pop(update.key, None)
        self.store.run(
            "UPDATE secrets SET env_dict = ? WHERE id = ?", json.dumps(values, sort_keys=True), req.secret_id
        )
        return empty_pb2.Empty()

    def SecretDelete(self, req: api_pb2.SecretDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        SECRETS.row(self.store, req.secret_id)
        self.store.run("DELETE FROM secrets WHERE id = ?", req.secret_id)
        return empty_pb2.Empty()


def secret_values_or_404(store: Store, secret_id: str) -> dict[str, str]:
    try:
        return secret_values(store, secret_id)
    except KeyError:
        raise GRPCError(Status.NOT_FOUND, f"Secret '{secret_id}' not found") from None
