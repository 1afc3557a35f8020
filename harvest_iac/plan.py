"""The plan: a frozen, ordered list of changes, the drift seen, and what it was made from.

Vocabulary follows Terraform (`internal/plans/action.go`): create `+`, update `~`,
replace `-/+`, delete `-`, import `<=` (adopt an existing object), forget `.` (stop managing,
keep it), no-op. A rename (`moved:`) is an update whose `previous_address` is the old address.
`reason` explains a change to a person and is never used to decide what apply does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from harvest_iac.secrethash import ValuesHash

PLAN_FORMAT_VERSION = "1.0"

#: The order resources are created / changed in (deletions run in reverse, last).
KIND_ORDER = ("environment", "settings", "volume", "secret", "image", "app", "cron", "sandbox", "snapshot")


class Action(str, Enum):
    """What apply will do to one resource."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    IMPORT = "import"
    FORGET = "forget"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def terraform_actions(self) -> list[str]:
        """The `actions` list of Terraform's JSON plan for this action."""
        return _TF_ACTIONS[self]


_SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "-/+",
    Action.DELETE: "-",
    Action.IMPORT: "<=",
    Action.FORGET: ".",
    Action.NOOP: " ",
}
_TF_ACTIONS = {
    Action.CREATE: ["create"],
    Action.UPDATE: ["update"],
    Action.REPLACE: ["delete", "create"],
    Action.DELETE: ["delete"],
    Action.IMPORT: ["import"],
    Action.FORGET: ["forget"],
    Action.NOOP: ["no-op"],
}

#: Marker used in place of any secret value, in every output.
SENSITIVE = "(sensitive value)"


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: `path` like `schedule` or `retries.max_retries`."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One planned change to one resource."""

    address: str  # "volume.agent-state"
    kind: str  # "volume"
    name: str  # "agent-state"
    action: Action
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    fields: tuple[FieldChange, ...] = ()
    reason: str | None = None  # why this action (e.g. "version is fixed at creation")
    blocked: str | None = None  # a guard refused it: what and how to fix
    notes: tuple[str, ...] = ()  # next fire times, cost estimates, ...
    values_hash: ValuesHash | None = None  # secrets: the values apply will put, hashed
    previous_address: str | None = None  # a rename (`moved:`): the address it had
    destroy_reviewed: bool = False  # a deletion the file names (`removed:` ... `destroy: true`)

    @property
    def counts_as(self) -> str:
        """Which summary bucket: add, change, destroy, import, forget (replace counts add+destroy)."""
        return {
            Action.CREATE: "add",
            Action.UPDATE: "change",
            Action.REPLACE: "replace",
            Action.DELETE: "destroy",
            Action.IMPORT: "import",
            Action.FORGET: "forget",
            Action.NOOP: "none",
        }[self.action]


@dataclass(frozen=True)
class Drift:
    """Something changed outside harvest since the last apply."""

    address: str
    kind: str
    name: str
    what: str  # "deleted outside harvest", "deployed outside harvest", ...
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class Summary:
    add: int
    change: int
    destroy: int
    imports: int
    forget: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy or self.imports or self.forget)

    def line(self) -> str:
        counts = f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"
        if self.imports:
            counts = f"{self.imports} to import, {counts}"
        if self.forget:
            counts += f", {self.forget} to forget"
        return f"Plan: {counts}."


@dataclass(frozen=True)
class Plan:
    """An immutable plan for one environment file against one target."""

    environment: str
    app: str
    target: str
    source: str  # the environment file the plan was made from
    changes: tuple[Change, ...]
    drift: tuple[Drift, ...] = ()
    unmanaged: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    live_fingerprint: str = ""
    spec_digest: str = ""
    format_version: str = PLAN_FORMAT_VERSION
    notes: tuple[str, ...] = ()  # facts about the environment: snapshot ages, cost and spend

    @property
    def summary(self) -> Summary:
        buckets = {"add": 0, "change": 0, "destroy": 0, "import": 0, "forget": 0}
        for c in self.changes:
            bucket = c.counts_as
            if bucket == "replace":
                buckets["add"] += 1
                buckets["destroy"] += 1
            elif bucket in buckets:
                buckets[bucket] += 1
        return Summary(buckets["add"], buckets["change"], buckets["destroy"], buckets["import"],
                       buckets["forget"])

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.NOOP)

    @property
    def blocked(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.blocked)


def order_changes(changes: list[Change]) -> tuple[Change, ...]:
    """Creates/updates in dependency order (KIND_ORDER), then deletions (and what harvest stops
    managing) in reverse order; within a kind, by name."""

    def rank(kind: str) -> int:
        return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)

    last = (Action.DELETE, Action.FORGET)
    forward = [c for c in changes if c.action not in last]
    deletes = [c for c in changes if c.action in last]
    forward.sort(key=lambda c: (rank(c.kind), c.name))
    deletes.sort(key=lambda c: (-rank(c.kind), c.name))
    return tuple(forward + deletes)


def plan_differences(saved: Plan, fresh: Plan, values_differ: Callable[[Change], str | None],
                     label: str = "the saved plan") -> list[str]:
    """How `fresh` differs from `saved` (empty: apply would do exactly what `saved` shows).
    Compared per address: the action, what the resource becomes (`after`), and for secrets
    the values, through `values_differ(saved_change)` (None when they are the same; compared
    by hash: a plan holds no value). The environment's creation is left out: apply makes it
    before it takes the lock. `label` names `saved` in the lines ("the reviewed plan")."""
    before = {c.address: c for c in saved.actionable if c.kind != "environment"}
    now = {c.address: c for c in fresh.actionable if c.kind != "environment"}
    out = []
    for address in sorted(before.keys() | now.keys()):
        old, new = before.get(address), now.get(address)
        if old is None or new is None or old.action is not new.action:
            was = f"would {old.action.value} it" if old else "does not change it"
            will = f"would now {new.action.value} it" if new else "would now leave it alone"
            out.append(f"{address}: {label} {was}, apply {will}")
        elif old.previous_address != new.previous_address:
            out.append(f"{address}: {label} renames it from {old.previous_address}, apply would "
                       f"now rename it from {new.previous_address}")
        elif fingerprint(old.after) != fingerprint(new.after):
            out.append(f"{address}: what it would become is not what {label} shows")
        elif (old.values_hash or new.values_hash) and (why := values_differ(old)):
            out.append(f"{address}: {why}")
    return out


def fingerprint(data: Any) -> str:
    """A stable digest of JSON-able data (sorted keys)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


# -- the plan file ----------------------------------------------------------------------
def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The documented, versioned JSON form (also the saved plan file). No secret values:
    secret resources carry key names, `SENSITIVE` markers and the hash of the values apply
    would put (so a saved plan applies only those values)."""
    s = plan.summary
    return {
        "format_version": plan.format_version,
        "environment": plan.environment,
        "app": plan.app,
        "target": plan.target,
        "source": plan.source,
        "live_fingerprint": plan.live_fingerprint,
        "spec_digest": plan.spec_digest,
        "resource_changes": [
            {
                "address": c.address,
                "type": c.kind,
                "name": c.name,
                "actions": c.action.terraform_actions,
                "action_reason": c.reason,
                "before": c.before,
                "after": c.after,
                "fields": [asdict(f) for f in c.fields],
                "blocked": c.blocked,
                "notes": list(c.notes),
                **({"values_hash": c.values_hash.to_dict()} if c.values_hash else {}),
                **({"previous_address": c.previous_address} if c.previous_address else {}),
                **({"destroy_reviewed": True} if c.destroy_reviewed else {}),
            }
            for c in plan.changes
            if c.action is not Action.NOOP
        ],
        "resource_drift": [
            {
                "address": d.address,
                "type": d.kind,
                "name": d.name,
                "what": d.what,
                "fields": [asdict(f) for f in d.fields],
            }
            for d in plan.drift
        ],
        "unmanaged": list(plan.unmanaged),
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "change_summary": {"add": s.add, "change": s.change, "remove": s.destroy,
                           "import": s.imports, "forget": s.forget},
    }


_ACTION_FROM_TF = {tuple(v): k for k, v in _TF_ACTIONS.items()}


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Read a saved plan back (the inverse of `plan_to_dict`)."""
    changes = tuple(
        Change(
            address=rc["address"],
            kind=rc["type"],
            name=rc["name"],
            action=_ACTION_FROM_TF[tuple(rc["actions"])],
            before=rc.get("before"),
            after=rc.get("after"),
            fields=tuple(FieldChange(**f) for f in rc.get("fields", [])),
            reason=rc.get("action_reason"),
            blocked=rc.get("blocked"),
            notes=tuple(rc.get("notes", [])),
            values_hash=None if rc.get("values_hash") is None else ValuesHash.from_dict(
                rc["values_hash"], f"resource_changes[{i}].values_hash"),
            previous_address=rc.get("previous_address"),
            destroy_reviewed=bool(rc.get("destroy_reviewed", False)),
        )
        for i, rc in enumerate(data["resource_changes"])
    )
    drift = tuple(
        Drift(address=d["address"], kind=d["type"], name=d["name"], what=d["what"],
              fields=tuple(FieldChange(**f) for f in d.get("fields", [])))
        for d in data.get("resource_drift", [])
    )
    return Plan(
        environment=data["environment"],
        app=data["app"],
        target=data["target"],
        source=data["source"],
        changes=changes,
        drift=drift,
        unmanaged=tuple(data.get("unmanaged", [])),
        warnings=tuple(data.get("warnings", [])),
        notes=tuple(data.get("notes", [])),
        live_fingerprint=data["live_fingerprint"],
        spec_digest=data["spec_digest"],
        format_version=data["format_version"],
    )
