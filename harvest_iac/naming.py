"""How harvest names the things it creates in Modal (shared by render, diff and backend)."""

from __future__ import annotations

#: App tag keys harvest sets on the deployed app.
TAG_MANAGED_BY = "managed-by"
TAG_CODE_HASH = "harvest-code-hash"

FUNCTION_KINDS = ("cron", "sandbox")

#: The Volume holding harvest's state records, and the Dict holding its locks, in every
#: environment harvest manages. Declared objects cannot take these names.
STATE_VOLUME = "harvest-state"
LOCK_DICT = "harvest-locks"
RESERVED_NAMES = (STATE_VOLUME, LOCK_DICT)

#: `budget: none` under `settings:`: the environment has no budget (one set before is cleared).
NO_BUDGET = "none"


def function_tag(kind: str, name: str) -> str:
    """The deployed function's name for a cron or a sandbox profile.

    Crons keep their own name (what users look for in Modal's dashboard); a sandbox profile
    `agent` becomes the function `sandbox-agent` (its `execute_agent_code`).
    """
    if kind == "cron":
        return name
    if kind == "sandbox":
        return f"sandbox-{name}"
    raise ValueError(f"no function for {kind}")


#: Prefix of the names under which harvest publishes snapshot images.
SNAPSHOT_IMAGE_PREFIX = "harvest-snapshot-"
_MODAL_NAME_MAX = 64


def snapshot_image_name(snapshot: str) -> str:
    """The name the newest image of snapshot `snapshot` is published under (`image.publish`),
    in the snapshot's environment, found again with `modal.Image.from_name(name,
    environment_name=...)`. Modal adds the tag `:latest`.

    `warm` becomes `harvest-snapshot-warm`; a name too long for Modal's 64 characters is cut
    and ends with 8 hex digits of its sha256, so distinct snapshots keep distinct names.
    """
    import hashlib

    name = SNAPSHOT_IMAGE_PREFIX + snapshot
    if len(name) <= _MODAL_NAME_MAX:
        return name
    digest = hashlib.sha256(snapshot.encode()).hexdigest()[:8]
    return name[: _MODAL_NAME_MAX - len(digest) - 1] + "-" + digest
