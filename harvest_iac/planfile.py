"""Reading a saved plan file (`harvest plan -o plan.json`) back, checked for shape first. Pure.

A file holds `{"plans": [...]}` (what `-o` writes) or one plan object (what `--json` prints
for one environment). Every problem is one message naming where it is, e.g.
`plans[0].source: expected a string, got a list`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from harvest_iac.errors import HarvestError
from harvest_iac.plan import PLAN_FORMAT_VERSION, Action, Plan, plan_from_dict
from harvest_iac.secrethash import ValuesHash
from harvest_iac.spec.messages import EXPECTED, display
from harvest_iac.spec.units import describe


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _FieldDoc(_Shape):
    path: str
    before: Any = None
    after: Any = None


class _ChangeDoc(_Shape):
    address: str
    type: str
    name: str
    actions: list[str]
    action_reason: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    fields: list[_FieldDoc] = []
    blocked: str | None = None
    notes: list[str] = []
    values_hash: dict[str, Any] | None = None
    previous_address: str | None = None
    destroy_reviewed: bool = False


class _DriftDoc(_Shape):
    address: str
    type: str
    name: str
    what: str
    fields: list[_FieldDoc] = []


class _PlanDoc(_Shape):
    format_version: str
    environment: str
    app: str
    target: str
    source: str
    live_fingerprint: str
    spec_digest: str
    resource_changes: list[_ChangeDoc]
    resource_drift: list[_DriftDoc] = []
    unmanaged: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []


class _PlanFile(_Shape):
    plans: list[_PlanDoc]


Path = tuple[str | int, ...]


class _Problem(Exception):
    def __init__(self, path: Path, message: str) -> None:
        where = display(path)
        super().__init__(f"{where}: {message}" if where else message)


def plans_from_json(text: str, where: str) -> list[Plan]:
    """The plans of a plan file's text; HarvestError (one line, naming `where`) if the text is
    not a well-formed plan file."""
    try:
        return _plans(json.loads(text))
    except ValueError as exc:
        problem = f"not JSON ({exc})"
    except _Problem as exc:
        problem = str(exc)
    raise HarvestError(f"{where}: {problem}; make a new plan with `harvest plan -o {where}`")


def _plans(data: Any) -> list[Plan]:
    if not isinstance(data, dict):
        raise _Problem((), f"expected a mapping (key: value) with `plans`, got {describe(data)}")
    prefix: Path = ("plans",) if "plans" in data else ()
    docs = list(_validated(_PlanFile, data).plans) if prefix else [_validated(_PlanDoc, data)]
    if not docs:
        raise _Problem(prefix, "holds no plan")
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        at = (*prefix, index) if prefix else ()
        _check(doc, at)
        if (doc.environment, doc.app) in seen:
            raise _Problem(at, f"a second plan for environment {doc.environment!r} (app {doc.app!r}); "
                               "keep one plan per environment")
        seen.add((doc.environment, doc.app))
    return [plan_from_dict(doc.model_dump()) for doc in docs]


def _validated(model: type[_Shape], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = tuple(error["loc"])
        if error["type"] == "missing":
            raise _Problem(loc[:-1], f"missing required key `{loc[-1]}`") from None
        if error["type"] in EXPECTED:
            raise _Problem(loc, f"expected {EXPECTED[error['type']]}, got "
                                f"{describe(error['input'])}") from None
        raise _Problem(loc, str(error["msg"])) from None


def _check(doc: _PlanDoc, at: Path) -> None:
    if doc.format_version != PLAN_FORMAT_VERSION:
        raise _Problem((*at, "format_version"), f"format {doc.format_version!r} is not supported by "
                                                f"this harvest (it reads {PLAN_FORMAT_VERSION!r})")
    allowed = [a.terraform_actions for a in Action if a is not Action.NOOP]
    for index, change in enumerate(doc.resource_changes):
        here = (*at, "resource_changes", index)
        if change.actions not in allowed:
            listed = ", ".join(json.dumps(a) for a in allowed)
            raise _Problem((*here, "actions"), f"expected one of {listed}, got "
                                               f"{json.dumps(change.actions)}")
        if change.address != f"{change.type}.{change.name}":
            raise _Problem((*here, "address"), f"{change.address!r} does not match its type "
                                               f"{change.type!r} and name {change.name!r}")
        if change.previous_address is not None and not change.previous_address.startswith(f"{change.type}."):
            raise _Problem((*here, "previous_address"), f"{change.previous_address!r} is not a {change.type} "
                                                        "address; a rename keeps the kind")
        if change.values_hash is not None:
            try:
                ValuesHash.from_dict(change.values_hash, display((*here, "values_hash")))
            except ValueError as exc:
                raise _Problem((), str(exc)) from None
