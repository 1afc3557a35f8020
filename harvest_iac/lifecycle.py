"""`moved:` and `removed:` entries in the plan. Pure: no modal, no network, no file I/O.

A rename is *pending* while the state record holds the old address and not the new one. The
diff compares the new address as if the rename were done (`as_if_moved`: the record, and a
volume or function still under its old name, shown under the new one), then `mark_moves` turns
what it found into a rename: an update whose `previous_address` is the old address. Modal renames
a volume in place; a secret is made again under its new name from its declared source (the old
one is deleted once the new one exists); a cron, sandbox profile or image moves with the next
deploy. Once applied, an entry changes nothing and can be deleted from the file.

`removed:` turns the deletion of an object the file no longer declares into one the file itself
allows (`destroy: true`: no `--allow-destroy` needed, the deletion was reviewed), or into
`forget` (`destroy: false`: the record is dropped, the object stays in Modal). A protected
volume is never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from harvest_iac.live import Live
from harvest_iac.naming import FUNCTION_KINDS, function_tag
from harvest_iac.plan import SENSITIVE, Action, Change, FieldChange

#: What is deployed as part of the app (its records go with it).
APP_PARTS = ("image", "cron", "sandbox")


def _split(address: str) -> tuple[str, str]:
    kind, name = address.split(".", 1)
    return kind, name


def _live_names(live: Live, kind: str) -> Iterable[str]:
    if kind == "volume":
        return live.volumes
    if kind == "secret":
        return live.secrets
    return ()


@dataclass(frozen=True)
class Moves:
    """The renames a plan makes: new address -> old address."""

    pending: dict[str, str]
    """Not applied yet: the record is under the old address only."""
    taken: dict[str, str]
    """Volumes whose new name is taken in Modal by one harvest does not manage: refused."""
    finishing: dict[str, str]
    """Secrets made under their new name whose old one is still to delete."""


def find_moves(moved: Mapping[str, str], live: Live) -> Moves:
    """Sort the file's `moved` entries (old -> new) by what the state record and Modal show."""
    resources = live.state.resources if live.state is not None else {}
    pending: dict[str, str] = {}
    taken: dict[str, str] = {}
    finishing: dict[str, str] = {}
    for source, to in moved.items():
        kind, old = _split(source)
        new = _split(to)[1]
        names = set(_live_names(live, kind))
        if source in resources and to in resources:
            if kind == "secret":
                finishing[to] = source
        elif source in resources:
            # a secret is made again under its new name anyway (a secret of that name is adopted,
            # as without the rename), so only a volume's new name can be taken
            (taken if kind == "volume" and new in names and old in names else pending)[to] = source
    return Moves(pending, taken, finishing)


def as_if_moved(live: Live, moves: Moves) -> Live:
    """`live` as it will be once the pending renames are done, for comparing the new addresses.
    Secrets are not renamed in Modal (one is made under the new name): their record stays."""
    state = live.state
    if state is None or not moves.pending:
        return live
    volumes = dict(live.volumes)
    functions = dict(live.app.functions) if live.app is not None else {}
    for to, source in moves.pending.items():
        kind, old = _split(source)
        new = _split(to)[1]
        if kind == "secret":
            continue
        state = state.with_resource(to, state.resources[source]).with_resource(source, None)
        if kind == "volume" and new not in volumes and old in volumes:
            volumes[new] = replace(volumes.pop(old), name=new)
        if kind in FUNCTION_KINDS:
            old_tag, new_tag = function_tag(kind, old), function_tag(kind, new)
            if new_tag not in functions and old_tag in functions:
                functions[new_tag] = replace(functions.pop(old_tag), name=new_tag)
    app = replace(live.app, functions=functions) if live.app is not None else None
    return replace(live, volumes=volumes, app=app, state=state)


_RENAMED = {
    "volume": "renamed in place in Modal (VolumeRename): its files stay",
    "secret": ("Modal cannot rename a secret: it is made under its new name with the values from "
               "its declared source, then the old one is deleted"),
    "cron": "renamed: the app is redeployed with the function under its new name",
    "sandbox": "renamed: the app is redeployed with the function under its new name",
    "image": "renamed: the app is redeployed",
}


def mark_moves(changes: list[Change], moves: Moves, live: Live) -> list[Change]:
    """The changes the diff found at the new addresses, made renames; the old addresses'
    deletions are part of the rename (or, for a secret made already, allowed by the file).
    `live` is as read (before `as_if_moved`)."""
    renamed = {*moves.pending, *moves.pending.values(), *moves.taken, *moves.taken.values()}
    by_address = {c.address: c for c in changes}
    out = [c for c in changes if c.address not in renamed]
    for to, source in moves.taken.items():
        kind, new = _split(to)
        out.append(Change(to, kind, new, Action.UPDATE, previous_address=source,
                          fields=(FieldChange("name", _split(source)[1], new),),
                          blocked=(f"{to} already exists in Modal and harvest does not manage it, so "
                                   f"{source} cannot be renamed to it: delete or rename one of them in "
                                   "Modal, or drop the `moved` entry to adopt it")))
    resources = live.state.resources if live.state is not None else {}
    for to, source in moves.pending.items():
        out.append(_renamed(by_address.get(to), to, source, live, resources[source].spec))
    for to, source in moves.finishing.items():
        old = by_address.get(source)
        if old is not None and old.action is Action.DELETE:
            out.remove(old)
            out.append(replace(old, destroy_reviewed=True, notes=(),
                               reason=f"moved to {to}: the old name is deleted now that {to} exists"))
        elif old is None:
            kind, name = _split(source)
            out.append(Change(source, kind, name, Action.FORGET,
                              reason=f"moved to {to}; it no longer exists in Modal, so its record is dropped"))
    return out


def _renamed(change: Change | None, to: str, source: str, live: Live, recorded: Mapping[str, Any]
             ) -> Change:
    kind, new = _split(to)
    old = _split(source)[1]
    name = FieldChange("name", old, new)
    reason = _RENAMED[kind]
    if kind == "volume" and old not in live.volumes:
        reason = ("already renamed in Modal; the state record moves to the new name" if new in live.volumes
                  else f"{source} no longer exists in Modal, so {to} is made empty")
    if change is None:
        return Change(to, kind, new, Action.UPDATE, fields=(name,), reason=reason, previous_address=source)
    if change.action is Action.REPLACE:
        return replace(change, previous_address=source, blocked=(
            f"{to} is renamed from {source} and changes version at once; apply the rename first "
            "(keep its version), then change the version"))
    if kind == "secret":  # made (or adopted) under its new name: the diff saw a create or an import
        before = {"keys": list(recorded.get("keys", [])), "values": SENSITIVE}
        keys = () if before["keys"] == (change.after or {}).get("keys") else (
            FieldChange("keys", before["keys"], (change.after or {}).get("keys")),)
        return replace(change, action=Action.UPDATE, before=before, fields=(name, *keys),
                       previous_address=source, reason=reason)
    if change.action is Action.CREATE:  # the volume is gone: nothing to rename
        return replace(change, previous_address=source, reason=reason)
    return replace(change, previous_address=source, reason=reason, fields=(name, *change.fields))


# -- removed --------------------------------------------------------------------------------
def _exists(live: Live, kind: str, name: str) -> bool:
    if kind == "app":
        return live.app is not None and live.app.state != "stopped"
    return name in _live_names(live, kind)


def mark_removed(changes: list[Change], removed: Mapping[str, bool], live: Live, app: str
                 ) -> tuple[list[Change], list[str]]:
    """Deletions the file allows (`destroy: true`) or turns into `forget` (`false`: with an app,
    its crons, sandbox profiles and images too), and records of objects no longer in Modal
    dropped; with a warning for an entry that cannot do what it says."""
    resources = live.state.resources if live.state is not None else {}
    forget_app = removed.get(f"app.{app}") is False
    out: list[Change] = []
    for c in changes:
        destroy = removed.get(c.address)
        part_of_app = forget_app and c.kind in APP_PARTS
        if c.action is not Action.DELETE or (destroy is None and not part_of_app):
            out.append(c)
        elif destroy:
            out.append(_reviewed_delete(c))
        else:
            why = f"part of app.{app}, which `removed:` names with `destroy: false`" if part_of_app \
                else "`removed:` names it with `destroy: false`"
            out.append(replace(c, action=Action.FORGET, blocked=None, reason=why,
                               notes=("it stays in Modal as it is; harvest lists it as not managed",)))
    planned = {c.address for c in out}
    for address, destroy in removed.items():
        kind, name = _split(address)
        if address in planned or address not in resources:
            continue
        gone = not _exists(live, kind, name)
        if gone or not destroy:
            why = "it no longer exists in Modal; its record is dropped" if gone else \
                "`removed:` names it with `destroy: false`"
            out.append(Change(address, kind, name, Action.FORGET, before=resources[address].spec or None,
                              reason=why))
    warnings = [f"removed: {address} is not managed by harvest, so apply does not delete it (delete it "
                "in Modal if you mean to)"
                for address, destroy in sorted(removed.items())
                if destroy and address not in resources and _exists(live, *_split(address))]
    return out, warnings


def _reviewed_delete(c: Change) -> Change:
    if c.blocked:
        return replace(c, blocked=(
            f"{c.address} is protected: `removed:` never deletes a protected volume. To delete it, "
            "declare it again with `protect: false` and apply, then remove it"))
    return replace(c, destroy_reviewed=True, notes=("its files are lost",) if c.kind == "volume" else (),
                   reason="`removed:` names it with `destroy: true` (the deletion is in the reviewed file)")
