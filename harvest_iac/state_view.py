"""`harvest state list` and `harvest state show ADDRESS`: what harvest manages in an environment,
from its state record. A secret's hash is shown by its method only (never the digest, salt or
key id), and values never reach the record at all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from harvest_iac.errors import HarvestError, printable
from harvest_iac.state import ResourceRecord, StateRecord, record_to_dict


def summary(address: str, rec: ResourceRecord) -> str:
    """One line about a record, for `state list`."""
    kind = address.split(".", 1)[0]
    spec = rec.spec
    parts: list[str] = []
    if rec.object_id:
        parts.append(rec.object_id)
    if kind == "volume":
        parts.append(f"version {spec.get('version')}")
        parts.append("protected" if spec.get("protect", True) else "not protected")
    elif kind == "secret":
        parts.append(f"keys {', '.join(spec.get('keys', [])) or '(none)'}")
        if rec.values_hash is not None:
            parts.append(f"values hashed ({rec.values_hash.method})")
    elif kind == "app":
        parts.append(f"version {rec.version}")
        if rec.rollback is not None and rec.rollback.version is not None:
            parts.append(f"rolled back to version {rec.rollback.to_version} as version {rec.rollback.version}")
    elif kind == "snapshot" and rec.snapshots:
        newest = rec.snapshots[-1]
        parts.append(f"{len(rec.snapshots)} image(s), newest {newest.image_id} made "
                     f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(newest.created_at))}")
    return printable(f"{address:<32} {', '.join(parts)}".rstrip())


def list_text(state: StateRecord) -> str:
    head = f"{state.environment}/{state.app} (state record serial {state.serial}, {len(state.resources)} " \
           f"resource{'s' if len(state.resources) != 1 else ''}):"
    return "\n".join([printable(head), *(f"  {summary(a, r)}" for a, r in sorted(state.resources.items()))])


def shown(address: str, state: StateRecord) -> dict[str, Any]:
    """The record of one address as JSON-able data; a secret's hash reduced to its method."""
    data = record_to_dict(state.resources[address])
    if "values_hash" in data:
        data["values_hash"] = f"({data['values_hash']['method']} hash of the values; not shown)"
    return {"address": address, "environment": state.environment, "app": state.app, **data}


def run_state(paths: tuple[str, ...], target_flag: str | None, address: str | None) -> int:
    """`state list` (address None) or `state show ADDRESS` for every environment under `paths`."""
    from harvest_iac.modal_backend import Session
    from harvest_iac.planner import load_environments
    from harvest_iac.targets import resolve_target

    loaded = load_environments(paths)
    choice = resolve_target(target_flag)
    if choice.notice:
        click.echo(choice.notice, err=True)
    found = False
    with Session(choice, Path.cwd()) as session:
        for item in loaded:
            env, app = item.spec.environment, item.spec.app
            state = session.read_state(env, app)
            if address is None:
                click.echo(list_text(state) if state is not None else
                           printable(f"{env}/{app}: no state record (harvest manages nothing there)"))
            elif state is not None and address in state.resources:
                found = True
                click.echo(json.dumps(shown(address, state), indent=2, sort_keys=True))
    if address is not None and not found:
        where = ", ".join(f"{i.spec.environment}/{i.spec.app}" for i in loaded)
        raise HarvestError(printable(f"{address} is not managed by harvest in {where}; `harvest state list` "
                                     "shows what is"))
    return 0

