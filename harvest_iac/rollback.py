"""`harvest rollback`: serve an earlier deployment of the app again, through Modal's AppRollback.

Without `--to`, the target is the previous harvest deployment: the newest earlier version that
harvest deployed (its deployment tag is `harvest-<code hash>`) with other code than the one
serving now. The rollback is recorded in the state record, first as under way, then with the
version it made, so a run killed in the middle and started again finishes it instead of rolling
back twice, and a second run changes nothing. `harvest plan` then shows the YAML's difference
from what runs as drift, until the YAML is reverted too (or apply deploys the YAML again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from harvest_iac.errors import HarvestError, StalePlanError, printable
from harvest_iac.live import LiveDeployment
from harvest_iac.state import ResourceRecord, RollbackRecord, StateRecord

HARVEST_TAG = "harvest-"


@dataclass(frozen=True)
class Decision:
    """What rollback does: nothing (`note` says why), AppRollback to `target`, or only record a
    rollback made by a run that was killed before it recorded it (`made`)."""

    current: LiveDeployment
    target: LiveDeployment | None = None
    made: LiveDeployment | None = None
    note: str = ""


def decide(history: Sequence[LiveDeployment], recorded: RollbackRecord | None, to: int | None) -> Decision:
    """Pure: the decision for an app's `history` (newest first) and its last recorded rollback."""
    current = max(history, key=lambda d: d.version)
    if (recorded is not None and recorded.version is None and current.version > recorded.from_version
            and current.rollback_version == recorded.to_version and to in (None, recorded.to_version)):
        return Decision(current, made=current)
    if to is not None:
        target = next((d for d in history if d.version == to), None)
        if target is None:
            versions = ", ".join(f"v{d.version}" for d in history)
            raise HarvestError(f"the app has no version {to} (versions: {versions})")
        if current.serves == target.serves:
            return Decision(current, note=f"version {current.version} already serves version {target.serves}")
        return Decision(current, target=target)
    if recorded is not None and recorded.version == current.version:
        return Decision(current, note=f"already rolled back to version {recorded.to_version} (serving as "
                                      f"version {current.version}); pass --to VERSION to go further back")
    earlier = [d for d in history if d.version < current.version and d.tag.startswith(HARVEST_TAG)
               and d.tag != current.tag]
    if not earlier:
        raise HarvestError(f"no earlier harvest deployment to roll back to (version {current.version} is "
                           "serving; earlier versions have the same code or were not deployed by harvest); "
                           "name one with --to VERSION")
    return Decision(current, target=max(earlier, key=lambda d: d.version))


def history_lines(history: Sequence[LiveDeployment], decision: Decision, limit: int = 10) -> list[str]:
    """The versions involved, newest first: which one serves, which one it goes back to."""
    marks = {decision.current.version: "serving now"}
    if decision.target is not None:
        marks[decision.target.version] = "<- rolls back to this one"
    lines = []
    for d in list(history)[:limit]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d.deployed_at)) if d.deployed_at else ""
        serves = f" (serves v{d.rollback_version})" if d.rollback_version else ""
        mark = f"  {marks[d.version]}" if d.version in marks else ""
        lines.append(printable(f"  v{d.version:<4} {when:<20} {d.tag or '(no tag)'}{serves}{mark}"))
    if len(history) > limit:
        lines.append(f"  ... {len(history) - limit} older versions")
    return lines


def run_rollback(paths: tuple[str, ...], *, to: int | None, auto_approve: bool, interactive: bool,
                 target_flag: str | None) -> int:
    from harvest_iac.apply import Lock
    from harvest_iac.modal_backend import ModalOps, Session
    from harvest_iac.planner import load_one_environment
    from harvest_iac.targets import resolve_target

    if not auto_approve and not interactive:
        raise HarvestError("rollback changes what runs in Modal: pass --auto-approve (needed when not run "
                           "from a terminal, e.g. in CI), or run it in a terminal to confirm")
    spec = load_one_environment(paths, "rollback").spec
    choice = resolve_target(target_flag)
    echo: Callable[[str], None] = lambda text: click.echo(text, err=True)
    if choice.notice:
        echo(choice.notice)
    with Session(choice, Path.cwd()) as session:
        reader = _Reader(session, spec.environment, spec.app)
        app_id, history, state = reader.read()
        decision = decide(history, _recorded(state, spec.app), to)
        click.echo(printable(f"app.{spec.app} in environment {spec.environment!r}:"))
        click.echo("\n".join(history_lines(history, decision)))
        if decision.note:
            click.echo(f"Nothing to roll back: {decision.note}.")
            return 0
        if decision.target is not None and not auto_approve:
            question = f"Roll app.{spec.app} back from version {decision.current.version} to version " \
                       f"{decision.target.version}? Only 'yes' will be accepted"
            if click.prompt(question, default="", show_default=False).strip() != "yes":
                raise HarvestError("rollback cancelled; nothing was changed")
        ops = ModalOps(spec.environment)
        lock = Lock(ops, spec.app, timeout=0.0, echo=echo)
        lock.acquire()
        try:
            app_id, history, state = reader.read()
            fresh = decide(history, _recorded(state, spec.app), to)
            if (fresh.target, fresh.made) != (decision.target, decision.made):
                raise StalePlanError("the app's versions changed meanwhile; run rollback again to review")
            made = _Rollback(session, lock, state, app_id, echo).run(fresh)
        finally:
            lock.release()
    serves = made.rollback_version or made.version
    click.echo(f"Rollback complete! Version {made.version} of app {spec.app} serves version {serves}'s "
               "functions. `harvest plan` shows how the YAML differs from it, as drift, until the YAML is "
               "reverted too.")
    return 0


def _recorded(state: StateRecord, app: str) -> RollbackRecord | None:
    return state.resources[f"app.{app}"].rollback


@dataclass(frozen=True)
class _Reader:
    session: Any
    environment: str
    app: str

    def read(self) -> tuple[str, list[LiveDeployment], StateRecord]:
        """The app's id and history, and harvest's record of it; an error when either is missing."""
        from harvest_iac import modal_backend as mb

        async def go(conn: mb.Connection) -> tuple[Any, StateRecord | None]:
            import asyncio

            return await asyncio.gather(mb.app_history(conn, self.environment, self.app),
                                        mb.read_state(conn, self.environment, self.app))

        found, state = self.session.with_connection(go)
        if state is None or f"app.{self.app}" not in state.resources:
            raise HarvestError(f"harvest has not deployed app {self.app!r} in environment {self.environment!r} "
                               "(no record of it): nothing of its own to roll back")
        if found is None or not found[1]:
            raise HarvestError(f"app {self.app!r} is not deployed in environment {self.environment!r}: "
                               "nothing to roll back")
        return found[0], found[1], state


@dataclass
class _Rollback:
    session: Any
    lock: Any
    state: StateRecord
    app_id: str
    echo: Callable[[str], None]

    def run(self, decision: Decision) -> LiveDeployment:
        from harvest_iac.apply import run_step, save_state

        made: list[LiveDeployment] = []

        def work() -> None:
            if decision.target is not None:
                self._record(RollbackRecord(decision.current.version, decision.target.version, at=time.time()))
                self.state = save_state(self.session, self.state, self.lock)
                self.session.with_connection(self._rollback(decision.target))
            newest = self._newest()
            made.append(newest)
            self._record(RollbackRecord(decision.current.version, newest.rollback_version, newest.version,
                                        time.time()))

        run_step(f"app.{self.state.app} rollback", work,
                 lambda: setattr(self, "state", save_state(self.session, self.state, self.lock)), self.echo)
        return made[0]

    def _record(self, rollback: RollbackRecord) -> None:
        address = f"app.{self.state.app}"
        rec: ResourceRecord = self.state.resources[address]
        self.state = self.state.with_resource(address, replace(rec, rollback=rollback))

    def _rollback(self, target: LiveDeployment) -> Any:
        from harvest_iac import modal_backend as mb
        from harvest_iac.naming import TAG_CODE_HASH, TAG_MANAGED_BY

        async def go(conn: mb.Connection) -> None:
            await mb.rollback_app(conn, self.app_id, target.version)
            if target.tag.startswith(HARVEST_TAG):
                await mb.set_app_tags(conn, self.app_id, {TAG_MANAGED_BY: "harvest",
                                                          TAG_CODE_HASH: target.tag[len(HARVEST_TAG):]})

        return go

    def _newest(self) -> LiveDeployment:
        from harvest_iac import modal_backend as mb

        async def go(conn: mb.Connection) -> tuple[str, list[LiveDeployment]] | None:
            return await mb.app_history(conn, self.state.environment, self.state.app)

        found: tuple[str, list[LiveDeployment]] | None = self.session.with_connection(go)
        if found is None or not found[1]:
            raise HarvestError(f"app {self.state.app!r} vanished during the rollback; run rollback again")
        return max(found[1], key=lambda d: d.version)
