"""Helpers for tests that run sandboxes isolated and not: which mode works here, and
processes found on the host by a unique `sleep` argument."""

from __future__ import annotations

import time
import uuid
from pathlib import Path


def sleeper() -> str:
    """A `sleep` argument no other process has, to find that process on the host (process
    ids inside an isolated sandbox are its own)."""
    return f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"


def running(tag: str) -> bool:
    """Whether a live `sleep <tag>` process exists anywhere on the host."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if cmdline == f"sleep\0{tag}\0".encode() and state not in ("Z", "X"):
            return True
    return False


def _gone(tag: str, *, gone: bool = True) -> bool:
    """Whether `sleep <tag>` has ended (a zombie counts as ended), allowing it a moment."""
    for _ in range(100):
        if running(tag) != gone:
            return True
        time.sleep(0.05)
    return False


def started(tag: str) -> bool:
    """Whether `sleep <tag>` runs, allowing it a moment to start."""
    return _gone(tag, gone=False)


def _bwrap_works() -> bool:
    from harvest_iac.emulator.runtime.launcher import choose_launcher

    try:
        return choose_launcher({"HARVEST_ISOLATION": "bubblewrap"}).isolated
    except Exception:
        return False


BWRAP = _bwrap_works()
