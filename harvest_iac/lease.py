"""harvest's lock protocol: a fencing chain of put-if-absent entries in a Modal Dict.

Modal's Dict has no compare-and-swap on a value, only an atomic put-if-absent. So the lock of
app A is a chain of entries `A#1`, `A#2`, ... and its state is the entry of the highest
generation n: held (owner, id, deadline) or free. Every change is a put-if-absent of `A#n+1`
by someone who read generation n, so of all who read n exactly one succeeds:

* acquire: n is free, or held past its deadline (a takeover): put `A#n+1` = held by us;
* renew: we hold n: put `A#n+1` = held by us with a new deadline (this fails if someone took
  the lock over meanwhile, so a renewal never revives a lock that was taken);
* release (and `harvest unlock`): put `A#n+1` = free.

The winner of `A#m` then lists the keys. A generation above m means it won a generation that
had already been cleaned up (it read the chain, then paused past its deadline while others
moved on): it lost, and pops its entry. Otherwise it pops the generations below m, so the
chain stays one entry long. The highest entry is never popped, so generations only grow
(unless Modal drops the chain after 7 idle days: it starts again at 1, and whoever wins `A#1`
holds a lock nobody else holds).

Works on any object with the `modal.Dict` methods `put(key, value, skip_if_exists=)`, `get`,
`pop(key, default)` and `keys()`. The generated app embeds the definitions below verbatim (its
`refresh-snapshots` cron takes the same lock in a container without harvest), so they use
only `time`, `uuid` and `Any`, which the generated module imports as well.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

LEASE_SEPARATOR = "#"


def lease_key(name: str, generation: int) -> str:
    """The Dict key of one generation of the lock `name`."""
    return f"{name}{LEASE_SEPARATOR}{generation}"


def lease_generations(locks: Any, name: str) -> list[int]:
    """The generations of lock `name` present in the Dict, lowest first."""
    prefix = name + LEASE_SEPARATOR
    found = []
    for key in locks.keys():
        if isinstance(key, str) and key.startswith(prefix):
            digits = key[len(prefix):]
            if digits.isascii() and digits.isdigit():
                found.append(int(digits))
    return sorted(found)


def lease_read(locks: Any, name: str) -> tuple[int, dict[str, Any] | None]:
    """The current generation of lock `name` and its entry; (0, None) if it never existed.
    Reads again when the newest entry vanished between listing and reading it (someone
    advanced the chain and cleaned up meanwhile)."""
    while True:
        generations = lease_generations(locks, name)
        if not generations:
            return 0, None
        value = locks.get(lease_key(name, generations[-1]))
        if value is not None:
            return generations[-1], value if isinstance(value, dict) else {}


def lease_held(owner: str, run_url: str, ttl: float) -> dict[str, Any]:
    """A new entry (its own id) holding the lock for `ttl` seconds from now."""
    now = time.time()
    return {"owner": owner, "run_url": run_url, "id": uuid.uuid4().hex, "acquired_at": now,
            "deadline": now + ttl}


def lease_renewed(value: dict[str, Any], ttl: float) -> dict[str, Any]:
    """Our entry with its deadline `ttl` seconds from now."""
    return {**value, "deadline": time.time() + ttl}


def lease_free(by: str) -> dict[str, Any]:
    """An entry saying the lock is free (released, or freed by `harvest unlock`)."""
    return {"free": True, "freed_by": by, "freed_at": time.time()}


def lease_state(value: dict[str, Any] | None, now: float) -> str:
    """The lock's state: free, live (held, deadline ahead) or stale (deadline passed)."""
    if value is None or value.get("free") is True:
        return "free"
    try:
        deadline = float(value.get("deadline", 0))
    except (TypeError, ValueError):
        deadline = 0.0
    return "live" if deadline >= now else "stale"


def lease_advance(locks: Any, name: str, generation: int, value: dict[str, Any]) -> bool:
    """Put `value` as generation + 1 if nobody did first; True when it is ours and newest.
    Then drop the generations below it."""
    key = lease_key(name, generation + 1)
    if not locks.put(key, value, skip_if_exists=True):
        return False
    generations = lease_generations(locks, name)
    if generations and generations[-1] > generation + 1:
        lease_drop(locks, key)
        return False
    for old in generations:
        if old <= generation:
            lease_drop(locks, lease_key(name, old))
    return True


def lease_drop(locks: Any, key: str) -> None:
    """Clean up a generation below the newest, best effort: one left behind is ignored, and
    the next change of the lock drops it."""
    try:
        locks.pop(key, None)
    except Exception:  # noqa: BLE001 - a failed cleanup must not fail the lock's change
        pass
