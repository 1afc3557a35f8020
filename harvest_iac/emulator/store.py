"""SQLite state of the local Modal, under a data directory, surviving restarts.

One connection, used only from the emulator's event-loop thread. Unary handlers run
inside `Store.tx()`: either every effect of an RPC lands, or none does.

The data directory holds secret values and the token: it is private to its owner (folders
0700, files 0600), and opening a store makes an existing one so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import time
import uuid
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

DB_NAME = "state.sqlite3"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_HEX = frozenset("0123456789abcdef")

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """An object id shaped like Modal's: a kind prefix and 22 random characters."""
    return prefix + "-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


class Store:
    """The emulator's database plus its content-addressed byte store (`blobs/`)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        make_private_dir(self.data_dir)
        make_private_dir(self.blob_dir)
        db_path = self.data_dir / DB_NAME
        for path in (db_path, *(db_path.with_name(DB_NAME + s) for s in ("-wal", "-shm"))):
            _make_private_file(path, create=path == db_path)  # SQLite gives -wal/-shm the db's mode
        self._make_blobs_private()
        self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
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
        with self.incoming() as upload:
            upload.write(data)
            return upload.commit()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Incoming]:
        """Bytes written piece by piece; `commit()` files them under their sha256, and
        whatever was not committed is removed."""
        upload = Incoming(self.blob_dir / f".in-{uuid.uuid4().hex}")
        try:
            yield upload
        finally:
            upload.discard()

    def blob_path(self, digest: str) -> Path:
        if not _is_digest(digest):
            raise ValueError("bad digest")
        return self.blob_dir / digest

    def get_bytes(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def has_bytes(self, digest: str) -> bool:
        """Whether these bytes are stored; if so they are kept from garbage collection for a
        while, as the caller is about to reference them."""
        try:
            os.utime(self.blob_path(digest))
        except (ValueError, FileNotFoundError):
            return False
        return True

    def remove_unreferenced(self, referenced: set[str], *, older_than: float) -> int:
        """Delete stored bytes (and stale partial uploads) not in `referenced` and last
        touched before `older_than`; returns how many files went."""
        removed = 0
        with os.scandir(self.blob_dir) as entries:
            for entry in entries:
                if entry.name in referenced or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _make_blobs_private(self) -> None:
        with os.scandir(self.blob_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                    os.chmod(entry.path, PRIVATE_FILE)

    def close(self) -> None:
        self.db.close()


class Incoming:
    """One upload into the byte store, hashed as it is written (see `Store.incoming`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """File the bytes under their digest (kept if already there); returns the digest."""
        self._file.close()
        digest = self.sha256.hexdigest()
        os.replace(self.path, self.path.with_name(digest))
        return digest

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def make_private_dir(path: Path) -> None:
    """A folder only its owner can enter (made with its parents if missing)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read."""
    _make_private_file(path, create=True)
    path.write_bytes(data)


def _make_private_file(path: Path, *, create: bool) -> None:
    if create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, PRIVATE_FILE)


def _is_digest(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
