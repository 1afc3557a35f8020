"""harvest's state record: what Modal cannot tell us, kept in the target environment.

Stored as JSON in a file of a harvest-owned Volume (durable; a Dict entry would expire
after 7 idle days), one file per (environment, app). Versioned (`format`), with a `serial`
incremented on every write and a `lineage` fixed at creation. Holds:

* which objects harvest manages (addresses) and the spec each was last applied from;
* a salted hash of each secret's values (never the values), so value changes show;
* the deployed app's code hash and version;
* snapshot image ids with their creation times (newest last).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as _secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from harvest_iac.errors import HarvestError
from harvest_iac.naming import LOCK_DICT, STATE_VOLUME

__all__ = ["LOCK_DICT", "STATE_VOLUME"]  # where the record lives (re-exported)

STATE_FORMAT = 1


def state_path(app: str) -> str:
    return f"/apps/{app}.json"


@dataclass(frozen=True)
class SnapshotRecord:
    image_id: str
    created_at: float  # unix seconds


@dataclass(frozen=True)
class ResourceRecord:
    """One managed object: its Modal id (if any), last-applied spec, and extras."""

    object_id: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    values_hash: str = ""  # secrets: salted hash of the values
    created_at: float = 0.0  # Modal's creation time seen at apply (secrets: recreate drift)
    snapshots: tuple[SnapshotRecord, ...] = ()  # snapshots: newest last
    version: int | None = None  # app: deployed version
    code_hash: str = ""  # app: hash of the rendered code


@dataclass(frozen=True)
class StateRecord:
    environment: str
    app: str
    serial: int = 0
    lineage: str = ""
    salt: str = ""
    resources: dict[str, ResourceRecord] = field(default_factory=dict)
    format: int = STATE_FORMAT

    @classmethod
    def new(cls, environment: str, app: str) -> StateRecord:
        return cls(environment=environment, app=app, serial=0, lineage=str(uuid.uuid4()),
                   salt=_secrets.token_hex(16))

    def with_resource(self, address: str, record: ResourceRecord | None) -> StateRecord:
        resources = dict(self.resources)
        if record is None:
            resources.pop(address, None)
        else:
            resources[address] = record
        return replace(self, resources=resources)

    def bumped(self) -> StateRecord:
        return replace(self, serial=self.serial + 1)

    def hash_values(self, values: dict[str, str]) -> str:
        """Salted (HMAC-SHA256) hash of a secret's values; empty salt is refused."""
        if not self.salt:
            raise ValueError("state record has no salt")
        blob = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        return "hmac-sha256:" + hmac.new(self.salt.encode(), blob, hashlib.sha256).hexdigest()

    # -- (de)serialisation ----------------------------------------------------------
    def to_json(self) -> str:
        data = {
            "format": self.format,
            "environment": self.environment,
            "app": self.app,
            "serial": self.serial,
            "lineage": self.lineage,
            "salt": self.salt,
            "resources": {
                addr: _record_to_dict(rec) for addr, rec in sorted(self.resources.items())
            },
        }
        return json.dumps(data, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str = "state record") -> StateRecord:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            fmt = data.get("format")
            if fmt != STATE_FORMAT:
                raise HarvestError(
                    f"{where}: format {fmt!r} is not supported by this harvest "
                    f"(it reads format {STATE_FORMAT}); upgrade harvest"
                )
            return cls(
                environment=str(data["environment"]),
                app=str(data["app"]),
                serial=int(data["serial"]),
                lineage=str(data["lineage"]),
                salt=str(data["salt"]),
                resources={a: _record_from_dict(r) for a, r in data["resources"].items()},
                format=fmt,
            )
        except HarvestError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise HarvestError(f"{where} is corrupt ({exc}); fix or remove it") from exc


def _record_to_dict(rec: ResourceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"spec": rec.spec}
    if rec.object_id:
        out["object_id"] = rec.object_id
    if rec.values_hash:
        out["values_hash"] = rec.values_hash
    if rec.created_at:
        out["created_at"] = rec.created_at
    if rec.snapshots:
        out["snapshots"] = [{"image_id": s.image_id, "created_at": s.created_at}
                            for s in rec.snapshots]
    if rec.version is not None:
        out["version"] = rec.version
    if rec.code_hash:
        out["code_hash"] = rec.code_hash
    return out


def _record_from_dict(d: dict[str, Any]) -> ResourceRecord:
    return ResourceRecord(
        object_id=str(d.get("object_id", "")),
        spec=dict(d.get("spec", {})),
        values_hash=str(d.get("values_hash", "")),
        created_at=float(d.get("created_at", 0.0)),
        snapshots=tuple(SnapshotRecord(str(s["image_id"]), float(s["created_at"]))
                        for s in d.get("snapshots", [])),
        version=d.get("version"),
        code_hash=str(d.get("code_hash", "")),
    )
