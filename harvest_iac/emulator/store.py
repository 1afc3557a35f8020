"""SQLite state of the local Modal, under a data directory, surviving restarts.

One connection, used only from the emulator's event-loop thread. Unary handlers run
inside `Store.tx()`: either every effect of an RPC lands, or none does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    method TEXT NOT NULL, key TEXT NOT NULL, response BLOB NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (method, key)
);
CREATE TABLE IF NOT EXISTS environments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0
);
"""

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """An object id shaped like Modal's: a kind prefix and 22 random characters."""
    return prefix + "-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


class Store:
    """The emulator's database plus its content-addressed byte store (`blobs/`)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.data_dir / "blobs"
        self.blob_dir.mkdir(exist_ok=True)
        self.db = sqlite3.connect(
            self.data_dir / "state.sqlite3", isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_BASE_SCHEMA)
        self._depth = 0

    def add_schema(self, sql: str) -> None:
        """Each service registers its own tables (idempotent DDL)."""
        self.db.executescript(sql)

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    # -- small helpers -------------------------------------------------------------
    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def run(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def meta_get(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", key)
        return None if row is None else str(row["value"])

    def meta_set(self, key: str, value: str) -> None:
        self.run("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value)

    # -- idempotency cache ---------------------------------------------------------
    def cached_response(self, method: str, key: str) -> bytes | None:
        row = self.one("SELECT response FROM idempotency WHERE method = ? AND key = ?", method, key)
        return None if row is None else bytes(row["response"])

    def cache_response(self, method: str, key: str, response: bytes) -> None:
        self.run(
            "INSERT OR REPLACE INTO idempotency (method, key, response, created_at) VALUES (?, ?, ?, ?)",
            method,
            key,
            response,
            time.time(),
        )

    def prune_idempotency(self, older_than_s: float = 3600.0) -> None:
        self.run("DELETE FROM idempotency WHERE created_at < ?", time.time() - older_than_s)

    # -- content-addressed bytes ---------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        """Store bytes under their sha256 (hex); returns the digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    def blob_path(self, digest: str) -> Path:
        if not all(c in "0123456789abcdef" for c in digest) or len(digest) != 64:
            raise ValueError("bad digest")
        return self.blob_dir / digest

    def get_bytes(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def has_bytes(self, digest: str) -> bool:
        try:
            return self.blob_path(digest).exists()
        except ValueError:
            return False

    def close(self) -> None:
        self.db.close()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
