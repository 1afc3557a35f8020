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
from harvest_iac.spec.units import describe

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
                raise ValueError(f"expected a mapping, got {describe(data)}")
            fmt = data.get("format")
            if fmt != STATE_FORMAT:
                raise HarvestError(
                    f"{where}: format {fmt!r} is not supported by this harvest "
                    f"(it reads format {STATE_FORMAT}); upgrade harvest"
                )
            resources = _field(data, "resources", dict, "resources")
            return cls(
                environment=_field(data, "environment", str),
                app=_field(data, "app", str),
                serial=_field(data, "serial", int),
                lineage=_field(data, "lineage", str),
                salt=_field(data, "salt", str),
                resources={_address(a): _record_from_dict(r, f"resources[{a}]")
                           for a, r in resources.items()},
                format=fmt,
            )
        except HarvestError:
            raise
        except (ValueError, RecursionError) as exc:
            raise HarvestError(f"{where} is corrupt ({exc}); fix or remove it") from exc


_MISSING = object()
_EXPECTED = {str: "a string", int: "a whole number", float: "a number", dict: "a mapping",
             list: "a list"}


def _field(data: dict[str, Any], key: str, kind: type, where: str = "", default: Any = _MISSING
           ) -> Any:
    """`data[key]` if it is a `kind` (a float may be written as a whole number)."""
    where = where or key
    if key not in data:
        if default is _MISSING:
            raise ValueError(f"{where}: missing")
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: expected {_EXPECTED[kind]}, got {describe(value)}")
    return value


def _address(address: str) -> str:
    kind, dot, name = address.partition(".")
    if not (kind and dot and name):
        raise ValueError(f"resources: {address!r} is not an address like volume.NAME")
    return address
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


def _record_from_dict(d: object, where: str) -> ResourceRecord:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {describe(d)}")
    snapshots = _field(d, "snapshots", list, f"{where}.snapshots", [])
    version = d.get("version")
    return ResourceRecord(
        object_id=_field(d, "object_id", str, f"{where}.object_id", ""),
        spec=_field(d, "spec", dict, f"{where}.spec", {}),
        values_hash=_field(d, "values_hash", str, f"{where}.values_hash", ""),
        created_at=_field(d, "created_at", float, f"{where}.created_at", 0.0),
        snapshots=tuple(_snapshot_from_dict(s, f"{where}.snapshots[{i}]")
                        for i, s in enumerate(snapshots)),
        version=None if version is None else _field(d, "version", int, f"{where}.version"),
        code_hash=_field(d, "code_hash", str, f"{where}.code_hash", ""),
    )


def _snapshot_from_dict(d: object, where: str) -> SnapshotRecord:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {describe(d)}")
    return SnapshotRecord(_field(d, "image_id", str, f"{where}.image_id"),
                          _field(d, "created_at", float, f"{where}.created_at"))
