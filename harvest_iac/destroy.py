"""`harvest destroy`: delete everything harvest manages in one environment, in the reverse order
of apply: stop the app, delete the snapshot images, the secrets, the unprotected volumes, then
the state record. Never a protected volume, never an object harvest does not manage (only what
the state record lists is touched). Under the lock, the record rewritten after every step, so a
run killed at any point and started again finishes the job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harvest_iac.errors import HarvestError, printable
from harvest_iac.lifecycle import APP_PARTS
from harvest_iac.state import StateRecord


@dataclass(frozen=True)
class Teardown:
    """What destroy does, by step (addresses), and the protected volumes it keeps."""

    app: tuple[str, ...]
    snapshots: tuple[str, ...]
    secrets: tuple[str, ...]
    volumes: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.app or self.snapshots or self.secrets or self.volumes)


def teardown(state: StateRecord, protected_in_file: Collection[str]) -> Teardown:
    """What destroying `state`'s environment deletes. A volume is kept when it was applied as
    protected or the file protects it now."""
    def of(*kinds: str) -> tuple[str, ...]:
        return tuple(sorted(a for a in state.resources if a.split(".", 1)[0] in kinds))

    def protected(address: str) -> bool:
        return bool(state.resources[address].spec.get("protect", True)) or address in protected_in_file

    volumes = of("volume")
    return Teardown(app=of("app", *APP_PARTS), snapshots=of("snapshot"), secrets=of("secret"),
                    volumes=tuple(a for a in volumes if not protected(a)),
                    kept=tuple(a for a in volumes if protected(a)))


def describe(t: Teardown, state: StateRecord) -> list[str]:
    """The lines shown before asking (and in CI logs)."""
    lines = []
    apps = [a for a in t.app if a.startswith("app.")]
    parts = [a for a in t.app if not a.startswith("app.")]
    with_parts = f" (with {', '.join(parts)})" if parts else ""
    if apps:
        lines.append(f"  - {apps[0]} will be stopped{with_parts}")
    elif parts:
        lines.append(f"  - {', '.join(parts)}: records dropped (no app is deployed)")
    for a in t.snapshots:
        count = len(state.resources[a].snapshots)
        lines.append(f"  - {a}: {count} image{'s' if count != 1 else ''} will be deleted")
    lines += [f"  - {a} will be deleted" for a in t.secrets]
    lines += [f"  - {a} will be deleted (its files are lost)" for a in t.volumes]
    lines += [f"  = {a} is kept: it is protected" for a in t.kept]
    lines.append(f"  then harvest's state record of app {state.app} is deleted")
    return [printable(line) for line in lines]


def kept_line(t: Teardown) -> str:
    return printable(f"Kept (protected): {', '.join(t.kept)}. To delete one, set `protect: false` for it, "
                     "apply, then destroy again.")


def run_destroy(paths: tuple[str, ...], *, auto_approve: bool, interactive: bool,
                target_flag: str | None) -> int:
    from harvest_iac.apply import Lock
    from harvest_iac.modal_backend import ModalOps, Session
    from harvest_iac.planner import load_one_environment
    from harvest_iac.targets import resolve_target

    if not auto_approve and not interactive:
        raise HarvestError("destroy deletes what harvest manages: pass --auto-approve (needed when not "
                           "run from a terminal, e.g. in CI), or run it in a terminal to confirm")
    loaded = load_one_environment(paths, "destroy")
    spec = loaded.spec
    protected = {f"volume.{n}" for n, v in spec.volumes.items() if v.protect}
    choice = resolve_target(target_flag)
    echo: Callable[[str], None] = lambda text: click.echo(text, err=True)
    if choice.notice:
        echo(choice.notice)
    with Session(choice, Path.cwd()) as session:
        state = session.read_state(spec.environment, spec.app)
        if state is None:
            click.echo(f"{spec.environment}/{spec.app}: nothing to destroy (harvest manages nothing there).")
            return 0
        plan = teardown(state, protected)
        click.echo(printable(f"harvest destroy for environment \"{spec.environment}\" (app \"{spec.app}\") "
                             f"from {loaded.path}, target {choice.name}:"))
        click.echo("\n".join(describe(plan, state)))
        if not auto_approve:
            answer = click.prompt(f"Type the environment's name ({spec.environment}) to destroy it",
                                  default="", show_default=False)
            if answer.strip() != spec.environment:
                raise HarvestError("destroy cancelled; nothing was changed")
        ops = ModalOps(spec.environment)
        lock = Lock(ops, spec.app, timeout=0.0, echo=echo)
        lock.acquire()
        try:
            state = session.read_state(spec.environment, spec.app)
            if state is not None:
                plan = teardown(state, protected)
                _Destroyer(session, lock, state, echo).run(plan)
        finally:
            lock.release()
    click.echo(f"Destroy complete! {spec.environment}/{spec.app}: harvest manages nothing there now.")
    if plan.kept:
        click.echo(kept_line(plan))
    return 0


@dataclass
class _Destroyer:
    session: Any
    lock: Any
    state: StateRecord
    echo: Callable[[str], None]

    def run(self, t: Teardown) -> None:
        from harvest_iac.apply import run_step

        env, app = self.state.environment, self.state.app
        steps: list[tuple[str, tuple[str, ...], Callable[[Any], Any]]] = [
            (f"app.{app} stop", t.app, lambda conn: self._stop(conn, t.app)),
            ("snapshots", t.snapshots, lambda conn: self._snapshots(conn, t.snapshots)),
            ("secrets", t.secrets, lambda conn: self._each(conn, t.secrets, "secret")),
            ("volumes", t.volumes, lambda conn: self._each(conn, t.volumes, "volume")),
        ]
        for title, addresses, work in steps:
            if addresses:
                run_step(title, functools.partial(self._step, addresses, work), self._save, self.echo)

        async def forget(conn: Any) -> None:
            from harvest_iac import modal_backend as mb

            await mb.delete_state_record(conn, env, app)

        run_step("state record", lambda: self.session.with_connection(forget), lambda: None, self.echo)

    def _step(self, addresses: tuple[str, ...], work: Callable[[Any], Any]) -> None:
        self.session.with_connection(work)
        for address in addresses:
            self.state = self.state.with_resource(address, None)

    def _save(self) -> None:
        from harvest_iac.apply import save_state

        self.state = save_state(self.session, self.state, self.lock)

    async def _stop(self, conn: Any, addresses: tuple[str, ...]) -> None:
        from harvest_iac import modal_backend as mb

        for address in addresses:
            if address.startswith("app."):
                await mb.stop_app(conn, self.state.environment, address.split(".", 1)[1])

    async def _snapshots(self, conn: Any, addresses: tuple[str, ...]) -> None:
        import asyncio

        from harvest_iac import modal_backend as mb
        from harvest_iac.naming import snapshot_image_name

        images = [s.image_id for a in addresses for s in self.state.resources[a].snapshots]
        names = [snapshot_image_name(a.split(".", 1)[1]) for a in addresses]
        await asyncio.gather(*(mb.delete_image(conn, i) for i in images),
                             *(mb.delete_image_name(conn, self.state.environment, n) for n in names))

    async def _each(self, conn: Any, addresses: tuple[str, ...], kind: str) -> None:
        import asyncio

        from harvest_iac import modal_backend as mb

        delete = mb.delete_secret if kind == "secret" else mb.delete_volume
        await asyncio.gather(*(delete(conn, self.state.environment, a.split(".", 1)[1]) for a in addresses))
