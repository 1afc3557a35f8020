"""`harvest apply`: walk the plan's changes in dependency order through the backend, with
the environment's lock held, writing the state record after every step.

Order: environment, settings, volumes (renames too), secrets (a renamed one is made under its
new name), images + app deploy (crons, sandbox profiles), snapshots, then the deletions the file
(`removed:`, a renamed secret's old name) or the flags allow, then the records of what harvest
stops managing (`removed:` with `destroy: false`). A no-change apply makes no mutating call (it
does not even take the lock). Every step is idempotent, so an apply killed at any point and
run again converges.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harvest_iac import github
from harvest_iac.diff import compare
from harvest_iac.errors import HarvestError, LockError, StalePlanError, printable
from harvest_iac.lease import (
    lease_advance,
    lease_free,
    lease_held,
    lease_read,
    lease_renewed,
    lease_state,
)
from harvest_iac.naming import snapshot_image_name
from harvest_iac.plan import KIND_ORDER, Action, Change, Plan, plan_differences
from harvest_iac.planner import Prepared, load_environments
from harvest_iac.state import (
    STATE_VOLUME,
    ResourceRecord,
    SnapshotRecord,
    StateRecord,
    state_path,
)

LOCK_TTL_S = 3600.0
APP_KINDS = ("image", "cron", "sandbox")


@dataclass(frozen=True)
class ApplyOptions:
    auto_approve: bool = False
    allow_destroy: frozenset[str] = frozenset()
    lock_timeout: float = 0.0
    interactive: bool = False
    reviewed: str | None = None  # --reviewed: the plan file reviewed in the pull request


# -- guards ------------------------------------------------------------------------------
def guard_problems(plan: Plan, allow_destroy: frozenset[str]) -> list[str]:
    """Why this plan cannot be applied as it stands (empty: it can). Checked before any change."""
    problems = []
    for c in plan.actionable:
        if c.blocked:
            problems.append(c.blocked)
        elif c.action in (Action.DELETE, Action.REPLACE) and c.kind in ("volume", "secret", "app"):
            if c.address not in allow_destroy and not c.destroy_reviewed:
                what = "delete" if c.action is Action.DELETE else "replace (delete, then create)"
                reviewed = ", or list it under `removed:` with `destroy: true`" \
                    if c.action is Action.DELETE else ""
                problems.append(
                    f"{c.address}: apply would {what} it; pass --allow-destroy {c.address} to "
                    f"allow that{reviewed}, or keep it in the YAML")
    unknown = sorted(a for a in allow_destroy
                     if a not in {c.address for c in plan.actionable})
    for a in unknown:
        if "." not in a:
            problems.append(f"--allow-destroy {a}: name a resource address such as volume.{a}")
    return problems


# -- the lock ------------------------------------------------------------------------------
def lock_owner() -> tuple[str, str]:
    """Who takes the lock (user@host and pid) and the CI run URL (on GitHub Actions)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})", github.run_url(os.environ)


def _utc(seconds: Any) -> str:
    try:
        when = float(seconds)
    except (TypeError, ValueError):
        when = 0.0
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def describe_lock(value: Mapping[str, Any]) -> str:
    text = f"{value.get('owner', 'someone')} since {_utc(value.get('acquired_at', 0))}"
    if value.get("run_url"):
        text += f" (run {value['run_url']})"
    return printable(text)


class Lock:
    """harvest's lock on one (environment, app), by the protocol of `lease.py`: every
    acquire, renewal and release is a put-if-absent of the next generation, so of two runs
    acting on what they read, only one goes ahead. `pause(point)` is called right before
    each such write ("takeover", "renew", "release"): a seam for tests to force races."""

    def __init__(self, ops: Any, app: str, *, timeout: float, echo: Callable[[str], None]) -> None:
        self.ops = ops
        self.locks = ops.lock_dict()
        self.key = app
        self.timeout = timeout
        self.echo = echo
        self.generation = 0
        self.value: dict[str, Any] = {}
        self.pause: Callable[[str], None] = lambda point: None

    def _where(self) -> str:
        return f"app {self.key!r} in environment {self.ops.environment!r}"

    def acquire(self) -> None:
        start = time.monotonic()
        waited = False
        while True:
            generation, held = lease_read(self.locks, self.key)
            state = lease_state(held, time.time())
            if held is not None and state == "live":
                if time.monotonic() - start >= self.timeout:
                    raise LockError(
                        f"the lock for {self._where()} is held by {describe_lock(held)}. Wait "
                        "for that run (or use --lock-timeout 10m); if it is gone, free the lock "
                        "with `harvest unlock`")
                if not waited:
                    self.echo(f"Waiting for the lock held by {describe_lock(held)}...")
                    waited = True
                time.sleep(min(1.0, max(0.05, self.timeout / 20)))
                continue
            if held is not None and state == "stale":
                self.echo(f"Warning: taking over a stale lock held by {describe_lock(held)}; "
                          "its deadline passed")
                self.pause("takeover")
            owner, run_url = lock_owner()
            value = lease_held(owner, run_url, LOCK_TTL_S)
            if lease_advance(self.locks, self.key, generation, value):
                self.generation, self.value = generation + 1, value
                return
            # someone else moved the lock first: read it again

    def refresh(self) -> None:
        """Push the deadline out (after each step of a long apply); fail if the lock was
        taken over meanwhile (our deadline passed and another run took it)."""
        if not self.value:
            return
        self.pause("renew")
        renewed = lease_renewed(self.value, LOCK_TTL_S)
        if not lease_advance(self.locks, self.key, self.generation, renewed):
            self.value = {}  # not ours any more: nothing to release
            _, current = lease_read(self.locks, self.key)
            holder = ("nobody" if current is None or current.get("free") is True
                      else describe_lock(current))
            raise LockError(f"lost the lock for {self._where()} (now held by {holder}); stopping "
                            "here. Run apply again: it converges from wherever this one stopped")
        self.generation, self.value = self.generation + 1, renewed

    def release(self) -> None:
        """Free the lock if it is still ours (a run that took it over keeps it)."""
        if not self.value:
            return
        self.pause("release")
        owner = str(self.value.get("owner", ""))
        self.value = {}
        if not lease_advance(self.locks, self.key, self.generation, lease_free(owner)):
            self.echo(f"Warning: the lock for {self._where()} had been taken over by another "
                      "run; left to it")


@contextlib.contextmanager
def _progress(title: str) -> Iterator[None]:
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(f"{title}..."):
        yield


def checkpoint(name: str) -> None:
    """Crash-test hook: `HARVEST_KILL_AT=after:volumes` SIGKILLs this process right there, so
    tests can prove that an apply killed at any point converges when run again."""
    if os.environ.get("HARVEST_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def save_state(session: Any, state: StateRecord, lock: Lock | None) -> StateRecord:
    """Renew the lock (proving it is still ours), then write the state record (serial + 1);
    returns what was written. Shared by apply, destroy and rollback."""
    from harvest_iac import modal_backend as mb

    if lock is not None:
        lock.refresh()
    state = state.bumped()
    data = state.to_json().encode()

    async def write(conn: mb.Connection) -> None:
        await mb.write_volume_file(conn, state.environment, STATE_VOLUME, state_path(state.app),
                                   data)

    session.with_connection(write)
    return state


def run_step(title: str, work: Callable[[], None], save: Callable[[], None],
             echo: Callable[[str], None]) -> None:
    """One step of apply (or destroy): its work, then the state record. A spinner on a terminal;
    one line per step otherwise (CI logs). `HARVEST_KILL_AT` points: before:, after:, saved:TITLE."""
    start = time.perf_counter()
    with _progress(title):
        checkpoint(f"before:{title}")
        work()
        checkpoint(f"after:{title}")
        save()
        checkpoint(f"saved:{title}")
    echo(f"{title}: done ({time.perf_counter() - start:.1f}s)")


# -- the walker ------------------------------------------------------------------------------
@dataclass
class Applier:
    """Runs one plan's changes. `state` is rewritten (serial + 1) after every step."""

    session: Any
    prep: Prepared
    plan: Plan
    state: StateRecord
    ops: Any
    echo: Callable[[str], None]
    allow_destroy: frozenset[str] = frozenset()
    lock: Lock | None = None
    _rendered: tuple[Any, Path] | None = None

    @property
    def spec(self) -> Any:
        return self.prep.loaded.spec

    def by_kind(self, *kinds: str, actions: tuple[Action, ...] | None = None) -> list[Change]:
        return [c for c in self.plan.actionable if c.kind in kinds
                and (actions is None or c.action in actions)]

    def save_state(self) -> None:
        self.state = save_state(self.session, self.state, self.lock)

    def step(self, title: str, fn: Callable[[], None]) -> None:
        run_step(title, fn, self.save_state, self.echo)

    def run(self) -> None:
        settings = self.by_kind("settings")
        if settings:
            self.step("settings", lambda: self._settings(settings[0]))
        vol_changes = self.by_kind("volume", actions=(Action.CREATE, Action.IMPORT, Action.UPDATE,
                                                      Action.REPLACE))
        sec_changes = self.by_kind("secret", actions=(Action.CREATE, Action.IMPORT, Action.UPDATE))
        if vol_changes:
            self.step("volumes", lambda: self._volumes(vol_changes))
        if sec_changes:
            self.step("secrets", lambda: self._secrets(sec_changes))
        app_changes = [c for c in self.by_kind("app", *APP_KINDS) if c.action is not Action.FORGET]
        if app_changes and self.prep.app_needed:
            self.step(f"app.{self.spec.app} deploy", self._deploy)
        elif app_changes:
            self.step("images", self._record_app_parts)
        snaps = self.by_kind("snapshot", actions=(Action.CREATE, Action.UPDATE))
        if snaps:
            self.step("snapshots", lambda: self._snapshots(snaps))
        deletes = self.by_kind("volume", "secret", "snapshot", "app", actions=(Action.DELETE,))
        renamed = [c.previous_address for c in sec_changes if c.previous_address]
        if deletes or renamed:
            self.step("deletions", lambda: self._deletes(deletes, renamed))
        forgotten = self.by_kind(*KIND_ORDER, actions=(Action.FORGET,))
        if forgotten:
            self.step("forget", lambda: self._forget(forgotten))

    # -- steps ---------------------------------------------------------------------------
    def _settings(self, change: Change) -> None:
        from harvest_iac import modal_backend as mb

        wanted = {f.path: f.after for f in change.fields}

        async def go(conn: mb.Connection) -> None:
            await mb.update_environment(conn, self.spec.environment, wanted)

        self.session.with_connection(go)
        self.state = self.state.with_resource(change.address, ResourceRecord(
            spec=dict(self.prep.desired[change.address].spec)))

    def _volumes(self, changes: list[Change]) -> None:
        from harvest_iac import modal_backend as mb

        env = self.spec.environment

        async def go(conn: mb.Connection) -> None:
            import asyncio

            async def one(c: Change) -> None:
                if c.previous_address:
                    await mb.rename_volume(conn, env, c.previous_address.split(".", 1)[1], c.name)
                if c.action is Action.REPLACE:
                    await mb.delete_volume(conn, env, c.name)
                if c.action in (Action.CREATE, Action.REPLACE, Action.IMPORT):
                    await mb.create_volume(conn, env, c.name, int(c.after["version"]))  # type: ignore[index]

            await asyncio.gather(*(one(c) for c in changes))
            vols, _ = await mb.read_objects(conn, env, [c.name for c in changes], [])
            for c in changes:
                lv = vols.get(c.name)
                self.state = self.state.with_resource(c.address, ResourceRecord(
                    object_id=lv.object_id if lv else "", spec=dict(self.prep.desired[c.address].spec),
                    created_at=lv.created_at if lv else 0.0))
                if c.previous_address:
                    self.state = self.state.with_resource(c.previous_address, None)

        self.session.with_connection(go)

    def _secrets(self, changes: list[Change]) -> None:
        from harvest_iac import modal_backend as mb

        env = self.spec.environment

        async def go(conn: mb.Connection) -> None:
            import asyncio

            async def one(c: Change) -> None:
                sv = self.prep.secret_values[c.name]
                assert sv.values is not None  # checked before any change
                await mb.put_secret(conn, env, c.name, sv.values)

            await asyncio.gather(*(one(c) for c in changes))
            _, secs = await mb.read_objects(conn, env, [], [c.name for c in changes])
            for c in changes:
                ls = secs.get(c.name)
                assert c.values_hash is not None  # the values were read before any change
                self.state = self.state.with_resource(c.address, ResourceRecord(
                    object_id=ls.object_id if ls else "",
                    spec=dict(self.prep.desired[c.address].spec),
                    values_hash=c.values_hash,
                    created_at=ls.created_at if ls else 0.0))

        self.session.with_connection(go)

    def rendered(self) -> tuple[Any, Path]:
        """The app module rendered from the templates, written under .harvest/build/."""
        from harvest_iac.render import render_app, write_rendered

        if self._rendered is None:
            rendered = render_app(self.spec)
            build_dir = Path(".harvest") / "build" / self.spec.environment
            self._rendered = (rendered, write_rendered(rendered, build_dir).resolve())
        return self._rendered

    def _deploy(self) -> None:
        from harvest_iac import modal_backend as mb
        from harvest_iac.naming import TAG_CODE_HASH, TAG_MANAGED_BY
        _, module_path = self.rendered()
        deployed = self.prep.app_digest  # the code and the local files it ships
        short = deployed.split(":")[-1][:16]
        self.ops.deploy(module_path.resolve(), self.spec.app, tag=f"harvest-{short}")
        env, app = self.spec.environment, self.spec.app

        async def after(conn: mb.Connection) -> tuple[str, int | None]:
            return await mb.app_identity(conn, env, app)

        app_id, version = self.session.with_connection(after)

        async def tag(conn: mb.Connection) -> None:
            await mb.set_app_tags(conn, app_id, {TAG_MANAGED_BY: "harvest", TAG_CODE_HASH: short})

        self.session.with_connection(tag)
        self._record_app_parts()
        st = self.state.with_resource(f"app.{app}", ResourceRecord(object_id=app_id, version=version,
                                                            code_hash=deployed,
                                                            spec={"code_hash": deployed}))
        self.state = st

    def _record_app_parts(self) -> None:
        """Images, crons and sandbox profiles as deployed: recorded as last-applied."""
        st = self.state
        for address, d in self.prep.desired.items():
            if d.kind in APP_KINDS:
                st = st.with_resource(address, ResourceRecord(spec=dict(d.spec)))
        for address in list(st.resources):
            if address.split(".", 1)[0] in APP_KINDS and address not in self.prep.desired:
                st = st.with_resource(address, None)
        self.state = st

    def _snapshots(self, changes: list[Change]) -> None:
        from harvest_iac.diff import SNAPSHOT_RECIPE

        for c in changes:
            rec = self.state.resources.get(c.address)
            spec = dict(self.prep.desired[c.address].spec)
            remake = c.action is Action.CREATE or any(
                f.path in SNAPSHOT_RECIPE or f.path == "age" for f in c.fields) or (
                c.reason is not None and "no longer exists" in c.reason)
            history = tuple(rec.snapshots) if rec else ()
            if remake:
                _, module_path = self.rendered()
                image_id, created_at = self.ops.make_snapshot(module_path, c.name)
                ttl = spec.get("ttl")
                history = history + (SnapshotRecord(image_id, created_at, created_at + ttl if ttl else 0.0),)
            keep = int(spec.get("keep") or 1)
            self._delete_images([s.image_id for s in history[:-keep]])
            self.state = self.state.with_resource(c.address, ResourceRecord(
                spec=spec, snapshots=history[-keep:]))

    def _delete_images(self, image_ids: list[str], published: str | None = None) -> None:
        """Delete snapshot images no longer kept (and a removed snapshot's published name)."""
        from harvest_iac import modal_backend as mb

        if not image_ids and published is None:
            return
        env = self.spec.environment

        async def go(conn: mb.Connection) -> None:
            import asyncio

            await asyncio.gather(*(mb.delete_image(conn, i) for i in image_ids))
            if published is not None:
                await mb.delete_image_name(conn, env, published)

        self.session.with_connection(go)

    def _deletes(self, changes: list[Change], renamed_secrets: list[str]) -> None:
        """The deletions allowed (a snapshot's images and published name too), and the old
        names of renamed secrets (made under their new names in the secrets step, so only now,
        and only the old name, is deleted)."""
        from harvest_iac import modal_backend as mb

        env = self.spec.environment
        modal_deletes = [c for c in changes if c.kind in ("volume", "secret", "app")]
        for c in modal_deletes:
            if (c.address not in self.allow_destroy and not c.destroy_reviewed) or c.blocked:
                raise HarvestError(f"internal: {c.address} reached deletion without permission")
        old_secrets = [a.split(".", 1)[1] for a in renamed_secrets if a in self.state.resources]

        async def go(conn: mb.Connection) -> None:
            import asyncio

            async def one(c: Change) -> None:
                if c.kind == "volume":
                    await mb.delete_volume(conn, env, c.name)
                elif c.kind == "app":
                    await mb.stop_app(conn, env, c.name)
                else:
                    await mb.delete_secret(conn, env, c.name)

            await asyncio.gather(*(one(c) for c in modal_deletes),
                                 *(mb.delete_secret(conn, env, name) for name in old_secrets))

        if modal_deletes or old_secrets:
            self.session.with_connection(go)
        for c in changes:
            rec = self.state.resources.get(c.address)
            if c.kind == "snapshot" and rec is not None:
                self._delete_images([s.image_id for s in rec.snapshots], snapshot_image_name(c.name))
        for address in [*(c.address for c in changes), *renamed_secrets]:
            self.state = self.state.with_resource(address, None)

    def _forget(self, changes: list[Change]) -> None:
        """What harvest stops managing (`removed:` with `destroy: false`): only the record."""
        for c in changes:
            self.state = self.state.with_resource(c.address, None)


# -- the verb --------------------------------------------------------------------------------
def _read_plan_file(path: Path) -> list[Plan]:
    from harvest_iac.planfile import plans_from_json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarvestError(f"{path}: cannot read the plan file ({exc}); make one with "
                           "`harvest plan -o plan.json`") from exc
    return plans_from_json(text, str(path))


def is_plan_file(path: str) -> bool:
    return path.endswith(".json")


def run_apply(paths: tuple[str, ...], opts: ApplyOptions, target_flag: str | None) -> int:
    from harvest_iac.modal_backend import Session
    from harvest_iac.planner import check_inputs, load_prepared, plan_one
    from harvest_iac.present import render_text
    from harvest_iac.targets import resolve_target

    if not opts.auto_approve and not opts.interactive:
        raise HarvestError(
            "apply changes Modal: review the plan and pass --auto-approve (needed when not run "
            "from a terminal, e.g. in CI), or run it in a terminal to confirm")
    saved: list[SavedPlan] | None = None
    if len(paths) == 1 and is_plan_file(paths[0]):
        if opts.reviewed is not None:
            raise HarvestError(
                f"--reviewed compares a plan made now from the YAML with the reviewed one: give "
                f"environment files or folders, not the plan file {paths[0]}")
        saved = [SavedPlan(paths[0], p) for p in _read_plan_file(Path(paths[0]))]
        paths = tuple(s.plan.source for s in saved)
    reviewed = None if opts.reviewed is None else [
        SavedPlan(opts.reviewed, p, reviewed=True) for p in _read_plan_file(Path(opts.reviewed))]
    environ = dict(os.environ)
    preps = load_prepared(paths, environ)
    check_inputs(preps, environ)  # every secret value readable, before any change
    expected: list[SavedPlan | None] = [None] * len(preps)
    if saved is not None:
        preps = _prepared_for(saved, preps)
        expected = list(saved)
    elif reviewed is not None:
        expected = list(_reviewed_for(reviewed, preps))
    choice = resolve_target(target_flag, environ)
    echo: Callable[[str], None] = lambda text: click.echo(text, err=True)
    if choice.notice:
        echo(choice.notice)
    applied: list[Plan] = []
    with Session(choice, Path.cwd()) as session:
        for prep, check in zip(preps, expected, strict=True):
            plan = plan_one(prep, session, target=choice.name, environ=environ)
            if check is not None:
                check.before_lock(plan, prep, environ, echo)
            if not plan.summary.has_changes:
                click.echo(f"{plan.environment}/{plan.app}: No changes. "
                           "Your infrastructure matches the configuration.")
                applied.append(plan)
                continue
            problems = guard_problems(plan, opts.allow_destroy)
            if problems:
                raise HarvestError("apply refused, nothing was changed:\n  "
                                   + "\n  ".join(problems))
            if saved is None and not opts.auto_approve:
                click.echo(render_text([plan], color=sys.stdout.isatty()), nl=False)
                answer = click.prompt("Do you want to perform these actions? Only 'yes' will be "
                                      "accepted", default="", show_default=False)
                if answer.strip() != "yes":
                    raise HarvestError("apply cancelled; nothing was changed")
            applied.append(_apply_one(session, prep, plan, opts, environ, echo, choice.name,
                                      check))
    github.publish(applied, environ, title="harvest apply")
    return 0


@dataclass(frozen=True)
class SavedPlan:
    """One plan of a plan file: apply makes exactly its changes, or none. A saved plan
    (`harvest apply plan.json`) also holds live state to where it was; a reviewed one
    (`--reviewed plan.json`, saved by the pull request's plan job) lets live state move (another
    merge applied meanwhile) as long as apply would still make exactly the reviewed changes."""

    file: str
    plan: Plan
    reviewed: bool = False

    @property
    def label(self) -> str:
        return "the reviewed plan" if self.reviewed else "the saved plan"

    def before_lock(self, fresh: Plan, prep: Prepared, environ: Mapping[str, str],
                    echo: Callable[[str], None]) -> None:
        """The checks made on the plan made before the lock is taken. A reviewed plan has
        nothing to check when there is nothing to apply (its changes are live already: the
        apply job run again, or applied by hand before the merge)."""
        if self.reviewed and not fresh.summary.has_changes:
            if self.plan.actionable:
                echo(f"{self.file}: the reviewed changes to {fresh.environment}/{fresh.app} are "
                     "live already; nothing to apply")
            return
        if not self.reviewed and self.plan.live_fingerprint != fresh.live_fingerprint:
            raise StalePlanError(
                f"live state of environment {fresh.environment!r} moved since the plan was "
                "saved; run `harvest plan -o` again and review it")
        self.check(fresh, prep, environ)

    def check(self, fresh: Plan, prep: Prepared, environ: Mapping[str, str]) -> None:
        """Refuse (StalePlanError, one line) unless `fresh` makes the saved changes, secret
        values included (compared with the hashes the plan file holds)."""
        from harvest_iac.planner import secret_hasher
        from harvest_iac.secrethash import Verdict

        hasher = secret_hasher(environ)

        def values_differ(saved: Change) -> str | None:
            values = prep.secret_values.get(saved.name)
            known = values.values if values is not None else None
            if saved.values_hash is None or known is None:
                return None if saved.values_hash is None and known is None else (
                    f"{self.label} holds no hash of its values")
            check = hasher.check(known, saved.values_hash)
            if check.verdict is Verdict.UNVERIFIABLE:
                return f"its values cannot be compared with {self.label}'s ({check.why})"
            if check.verdict is Verdict.CHANGED:
                return f"its values are not the ones {self.label} would set"
            return None

        differences = plan_differences(self.plan, fresh, values_differ, self.label)
        if not differences:
            return
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        if self.reviewed:
            raise StalePlanError(
                f"{self.file}: {differences[0]}{more}; apply refused, nothing was changed: what "
                "was reviewed is not what apply would do now (did another change land since?); "
                "plan it again in a pull request and review it")
        raise StalePlanError(
            f"{self.file}: {differences[0]}{more}; the plan no longer shows what apply would "
            f"do: run `harvest plan -o {self.file}` again and review it")


def _reviewed_for(reviewed: list[SavedPlan], preps: list[Prepared]) -> Iterator[SavedPlan]:
    """The reviewed plan of each environment applied. One the file does not cover is refused,
    changes or not: a change not reviewed is not applied."""
    by_key = {(r.plan.environment, r.plan.app): r for r in reviewed}
    for prep in preps:
        environment, app = prep.inputs.environment, prep.inputs.app
        found = by_key.get((environment, app))
        if found is None:
            raise StalePlanError(
                f"{reviewed[0].file}: no reviewed plan for environment {environment!r} (app "
                f"{app!r}) of {prep.path}; apply refused, nothing was changed: a change not "
                "reviewed is not applied. Plan that file in the pull request (`harvest plan -o`)")
        yield found


def _prepared_for(saved: list[SavedPlan], preps: list[Prepared]) -> list[Prepared]:
    """The prepared environment of each saved plan, in the plan file's order; the files must
    still describe the same environments, unchanged."""
    by_key = {(p.inputs.environment, p.inputs.app): p for p in preps}
    out = []
    for s in saved:
        prep = by_key.pop((s.plan.environment, s.plan.app), None)
        if prep is None:
            raise StalePlanError(
                f"{s.file}: {s.plan.source} no longer describes environment {s.plan.environment!r} "
                f"(app {s.plan.app!r}); run `harvest plan -o {s.file}` again")
        if s.plan.spec_digest != prep.spec_digest:
            raise StalePlanError(
                f"{s.plan.source} changed since the plan was saved; run `harvest plan -o` again")
        out.append(prep)
    if by_key:
        environment, app = next(iter(by_key))
        raise StalePlanError(
            f"{saved[0].file}: the files now also describe environment {environment!r} (app "
            f"{app!r}), which the plan does not cover; run `harvest plan -o {saved[0].file}` again")
    return out


def _apply_one(session: Any, prep: Prepared, plan: Plan, opts: ApplyOptions,
               environ: Mapping[str, str], echo: Callable[[str], None], target: str,
               saved: SavedPlan | None) -> Plan:
    """Apply one environment under its lock; returns the plan applied (made under the lock)."""
    from datetime import datetime, timezone

    from harvest_iac import modal_backend as mb
    from harvest_iac.modal_backend import ModalOps, ReadRequest
    from harvest_iac.planner import diff_input, secret_hasher

    prep = prep.full(environ)  # the validated spec: the app is rendered from it
    if prep.spec_digest != plan.spec_digest:
        raise StalePlanError(f"{prep.path} changed while harvest was running; run apply again")
    spec = prep.loaded.spec

    async def mkenv(conn: mb.Connection) -> None:
        await mb.create_environment(conn, spec.environment)

    if any(c.kind == "environment" for c in plan.actionable):
        echo(f"environment.{spec.environment}: creating")
        session.with_connection(mkenv)
    ops = ModalOps(spec.environment)
    lock = Lock(ops, spec.app, timeout=opts.lock_timeout, echo=echo)
    lock.acquire()
    with _released(lock, echo):
        live = session.read(ReadRequest(environment=spec.environment, app=spec.app,
                                        function_names=prep.inputs.function_tags))
        fresh = compare(diff_input(prep, target=target, environ=environ,
                                   now=datetime.now(timezone.utc)), live)
        if saved is not None:
            saved.check(fresh, prep, environ)
        elif _change_set(fresh) != _change_set(plan):
            if not opts.auto_approve:
                raise StalePlanError("live state changed since the plan you approved; run apply "
                                     "again to review the new plan")
            echo("Live state changed since the plan was made; applying the fresh plan.")
            problems = guard_problems(fresh, opts.allow_destroy)
            if problems:
                raise HarvestError("apply refused, nothing was changed:\n  " + "\n  ".join(problems))
        known = {n: sv.values for n, sv in prep.secret_values.items() if sv.values is not None}
        state = (live.state or StateRecord.new(spec.environment, spec.app)).with_current_hashes(
            known, secret_hasher(environ))
        applier = Applier(session=session, prep=prep, plan=fresh, state=state, ops=ops, echo=echo,
                          allow_destroy=opts.allow_destroy, lock=lock)
        applier.run()
    s = fresh.summary
    click.echo(f"Apply complete! Resources: {s.imports} imported, {s.add} added, "
               f"{s.change} changed, {s.destroy} destroyed.")
    return fresh


@contextlib.contextmanager
def _released(lock: Lock, echo: Callable[[str], None]) -> Iterator[None]:
    """Release the lock after the block. When the block failed, its error is the one
    reported: a failed release is only a warning line then."""
    try:
        yield
    except BaseException:
        try:
            lock.release()
        except HarvestError as exc:
            echo(f"Warning: could not release the lock ({exc}); free it with `harvest unlock`")
        raise
    lock.release()


def _change_set(plan: Plan) -> set[tuple[str, str]]:
    """What a plan would do, ignoring the environment's own creation (done before the lock)."""
    return {(c.address, c.action.value) for c in plan.actionable if c.kind != "environment"}


def run_unlock(paths: tuple[str, ...], target_flag: str | None, *, yes: bool,
               interactive: bool) -> int:
    """Show each environment's lock and free it. Like `terraform force-unlock`, it asks
    first, live lock or stale; off a terminal it frees only with --yes. The lock is freed
    only as it was shown (if its holder renewed it meanwhile, nothing is freed)."""
    from harvest_iac.modal_backend import ModalOps, Session
    from harvest_iac.targets import resolve_target

    loaded = load_environments(paths)
    choice = resolve_target(target_flag)
    with Session(choice, Path.cwd()):
        for item in loaded:
            where = f"{item.spec.environment}/{item.spec.app}"
            locks = ModalOps(item.spec.environment).lock_dict(create=False)
            generation, held = lease_read(locks, item.spec.app)
            state = lease_state(held, time.time())
            if held is None or state == "free":
                click.echo(f"{where}: not locked")
                continue
            deadline = _utc(held.get("deadline", 0))
            shown = (f"{where}: the lock is {state}: held by {describe_lock(held)}, deadline "
                     f"{deadline}{' (passed)' if state == 'stale' else ''}")
            if not yes and not interactive:
                raise LockError(f"{shown}; not freed: pass --yes to free it (only if that run "
                                "is gone)")
            click.echo(shown)
            if not yes and not click.confirm("Free this lock? Only do this if that run is gone"):
                raise HarvestError("unlock cancelled")
            owner, _ = lock_owner()
            if not lease_advance(locks, item.spec.app, generation,
                                 lease_free(f"harvest unlock by {owner}")):
                raise LockError(f"{where}: the lock changed while unlocking; nothing was freed. "
                                "Run `harvest unlock` again to see who holds it now")
            click.echo("Lock freed.")
    return 0
