"""harvest's state record: what Modal cannot tell us, kept in the target environment.

Stored as JSON in a file of a harvest-owned Volume (durable; a Dict entry would expire
after 7 idle days), one file per (environment, app). Versioned (`format`), with a `serial`
incremented on every write and a `lineage` fixed at creation. Holds:

* which objects harvest manages (addresses) and the spec each was last applied from;
* a hash of each secret's values (never the values), so value changes show: keyed with
  `HARVEST_STATE_KEY` when set, else scrypt (see `secrethash`);
* the deployed app's code hash and version, and the last `harvest rollback` of it;
* snapshot image ids with their creation times (newest last).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from harvest_iac.errors import HarvestError
from harvest_iac.naming import LOCK_DICT, STATE_VOLUME
from harvest_iac.secrethash import LEGACY, SecretHasher, Verdict, ValuesHash
from harvest_iac.spec.units import describe

__all__ = ["LOCK_DICT", "STATE_VOLUME"]  # where the record lives (re-exported)

#: Format 2 keeps each secret's hash with its method; format 1 (still read) kept one salt for
#: the record beside `hmac-sha256:` hashes.
STATE_FORMAT = 2
_READABLE_FORMATS = (1, 2)


def state_path(app: str) -> str:
    return f"/apps/{app}.json"


@dataclass(frozen=True)
class SnapshotRecord:
    image_id: str
    created_at: float  # unix seconds
    expires_at: float = 0.0  # unix seconds; 0: never (made with `ttl: none`, or before ttls)


@dataclass(frozen=True)
class RollbackRecord:
    """`harvest rollback` of the app: from the version that was serving to an earlier one.
    `version` is the version the rollback made, None while the rollback is under way."""

    from_version: int
    to_version: int
    version: int | None = None
    at: float = 0.0  # unix seconds


@dataclass(frozen=True)
class ResourceRecord:
    """One managed object: its Modal id (if any), last-applied spec, and extras."""

    object_id: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    values_hash: ValuesHash | None = None  # secrets: the values, hashed
    created_at: float = 0.0  # Modal's creation time seen at apply (secrets: recreate drift)
    snapshots: tuple[SnapshotRecord, ...] = ()  # snapshots: newest last
    version: int | None = None  # app: deployed version
    code_hash: str = ""  # app: hash of the rendered code
    rollback: RollbackRecord | None = None  # app: the last `harvest rollback`


@dataclass(frozen=True)
class StateRecord:
    environment: str
    app: str
    serial: int = 0
    lineage: str = ""
    resources: dict[str, ResourceRecord] = field(default_factory=dict)

    @classmethod
    def new(cls, environment: str, app: str) -> StateRecord:
        return cls(environment=environment, app=app, serial=0, lineage=str(uuid.uuid4()))

    def with_resource(self, address: str, record: ResourceRecord | None) -> StateRecord:
        resources = dict(self.resources)
        if record is None:
            resources.pop(address, None)
        else:
            resources[address] = record
        return replace(self, resources=resources)

    def bumped(self) -> StateRecord:
        return replace(self, serial=self.serial + 1)

    def with_current_hashes(self, values: Mapping[str, dict[str, str]], hasher: SecretHasher
                            ) -> StateRecord:
        """Secret hashes made another way (format 1's salted HMAC, older scrypt costs, no key
        where there is one now) made again the hasher's way, for the secrets whose `values`
        (by name) are known and still the ones hashed."""
        out = self
        for address, rec in self.resources.items():
            kind, name = address.split(".", 1)
            known = values.get(name)
            if (kind != "secret" or rec.values_hash is None or known is None
                    or hasher.is_current(rec.values_hash)
                    or hasher.check(known, rec.values_hash).verdict is not Verdict.SAME):
                continue
            out = out.with_resource(address, replace(
                rec, values_hash=hasher.hash(name, known, like=rec.values_hash)))
        return out

    # -- (de)serialisation ----------------------------------------------------------
    def to_json(self) -> str:
        data = {
            "format": STATE_FORMAT,
            "environment": self.environment,
            "app": self.app,
            "serial": self.serial,
            "lineage": self.lineage,
            "resources": {
                addr: record_to_dict(rec) for addr, rec in sorted(self.resources.items())
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
            if fmt not in _READABLE_FORMATS or isinstance(fmt, bool):
                raise HarvestError(
                    f"{where}: format {fmt!r} is not supported by this harvest "
                    f"(it reads formats {', '.join(map(str, _READABLE_FORMATS))}); upgrade harvest"
                )
            legacy_salt = _field(data, "salt", str) if fmt == 1 else None
            resources = _field(data, "resources", dict, "resources")
            return cls(
                environment=_field(data, "environment", str),
                app=_field(data, "app", str),
                serial=_field(data, "serial", int),
                lineage=_field(data, "lineage", str),
                resources={_address(a): _record_from_dict(r, f"resources[{a}]", legacy_salt)
                           for a, r in resources.items()},
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


def record_to_dict(rec: ResourceRecord) -> dict[str, Any]:
    """One resource's record as stored (JSON-able)."""
    out: dict[str, Any] = {"spec": rec.spec}
    if rec.object_id:
        out["object_id"] = rec.object_id
    if rec.values_hash is not None:
        out["values_hash"] = rec.values_hash.to_dict()
    if rec.created_at:
        out["created_at"] = rec.created_at
    if rec.snapshots:
        out["snapshots"] = [{"image_id": s.image_id, "created_at": s.created_at,
                             **({"expires_at": s.expires_at} if s.expires_at else {})}
                            for s in rec.snapshots]
    if rec.version is not None:
        out["version"] = rec.version
    if rec.code_hash:
        out["code_hash"] = rec.code_hash
    if rec.rollback is not None:
        out["rollback"] = {k: v for k, v in asdict(rec.rollback).items() if v is not None}
    return out


def _record_from_dict(d: object, where: str, legacy_salt: str | None) -> ResourceRecord:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {describe(d)}")
    snapshots = _field(d, "snapshots", list, f"{where}.snapshots", [])
    version = d.get("version")
    return ResourceRecord(
        object_id=_field(d, "object_id", str, f"{where}.object_id", ""),
        spec=_field(d, "spec", dict, f"{where}.spec", {}),
        values_hash=_values_hash(d, f"{where}.values_hash", legacy_salt),
        created_at=_field(d, "created_at", float, f"{where}.created_at", 0.0),
        snapshots=tuple(_snapshot_from_dict(s, f"{where}.snapshots[{i}]")
                        for i, s in enumerate(snapshots)),
        version=None if version is None else _field(d, "version", int, f"{where}.version"),
        code_hash=_field(d, "code_hash", str, f"{where}.code_hash", ""),
        rollback=_rollback_from_dict(d["rollback"], f"{where}.rollback") if "rollback" in d else None,
    )


def _rollback_from_dict(d: object, where: str) -> RollbackRecord:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {describe(d)}")
    version = d.get("version")
    return RollbackRecord(
        from_version=_field(d, "from_version", int, f"{where}.from_version"),
        to_version=_field(d, "to_version", int, f"{where}.to_version"),
        version=None if version is None else _field(d, "version", int, f"{where}.version"),
        at=_field(d, "at", float, f"{where}.at", 0.0),
    )


def _values_hash(d: dict[str, Any], where: str, legacy_salt: str | None) -> ValuesHash | None:
    """Format 2: a hash naming its method. Format 1: `hmac-sha256:HEX`, keyed with the
    record's salt (`legacy_salt`)."""
    if "values_hash" not in d:
        return None
    if legacy_salt is None:
        return ValuesHash.from_dict(d["values_hash"], where)
    text = _field(d, "values_hash", str, where)
    method, _, digest = text.partition(":")
    if method != LEGACY:
        raise ValueError(f"{where}: expected `{LEGACY}:HEX`")
    return ValuesHash.from_dict({"method": LEGACY, "salt": legacy_salt, "digest": digest}, where)


def _snapshot_from_dict(d: object, where: str) -> SnapshotRecord:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {describe(d)}")
    return SnapshotRecord(_field(d, "image_id", str, f"{where}.image_id"),
                          _field(d, "created_at", float, f"{where}.created_at"),
                          _field(d, "expires_at", float, f"{where}.expires_at", 0.0))
