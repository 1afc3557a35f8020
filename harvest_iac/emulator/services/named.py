"""What named objects (volumes, secrets, dicts, queues) share: Modal's name rules,
creation types, environment scoping and newest-first paging.

Each kind has its own table with at least the columns
`id, environment_id, name (NULL when anonymous), app_id, created_at`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.store import Store, new_id

CREATED_BY = "local"

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_APP_ID_RE = re.compile(r"^ap-[A-Za-z0-9]{22}$")


def is_valid_object_name(name: str) -> bool:
    """Modal's rule: <= 64 chars of [A-Za-z0-9-_.], not shaped like an app id."""
    return 0 < len(name) <= 64 and bool(_NAME_RE.match(name)) and not _APP_ID_RE.match(name)


def check_object_name(name: str, kind: str) -> None:
    """Refuse a bad object name with INVALID_ARGUMENT, saying what the rule is."""
    if not is_valid_object_name(name):
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            f"Invalid {kind} name: '{name}'. Names may contain only alphanumeric characters, "
            "dashes, periods, and underscores, must be 64 characters or less, and must not "
            "look like an App ID.",
        )


def environment_name(store: Store, environment_id: str) -> str:
    row = store.one("SELECT name FROM environments WHERE id = ?", environment_id)
    return "" if row is None else str(row["name"])


def creation_info(row: sqlite3.Row) -> api_pb2.CreationInfo:
    return api_pb2.CreationInfo(created_at=float(row["created_at"]), created_by=CREATED_BY)


@dataclass(frozen=True)
class Kind:
    """One family of named objects: its table, id prefix and the word users read."""

    table: str
    prefix: str
    label: str

    def lookup_id(self, store: Store, environment_id: str, name: str) -> str | None:
        """The id of the object named `name` in an environment, or None."""
        row = store.one(
            f"SELECT id FROM {self.table} WHERE environment_id = ? AND name = ?", environment_id, name
        )
        return None if row is None else str(row["id"])

    def row(self, store: Store, object_id: str) -> sqlite3.Row:
        """The object's row, or NOT_FOUND."""
        row = store.one(f"SELECT * FROM {self.table} WHERE id = ?", object_id)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"{self.label} '{object_id}' not found")
        return row

    def not_found(self, name: str, env_name: str) -> GRPCError:
        return GRPCError(
            Status.NOT_FOUND, f"{self.label} '{name}' not found in environment '{env_name}'"
        )

    def get_or_create(
        self,
        store: Store,
        environment_id: str,
        name: str,
        creation_type: int,
        insert: Callable[[str], None],
        *,
        delete: Callable[[str], None] | None = None,
    ) -> tuple[str, bool]:
        """Apply an ObjectCreationType for `name`: returns (object id, created).

        `insert(new_id)` inserts the row (and contents) of a new object;
        `delete(id)` removes one (CREATE_OVERWRITE_IF_EXISTS replaces it).
        Anonymous kinds (ANONYMOUS_OWNED_BY_APP, EPHEMERAL) always create."""
        t = api_pb2
        if creation_type in (t.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP, t.OBJECT_CREATION_TYPE_EPHEMERAL):
            object_id = new_id(self.prefix)
            insert(object_id)
            return object_id, True
        if creation_type not in (
            t.OBJECT_CREATION_TYPE_UNSPECIFIED,
            t.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
            t.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            t.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS,
        ):
            raise GRPCError(Status.INVALID_ARGUMENT, f"Unknown object creation type {creation_type}")
        check_object_name(name, self.label)
        existing = self.lookup_id(store, environment_id, name)
        if creation_type == t.OBJECT_CREATION_TYPE_UNSPECIFIED:
            if existing is None:
                raise self.not_found(name, environment_name(store, environment_id))
            return existing, False
        if existing is not None:
            if creation_type == t.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                return existing, False
            if creation_type == t.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                raise GRPCError(
                    Status.ALREADY_EXISTS,
                    f"{self.label} '{name}' already exists in environment "
                    f"'{environment_name(store, environment_id)}'",
                )
            if delete is None:
                raise GRPCError(Status.INVALID_ARGUMENT, f"A {self.label} cannot be overwritten")
            delete(existing)
        object_id = new_id(self.prefix)
        insert(object_id)
        return object_id, True

    def list_rows(
        self, store: Store, environment_id: str, pagination: api_pb2.ListPagination
    ) -> list[sqlite3.Row]:
        """Named objects of an environment, newest first, paged like Modal's List RPCs."""
        before = pagination.created_before or time.time() + 1e9
        limit = pagination.max_objects or 100
        return store.all(
            f"SELECT * FROM {self.table} WHERE environment_id = ? AND name IS NOT NULL "
            "AND created_at < ? ORDER BY created_at DESC LIMIT ?",
            environment_id,
            before,
            limit,
        )

    def drop_environment(self, store: Store, environment_id: str) -> None:
        store.run(f"DELETE FROM {self.table} WHERE environment_id = ?", environment_id)


def now() -> float:
    """A creation time distinct from the previous one (the client pages on created_at)."""
    global _last
    t = max(time.time(), _last + 1e-6)
    _last = t
    return t


_last = 0.0
