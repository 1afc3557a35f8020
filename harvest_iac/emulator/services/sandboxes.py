"""Sandboxes of the local Modal: the `Sandbox*V2` control-plane RPCs and AuthTokenGet.

A sandbox is a container (`runtime.containers.Container`) whose root folder is
`<data dir>/sandboxes/<id>/root`, started through the emulator's launcher (bubblewrap when it
works here: isolated; else host processes), and the processes its agent runs in it: its
entrypoint, if it has one, and the commands exec'd into it through the task command router
(`sandbox_router.SandboxRouter`, served on the same port). The root starts with its image's
files. Each volume is copied into `<data dir>/sandboxes/<id>/volumes/<n>` (mounted at its path
in an isolated container, inside the root otherwise) and what the sandbox changed there is
committed back when it ends. Secret values reach the processes' environment only; they are
held in memory while the sandbox runs and are never stored with the sandbox or logged.

A sandbox's rows outlive the emulator, its processes do not: sandboxes still running when
the emulator stopped are reported terminated.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import fcntl
import functools
import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.auth import AUTH, ROUTER
from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.runtime.containers import Container, ContainerError
from harvest_iac.emulator.runtime.fs_tools import resolve_in_root
from harvest_iac.emulator.runtime.function_exec import FunctionExec
from harvest_iac.emulator.runtime.launcher import ContainerSpec, Mount
from harvest_iac.emulator.runtime.processes import Proc
from harvest_iac.emulator.services.limits import check_can_start
from harvest_iac.emulator.services.sandbox_router import SandboxRouter
from harvest_iac.emulator.services.sandbox_volumes import VolumeLink, commit, copy_in, read_links, scan
from harvest_iac.emulator.store import dumps, new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, app_id TEXT NOT NULL, name TEXT,
    task_id TEXT NOT NULL UNIQUE, image_id TEXT NOT NULL DEFAULT '', definition BLOB NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, finished_at REAL,
    status INTEGER NOT NULL DEFAULT 0, exitcode INTEGER NOT NULL DEFAULT 0,
    exception TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sandboxes_by_app ON sandboxes (app_id, created_at);
CREATE INDEX IF NOT EXISTS sandboxes_by_env ON sandboxes (environment_id, created_at);
"""

log = logging.getLogger("harvest.emulator")
GS = api_pb2.GenericResult
RUNNING = GS.GENERIC_STATUS_UNSPECIFIED
LIST_PAGE = 100
LONG_POLL_MAX_S = 50.0
# Finished sandboxes whose output and exec state stay readable; older ones are forgotten
# (their rows, results and directories stay).
KEEP_FINISHED = 200


# -- what other services read: running sandboxes and metered usage -------------------------
@dataclass(frozen=True)
class Metered:
    """Seconds one sandbox ran within a window, and the resources it asked for."""

    seconds: float
    cpu: float | None
    memory_mib: int | None
    gpu: str | None


def running_sandboxes(store: Any, env_id: str) -> int:
    """How many sandboxes of an environment are running."""
    row = store.one("SELECT COUNT(*) AS n FROM sandboxes WHERE environment_id = ? AND status = ?",
                    env_id, RUNNING)
    return int(row["n"])


def sandbox_usage(store: Any, env_id: str, start: float, end: float) -> list[Metered]:
    """Each sandbox's running time within [start, end) (a running one up to now), with its
    requested cpu, memory and GPU."""
    now = time.time()
    rows = store.all(
        "SELECT definition, created_at, finished_at FROM sandboxes WHERE environment_id = ? "
        "AND created_at < ? AND (finished_at IS NULL OR finished_at > ?)", env_id, end, start)
    out = []
    for row in rows:
        seconds = min(row["finished_at"] or now, end) - max(row["created_at"], start)
        res = api_pb2.Sandbox.FromString(row["definition"]).resources
        gpu = f"{res.gpu_config.gpu_type}:{res.gpu_config.count}" if res.gpu_config.count else None
        out.append(Metered(max(seconds, 0.0), res.milli_cpu / 1000 if res.milli_cpu else None,
                           res.memory_mb or None, gpu))
    return out


# -- runtime state of one sandbox -----------------------------------------------------------
@dataclass
class LiveSandbox:
    """In-memory state of a sandbox started by this emulator process."""

    sandbox_id: str
    task_id: str
    environment_id: str
    root: Path
    workdir: str
    env: dict[str, str]
    image_id: str = ""
    container: Container | None = None
    entry: Proc | None = None
    execs: dict[str, Proc] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: api_pb2.GenericResult | None = None
    last_activity: float = field(default_factory=time.monotonic)
    supervisor: asyncio.Task[None] | None = None
    snapshots: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, Path] = field(default_factory=dict)  # image mount point -> stash
    ready_at: float = 0.0
    volumes: list[VolumeLink] = field(default_factory=list)
    volume_dirs: dict[str, Path] = field(default_factory=dict)  # mount path -> its copy
    ending: bool = False

    def procs(self) -> list[Proc]:
        return ([self.entry] if self.entry else []) + list(self.execs.values())

    def kill_all(self) -> None:
        if self.container is not None:
            self.container.kill_now()


def _new_sandbox_id() -> str:
    # Not the 22-character shape of V1 ids, so the client keeps using the V2 RPCs.
    return new_id("sb") + "v2"


def _new_task_id() -> str:
    return new_id("ta") + "V"  # the client's marker of a V2 sandbox task


def _inside(root: Path, path: str) -> Path:
    """`path` (absolute, as the sandbox sees it) under the sandbox root; never outside it."""
    return resolve_in_root(root, path)


def _network(d: api_pb2.Sandbox) -> bool:
    """Whether the sandbox has a network: not with `block_network=True`, nor with an
    allowlist (which the local Modal cannot enforce, so it blocks everything)."""
    kind = d.network_access.network_access_type if d.HasField("network_access") else 0
    blocked = (api_pb2.NetworkAccess.BLOCKED, api_pb2.NetworkAccess.ALLOWLIST)
    return not d.block_network and kind not in blocked


async def _settle(procs: list[Proc], seconds: float = 5.0) -> None:
    """Wait (briefly) for killed processes to be gone, so their last writes are on disk."""
    waits = [asyncio.ensure_future(p.exited.wait()) for p in procs if p.running]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=seconds)
        for w in pending:
            w.cancel()


def _kill_everything(ref: weakref.ref[SandboxService]) -> None:
    svc = ref()
    if svc is not None:
        svc.kill_all_processes()


class SandboxService(SandboxRouter, Service):
    """Sandboxes: create, wait, terminate, list, from_name, tags; the router is mixed in."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        self.live: dict[str, LiveSandbox] = {}
        self.by_task: dict[str, str] = {}
        self.function_execs: dict[str, FunctionExec] = {}  # task id -> `modal container exec`
        self._finished: collections.deque[str] = collections.deque()
        self.sandbox_dir = emu.data_dir / "sandboxes"
        self.store.add_schema(SCHEMA)
        if self._sole_runner():
            self._report_orphans()
            self._clear_old_directories()
        emu.environment_delete_hooks.append(self._drop_environment)
        atexit.register(_kill_everything, weakref.ref(self))

    # -- lifecycle helpers -------------------------------------------------------------
    def _sole_runner(self) -> bool:
        """Take this data directory's sandbox lock (held while this process lives); False
        when another emulator process runs sandboxes here, whose state must then be left be."""
        self.emu.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.emu.data_dir / "sandboxes.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _report_orphans(self) -> None:
        """Sandboxes left running by an earlier emulator process have no processes now."""
        with self.store.tx():
            self.store.run(
                "UPDATE sandboxes SET status = ?, exception = ?, finished_at = ? WHERE status = ?",
                GS.GENERIC_STATUS_TERMINATED, "The local Modal was restarted", time.time(), RUNNING,
            )

    def _clear_old_directories(self) -> None:
        """No sandbox of an earlier emulator process runs any more: drop their directories
        (in the background; snapshots live elsewhere)."""
        old = [p for p in self.emu.data_dir.glob("sandboxes.old-*") if p.is_dir()]
        if self.sandbox_dir.is_dir():
            moved = self.sandbox_dir.with_name(f"sandboxes.old-{uuid.uuid4().hex}")
            self.sandbox_dir.rename(moved)
            old.append(moved)
        if old:
            threading.Thread(
                target=lambda: [shutil.rmtree(p, ignore_errors=True) for p in old],
                name="harvest-sandbox-cleanup", daemon=True,
            ).start()

    def kill_all_processes(self) -> None:
        """SIGKILL every process of every sandbox (emulator shutdown)."""
        for live in self.live.values():
            live.kill_all()

    def _drop_environment(self, env_id: str) -> None:
        rows = self.store.all("SELECT id FROM sandboxes WHERE environment_id = ?", env_id)
        for row in rows:
            live = self.live.pop(str(row["id"]), None)
            if live is not None:
                self.by_task.pop(live.task_id, None)
                live.kill_all()
                if live.supervisor is not None:
                    live.supervisor.cancel()
                live.done.set()
            shutil.rmtree(self.sandbox_dir / str(row["id"]), ignore_errors=True)
        self.store.run("DELETE FROM sandboxes WHERE environment_id = ?", env_id)

    def _app_environment(self, app_id: str) -> str:
        from harvest_iac.emulator.services.apps import app_row

        return str(app_row(self.emu, app_id)["env_id"])

    def _app_by_name(self, env_id: str, app_name: str) -> str | None:
        from harvest_iac.emulator.services.apps import deployed_app

        row = deployed_app(self.emu, env_id, app_name)
        return None if row is None else str(row["id"])

    def _row(self, sandbox_id: str) -> sqlite3.Row:
        row = self.store.one("SELECT * FROM sandboxes WHERE id = ?", sandbox_id)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox '{sandbox_id}' not found")
        return row

    @staticmethod
    def _result(row: sqlite3.Row) -> api_pb2.GenericResult | None:
        if row["status"] == RUNNING:
            return None
        return api_pb2.GenericResult(
            status=row["status"], exitcode=row["exitcode"], exception=row["exception"]
        )

    def _metadata(self, row: sqlite3.Row) -> api_pb2.SandboxHandleMetadata:
        meta = api_pb2.SandboxHandleMetadata(app_id=row["app_id"])
        result = self._result(row)
        if result is not None:
            meta.result.CopyFrom(result)
        return meta

    def _secret_env(self, sources: Any, secret_ids: Any) -> dict[str, str]:
        from harvest_iac.emulator.services.secrets import secret_values_or_404

        env: dict[str, str] = {}
        seen: set[str] = set()
        for source in sources:
            if source.WhichOneof("source") == "secret_id":
                seen.add(source.secret_id)
                env.update(secret_values_or_404(self.store, source.secret_id))
            elif source.WhichOneof("source") == "env":
                env.update(source.env.contents)
        for secret_id in secret_ids:
            if secret_id not in seen:
                env.update(secret_values_or_404(self.store, secret_id))
        return env

    def _image_workdir(self, image_id: str) -> str:
        row = self.store.one("SELECT workdir FROM images WHERE id = ?", image_id) if image_id else None
        return str(row["workdir"]) if row is not None and row["workdir"] else "/"

    # -- AuthTokenGet ------------------------------------------------------------------------
    def AuthTokenGet(self, req: api_pb2.AuthTokenGetRequest, ctx: Ctx) -> api_pb2.AuthTokenGetResponse:
        """The token the client sends as `x-modal-auth-token`, good only beside its own credentials."""
        return api_pb2.AuthTokenGetResponse(token=self.emu.authority.issue(AUTH, ctx.caller.subject))

    # -- create ------------------------------------------------------------------------------
    async def SandboxCreateV2(
        self, req: api_pb2.SandboxCreateV2Request, ctx: Ctx
    ) -> api_pb2.SandboxCreateV2Response:
        key = ctx.metadata.get("x-idempotency-key")
        with self.store.tx():
            cached = self.store.cached_response(ctx.method, key) if key else None
            if cached is not None:
                self.emu.stats.idempotent_replays += 1
                return api_pb2.SandboxCreateV2Response.FromString(cached)
            live, resp = self._insert_sandbox(req)
            if key:
                self.store.cache_response(ctx.method, key, resp.SerializeToString())
        await self._start(live, req.definition)
        return resp

    def _insert_sandbox(
        self, req: api_pb2.SandboxCreateV2Request
    ) -> tuple[LiveSandbox, api_pb2.SandboxCreateV2Response]:
        d = req.definition
        env_id = self._app_environment(req.app_id)
        if d.name and self.store.one(
            "SELECT 1 FROM sandboxes WHERE app_id = ? AND name = ? AND status = ?",
            req.app_id, d.name, RUNNING,
        ):
            raise GRPCError(
                Status.ALREADY_EXISTS, f"A sandbox named '{d.name}' is already running in this app"
            )
        check_can_start(self.emu, env_id, sandbox=True)
        env = self._secret_env(req.secret_sources, d.secret_ids)
        sandbox_id, task_id = _new_sandbox_id(), _new_task_id()
        root = self.sandbox_dir / sandbox_id / "root"
        workdir = d.workdir if d.HasField("workdir") and d.workdir else self._image_workdir(d.image_id)
        stored = api_pb2.Sandbox()
        stored.CopyFrom(d)
        stored.ClearField("environment_variables")  # values stay out of the database
        self.store.run(
            "INSERT INTO sandboxes (id, environment_id, app_id, name, task_id, image_id,"
            " definition, tags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sandbox_id, env_id, req.app_id, d.name or None, task_id, d.image_id,
            stored.SerializeToString(), dumps({t.tag_name: t.tag_value for t in req.tags}),
            time.time(),
        )
        live = LiveSandbox(sandbox_id, task_id, env_id, root, workdir, env, image_id=d.image_id)
        live.volumes = read_links(self.store, d.volume_mounts)
        self.live[sandbox_id] = live
        self.by_task[task_id] = sandbox_id
        resp = api_pb2.SandboxCreateV2Response(
            sandbox_id=sandbox_id,
            task_id=task_id,
            metadata=api_pb2.SandboxHandleMetadata(app_id=req.app_id),
            command_router_access=self.router_access(task_id),
        )
        return live, resp

    def router_access(self, task_id: str) -> api_pb2.CommandRouterAccess:
        """Where and how to reach the task command router: this server, with a JWT."""
        jwt = self.emu.authority.issue(ROUTER, task_id)
        return api_pb2.CommandRouterAccess(url=self.emu.url, jwt=jwt)

    async def _start(self, live: LiveSandbox, d: api_pb2.Sandbox) -> None:
        try:
            live.container = Container(self.emu.launcher, await asyncio.to_thread(self._spec, live, d))
            await live.container.start()
            if d.entrypoint_args:
                live.entry = Proc(
                    live.container, d.entrypoint_args, cwd=live.workdir, env=self.process_env(live),
                    merge_stderr=d.HasField("pty_info"),
                )
                await live.entry.start()
        except (OSError, ContainerError) as exc:
            self.finish(live, GS.GENERIC_STATUS_INIT_FAILURE, exception=f"Sandbox setup failed: {exc}")
            return
        timeout = float(d.timeout_secs or 300)
        idle = float(d.idle_timeout_secs) if d.HasField("idle_timeout_secs") else None
        live.supervisor = self.emu.spawn(self._supervise(live, timeout, idle))

    def _spec(self, live: LiveSandbox, d: api_pb2.Sandbox) -> ContainerSpec:
        """What the sandbox's container is: its image's layers, env and workdir, and its
        volumes, each copied in (file I/O: run in a thread)."""
        from harvest_iac.emulator.services.images import layers_for

        layers, image_env, _ = layers_for(self.emu, d.image_id)
        mounts = []
        for i, link in enumerate(live.volumes):
            if self.emu.launcher.isolated:
                local = live.root.parent / "volumes" / str(i)
                mounts.append(Mount(local, link.mount_path, link.read_only))
            else:
                local = _inside(live.root, link.mount_path)
            copy_in(self.store, link, local)
            live.volume_dirs[link.mount_path] = local
        return ContainerSpec(root=live.root, argv=(), layers=layers, env=image_env,
                             workdir=live.workdir, mounts=mounts, network=_network(d))

    def process_env(self, live: LiveSandbox, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a command in this sandbox (secret values included), over the
        container's own (PATH, HOME, the image's env)."""
        assert live.container is not None
        env = dict(live.env)
        env["MODAL_SANDBOX_ID"] = live.sandbox_id
        env["MODAL_TASK_ID"] = live.task_id
        env["HARVEST_SANDBOX_ROOT"] = live.container.reach(Mount(live.root, "/"))
        env.update(extra or {})
        return env

    async def _supervise(self, live: LiveSandbox, timeout: float, idle: float | None) -> None:
        deadline = time.monotonic() + timeout
        try:
            while not live.done.is_set():
                now = time.monotonic()
                if now >= deadline:
                    await self.end(live, GS.GENERIC_STATUS_TIMEOUT, exception="Sandbox timed out")
                    return
                if idle is not None and self._idle_since(live) >= idle:
                    await self.end(live, GS.GENERIC_STATUS_IDLE_TIMEOUT, exception="Sandbox idle timeout")
                    return
                if live.entry is not None and not live.entry.running:
                    await self._end_from_entry(live)
                    return
                if live.container is not None and not live.container.running:
                    await self.end(live, GS.GENERIC_STATUS_FAILURE, exitcode=137,
                                   exception="The sandbox's container exited")
                    return
                await self._wait_any(live, min(deadline - now, 1.0 if idle is not None else 3600.0))
        finally:
            live.kill_all()  # also when cancelled: the emulator is stopping

    @staticmethod
    def _idle_since(live: LiveSandbox) -> float:
        if any(p.running for p in live.execs.values()):
            live.last_activity = time.monotonic()
        return time.monotonic() - live.last_activity

    @staticmethod
    async def _wait_any(live: LiveSandbox, seconds: float) -> None:
        waits = [asyncio.ensure_future(live.done.wait())]
        if live.container is not None:
            waits.append(asyncio.ensure_future(live.container.exited.wait()))
        if live.entry is not None:
            waits.append(asyncio.ensure_future(live.entry.exited.wait()))
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _end_from_entry(self, live: LiveSandbox) -> None:
        assert live.entry is not None
        status = live.entry.exit_status()
        kind, number = status if status else ("code", -1)
        code = number if kind == "code" else 128 + number
        await self.end(live, GS.GENERIC_STATUS_SUCCESS if code == 0 else GS.GENERIC_STATUS_FAILURE,
                       exitcode=code)

    async def end(self, live: LiveSandbox, status: int, *, exitcode: int = 0, exception: str = "") -> None:
        """End a sandbox: kill its processes, commit what it wrote to its volumes, then record
        its result. Concurrent callers wait for the first one."""
        if live.ending:
            await live.done.wait()
            return
        live.ending = True
        try:
            if live.container is not None:
                await live.container.stop()
            await _settle(live.procs())
            await self._commit_volumes(live)
        finally:
            self.finish(live, status, exitcode=exitcode, exception=exception)

    async def _commit_volumes(self, live: LiveSandbox) -> None:
        for link in live.volumes:
            local = live.volume_dirs.get(link.mount_path)
            if link.read_only or local is None:
                continue
            try:
                changes = await asyncio.to_thread(scan, self.store, link, local)
            except OSError as exc:
                log.warning("sandbox %s: volume at %s not committed: %s", live.sandbox_id,
                            link.mount_path, exc.strerror)
                continue
            with self.store.tx():
                commit(self.store, link, changes, int(time.time()))

    def finish(self, live: LiveSandbox, status: int, *, exitcode: int = 0, exception: str = "") -> None:
        """Record the sandbox's result (once) and kill its processes."""
        if live.result is not None:
            return
        live.result = api_pb2.GenericResult(status=status, exitcode=exitcode, exception=exception)  # type: ignore[arg-type]
        live.kill_all()
        live.env = {}
        with self.store.tx():
            self.store.run(
                "UPDATE sandboxes SET status = ?, exitcode = ?, exception = ?, finished_at = ?"
                " WHERE id = ? AND status = ?",
                status, exitcode, exception, time.time(), live.sandbox_id, RUNNING,
            )
        live.done.set()
        self._forget_old(live.sandbox_id)

    def _forget_old(self, sandbox_id: str) -> None:
        self._finished.append(sandbox_id)
        while len(self._finished) > KEEP_FINISHED:
            old = self.live.pop(self._finished.popleft(), None)
            if old is not None:
                self.by_task.pop(old.task_id, None)
                asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(shutil.rmtree, old.root.parent, ignore_errors=True)
                )

    # -- wait, terminate, task ids, router access ---------------------------------------------
    async def SandboxWaitV2(self, req: api_pb2.SandboxWaitRequest, ctx: Ctx) -> api_pb2.SandboxWaitResponse:
        self._row(req.sandbox_id)
        live = self.live.get(req.sandbox_id)
        if live is not None and req.timeout > 0 and not live.done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.done.wait(), min(req.timeout, LONG_POLL_MAX_S))
        row = self._row(req.sandbox_id)
        result = self._result(row)
        return api_pb2.SandboxWaitResponse(result=result, metadata=self._metadata(row))

    async def SandboxTerminateV2(
        self, req: api_pb2.SandboxTerminateRequest, ctx: Ctx
    ) -> api_pb2.SandboxTerminateResponse:
        row = self._row(req.sandbox_id)
        existing = self._result(row)
        live = self.live.get(req.sandbox_id)
        if existing is None and live is not None:
            await self.end(live, GS.GENERIC_STATUS_TERMINATED, exception="Sandbox terminated")
        return api_pb2.SandboxTerminateResponse(existing_result=existing)

    def SandboxGetTaskIdV2(
        self, req: api_pb2.SandboxGetTaskIdRequest, ctx: Ctx
    ) -> api_pb2.SandboxGetTaskIdResponse:
        row = self._row(req.sandbox_id)
        return api_pb2.SandboxGetTaskIdResponse(task_id=row["task_id"], task_result=self._result(row))

    def SandboxGetCommandRouterAccess(
        self, req: api_pb2.SandboxGetCommandRouterAccessRequest, ctx: Ctx
    ) -> api_pb2.SandboxGetCommandRouterAccessResponse:
        if req.sandbox_id:
            task_id = str(self._row(req.sandbox_id)["task_id"])
        else:
            row = self.store.one("SELECT task_id FROM sandboxes WHERE task_id = ?", req.task_id)
            if row is None:
                raise GRPCError(Status.NOT_FOUND, f"Task '{req.task_id}' not found")
            task_id = str(row["task_id"])
        access = self.router_access(task_id)
        return api_pb2.SandboxGetCommandRouterAccessResponse(
            url=access.url, jwt=access.jwt, worker_ipv4_address="127.0.0.1"
        )

    def SandboxGetTunnelsV2(
        self, req: api_pb2.SandboxGetTunnelsRequest, ctx: Ctx
    ) -> api_pb2.SandboxGetTunnelsResponse:
        """Processes share the host's network: a port is reached at 127.0.0.1, without TLS."""
        definition = api_pb2.Sandbox.FromString(self._row(req.sandbox_id)["definition"])
        tunnels = []
        for spec in definition.open_ports.ports:
            if spec.unencrypted:
                tunnels.append(api_pb2.TunnelData(container_port=spec.port, unencrypted_host="127.0.0.1",
                                                  unencrypted_port=spec.port))
            else:
                tunnels.append(api_pb2.TunnelData(container_port=spec.port, host="127.0.0.1", port=spec.port))
        return api_pb2.SandboxGetTunnelsResponse(tunnels=tunnels)

    # -- list, from_name, tags -----------------------------------------------------------------
    def TaskList(self, req: api_pb2.TaskListRequest, ctx: Ctx) -> api_pb2.TaskListResponse:
        """Running containers: here, the running sandboxes (of one app, or an environment).
        `modal container list` and the `modal app stop` prompt ask for them."""
        if req.app_id:
            rows = self.store.all("SELECT * FROM sandboxes WHERE app_id = ? AND finished_at IS NULL "
                                  "ORDER BY created_at", req.app_id)
        else:
            env_id = self.emu.environment_id(req.environment_name)
            rows = self.store.all("SELECT * FROM sandboxes WHERE environment_id = ? AND "
                                  "finished_at IS NULL ORDER BY created_at", env_id)
        return api_pb2.TaskListResponse(tasks=[
            api_pb2.TaskStats(task_id=r["task_id"], app_id=r["app_id"],
                              app_description=f"Sandbox {r['id']}", started_at=r["created_at"],
                              enqueued_at=r["created_at"])
            for r in rows
        ])

    def SandboxListV2(self, req: api_pb2.SandboxListRequest, ctx: Ctx) -> api_pb2.SandboxListResponse:
        sql, args = "SELECT * FROM sandboxes WHERE 1 = 1", []  # type: tuple[str, list[Any]]
        if req.app_id:
            sql += " AND app_id = ?"
            args.append(req.app_id)
        else:
            sql += " AND environment_id = ?"
            args.append(self.emu.environment_id(req.environment_name))
        if not req.include_finished:
            sql += " AND status = ?"
            args.append(RUNNING)
        if req.before_timestamp:
            sql += " AND created_at < ?"
            args.append(req.before_timestamp)
        wanted = {t.tag_name: t.tag_value for t in req.tags}
        rows = self.store.all(sql + " ORDER BY created_at DESC", *args)
        rows = [r for r in rows if wanted.items() <= json.loads(r["tags"]).items()][:LIST_PAGE]
        return api_pb2.SandboxListResponse(sandboxes=[self._info(r) for r in rows])

    SandboxList = SandboxListV2

    def _info(self, row: sqlite3.Row) -> api_pb2.SandboxInfo:
        result = self._result(row)
        return api_pb2.SandboxInfo(
            id=row["id"],
            created_at=row["created_at"],
            app_id=row["app_id"],
            name=row["name"] or "",
            image_id=row["image_id"],
            tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sorted(json.loads(row["tags"]).items())],
            task_info=api_pb2.TaskInfo(
                id=row["task_id"], sandbox_id=row["id"], started_at=row["created_at"],
                finished_at=row["finished_at"] or 0.0, result=result,
            ),
            metadata=self._metadata(row),
        )

    def SandboxGetFromNameV2(
        self, req: api_pb2.SandboxGetFromNameRequest, ctx: Ctx
    ) -> api_pb2.SandboxGetFromNameResponse:
        env_id = self.emu.environment_id(req.environment_name)
        app_id = self._app_by_name(env_id, req.app_name)
        if app_id is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
        sql = "SELECT * FROM sandboxes WHERE app_id = ? AND name = ?"
        if not req.include_terminated:
            sql += f" AND status = {RUNNING}"
        row = self.store.one(sql + " ORDER BY status = 0 DESC, created_at DESC LIMIT 1",
                             app_id, req.sandbox_name)
        if row is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"Sandbox with name '{req.sandbox_name}' not found in app '{req.app_name}'",
            )
        return api_pb2.SandboxGetFromNameResponse(sandbox_id=row["id"], metadata=self._metadata(row))

    # The client falls back to the V1 lookup when V2 answers NOT_FOUND; answer it the same way.
    SandboxGetFromName = SandboxGetFromNameV2

    def SandboxTagsGetV2(self, req: api_pb2.SandboxTagsGetRequest, ctx: Ctx) -> api_pb2.SandboxTagsGetResponse:
        tags = json.loads(self._row(req.sandbox_id)["tags"])
        return api_pb2.SandboxTagsGetResponse(
            tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sorted(tags.items())]
        )

    def SandboxTagsSetV2(self, req: api_pb2.SandboxTagsSetRequest, ctx: Ctx) -> Any:
        from google.protobuf import empty_pb2

        self._row(req.sandbox_id)
        tags = dumps({t.tag_name: t.tag_value for t in req.tags})
        self.store.run("UPDATE sandboxes SET tags = ? WHERE id = ?", tags, req.sandbox_id)
        return empty_pb2.Empty()
