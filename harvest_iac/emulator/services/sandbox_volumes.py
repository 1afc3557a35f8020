"""Volumes in the local Modal's sandboxes: copied in when a sandbox starts, and its changes
committed back when it ends (as Modal commits a sandbox's volume writes on exit).

The commit applies only what the sandbox changed relative to what it was given: files it
wrote or modified are written, entries it deleted are removed, and whatever other clients
wrote to the volume meanwhile is left alone (last writer wins on the same path).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.exceptions import GRPCError

from harvest_iac.emulator.store import Store

FILE = 1
DIRECTORY = 2
BLOCK_SIZE = 8 * 1024 * 1024


@dataclass
class Entry:
    """One volume entry: its type, mode and (files) size and sha256 blocks."""

    kind: int
    mode: int
    size: int = 0
    blocks: list[str] = field(default_factory=list)


@dataclass
class VolumeLink:
    """A volume mounted into a sandbox, with the entries it was given."""

    mount_path: str
    volume_id: str
    read_only: bool
    seed: dict[str, Entry]


@dataclass
class Changes:
    """What a sandbox did to one mounted volume."""

    dirs: list[str] = field(default_factory=list)
    files: dict[str, Entry] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def read_entries(store: Store, volume_id: str) -> dict[str, Entry]:
    """A volume's entries now (call in the event loop's thread)."""
    from harvest_iac.emulator.services.volumes import VolumeFiles

    rows = VolumeFiles(store, volume_id).below("", recursive=True)
    return {
        str(r["path"]): Entry(int(r["type"]), int(r["mode"]), int(r["size"]), list(json.loads(r["blocks"])))
        for r in rows
    }


def read_links(store: Store, mounts: Any) -> list[VolumeLink]:
    """The sandbox's volume mounts and each volume's entries now (run in a transaction)."""
    return [
        VolumeLink(m.mount_path, m.volume_id, bool(m.read_only), read_entries(store, m.volume_id))
        for m in mounts
    ]


def copy_in(store: Store, link: VolumeLink, target: Path) -> None:
    """Write the volume's entries under `target` (file I/O only; any thread)."""
    target.mkdir(parents=True, exist_ok=True)
    for path, entry in sorted(link.seed.items()):
        dest = target / path
        if entry.kind == DIRECTORY:
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for digest in entry.blocks:
                out.write(store.get_bytes(digest))
        dest.chmod(entry.mode & 0o777 or 0o644)


def refresh(store: Store, link: VolumeLink, target: Path, changes: Changes,
            latest: dict[str, Entry]) -> None:
    """Bring `target` up to the volume's `latest` entries, except the paths the sandbox
    changed itself (`changes`, from `scan`), which it keeps (file I/O only; any thread).
    Afterwards `latest` is what the sandbox was given."""
    mine = set(changes.dirs) | set(changes.files) | set(changes.removed)
    for path in sorted(set(link.seed) - set(latest) - mine, key=lambda p: -p.count("/")):
        gone = target / path
        if gone.is_dir() and not gone.is_symlink():
            shutil.rmtree(gone, ignore_errors=True)
        else:
            gone.unlink(missing_ok=True)
    fresh = {
        path: entry for path, entry in latest.items()
        if path not in mine and (path not in link.seed or _content(link.seed[path]) != _content(entry)
                                 or link.seed[path].kind != entry.kind)
    }
    copy_in(store, VolumeLink(link.mount_path, link.volume_id, link.read_only, fresh), target)
    link.seed = latest


def _file_entry(store: Store, path: Path) -> Entry:
    blocks, size = [], 0
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_SIZE):
            blocks.append(store.put_bytes(chunk))
            size += len(chunk)
    return Entry(FILE, path.stat().st_mode & 0o777, size, blocks)


def scan(store: Store, link: VolumeLink, source: Path) -> Changes:
    """Compare `source` (the mount directory) with what the sandbox was given; new and
    changed file contents are stored as blocks (file I/O only; any thread)."""
    now: dict[str, Entry] = {}
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            for name in dirnames:
                now[(rel / name).as_posix()] = Entry(DIRECTORY, 0o755)
            for name in filenames:
                full = Path(dirpath) / name
                if full.is_file() and not full.is_symlink():
                    now[(rel / name).as_posix()] = _file_entry(store, full)
    changes = Changes()
    for path, entry in sorted(now.items()):
        before = link.seed.get(path)
        if entry.kind == DIRECTORY:
            if before is None or before.kind != DIRECTORY:
                changes.dirs.append(path)
        elif before is None or before.kind != FILE or _content(before) != _content(entry):
            changes.files[path] = entry
    changes.removed = sorted((p for p in link.seed if p not in now), key=lambda p: -p.count("/"))
    return changes


def _content(entry: Entry) -> str:
    return hashlib.sha256("".join(entry.blocks).encode()).hexdigest() + f":{entry.size}"


def commit(store: Store, link: VolumeLink, changes: Changes, mtime: int) -> None:
    """Apply a sandbox's changes to the volume (in the caller's transaction). A volume
    deleted meanwhile, or an entry another client changed into a conflicting type, is
    skipped."""
    from harvest_iac.emulator.services.volumes import VolumeFiles

    if store.one("SELECT 1 FROM volumes WHERE id = ?", link.volume_id) is None:
        return
    files = VolumeFiles(store, link.volume_id)
    for path in changes.removed:
        _quietly(files.remove, path, recursive=True)
    for path in changes.dirs:
        _quietly(files.mkdirs, path, mtime)
    for path, entry in changes.files.items():
        existing = files.get(path)
        if existing is not None and existing["type"] == DIRECTORY:
            _quietly(files.remove, path, recursive=True)
        _quietly(files.write, path, entry.mode, entry.size, entry.blocks, overwrite=True)


def _quietly(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except GRPCError:
        pass
