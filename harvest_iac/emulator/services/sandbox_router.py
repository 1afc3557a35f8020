"""The task command router of the local Modal's sandboxes (modal_proto's
`TaskCommandRouter` service, served on the emulator's own port): exec, stdio streams,
stdin, exit status, readiness, filesystem snapshots. Exec also reaches function containers
(`modal container exec`).

Calls carry `authorization: Bearer <jwt>`, a JWT the control plane issued for one task
(`SandboxCreateV2`, `SandboxGetCommandRouterAccess`); a wrong or expired one answers
UNAUTHENTICATED, which makes the client fetch a fresh one.

Mixed into `SandboxService`, whose state (`live`, `by_task`) it uses.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2, task_command_router_pb2 as sr_pb2

from harvest_iac.emulator.auth import ROUTER
from harvest_iac.emulator.base import Ctx, streaming
from harvest_iac.emulator.runtime.function_exec import FunctionExec
from harvest_iac.emulator.runtime.function_containers import Container as FunctionContainer
from harvest_iac.emulator.runtime.processes import STDERR, STDOUT, Proc, Spawner
from harvest_iac.emulator.runtime.rootfs import LAYER_SNAPSHOT, snapshot_diff

if TYPE_CHECKING:
    from harvest_iac.emulator.services.sandboxes import LiveSandbox, SandboxService

_EXEC_FD = {
    sr_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT: STDOUT,
    sr_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR: STDERR,
}
_SANDBOX_FD = {
    sr_pb2.SANDBOX_STDIO_FILE_DESCRIPTOR_STDOUT: STDOUT,
    sr_pb2.SANDBOX_STDIO_FILE_DESCRIPTOR_STDERR: STDERR,
}


class ExecSpawner(Spawner, Protocol):
    """What starts a task's commands (a sandbox's agent, a function container's exec)."""

    def tool_argv(self, argv: list[str]) -> list[str]: ...


@dataclass(eq=False)
class ExecTarget:
    """What `exec` needs of a task: what starts its processes, those it started, its
    default workdir, the env of a command (given the request's own), whether it runs, and
    how to note activity (a sandbox's idle timeout)."""

    spawner: ExecSpawner
    execs: dict[str, Proc]
    workdir: str
    env: Callable[[dict[str, str]], dict[str, str]]
    running: bool
    touch: Callable[[], None]


class SandboxRouter:
    """TaskCommandRouter methods, by name."""

    # -- lookups and auth ----------------------------------------------------------------
    def _check_token(self: SandboxService, ctx: Ctx, task_id: str) -> None:
        header = ctx.metadata.get("authorization", "")
        claims = self.emu.authority.verify(header.removeprefix("Bearer ").strip(), ROUTER)
        if claims is None or claims["sub"] != task_id:
            raise GRPCError(Status.UNAUTHENTICATED, "Invalid or expired task command router token")

    def _task(self: SandboxService, ctx: Ctx, task_id: str) -> LiveSandbox:
        self._check_token(ctx, task_id)
        return self._live_task(task_id)

    def _live_task(self: SandboxService, task_id: str) -> LiveSandbox:
        sandbox_id = self.by_task.get(task_id)
        live = self.live.get(sandbox_id) if sandbox_id else None
        if live is None:
            raise GRPCError(Status.NOT_FOUND, f"Task '{task_id}' not found")
        return live

    def _running_task(self: SandboxService, ctx: Ctx, task_id: str) -> LiveSandbox:
        live = self._task(ctx, task_id)
        if live.done.is_set():
            raise GRPCError(Status.NOT_FOUND, f"Task '{task_id}' has finished")
        return live

    def _exec_target(self: SandboxService, ctx: Ctx, task_id: str) -> ExecTarget:
        """Where `exec` runs in a task: a sandbox, or a function container."""
        self._check_token(ctx, task_id)
        task = self.emu.runtime.tasks.get(task_id)
        if task is None or task_id in self.by_task:
            return self._sandbox_target(self._live_task(task_id))
        return self._function_target(task_id, task.container)

    def _sandbox_target(self: SandboxService, live: LiveSandbox) -> ExecTarget:
        assert live.container is not None

        def touch() -> None:
            live.last_activity = time.monotonic()

        return ExecTarget(live.container, live.execs, live.workdir,
                          lambda extra: self.process_env(live, extra), not live.done.is_set(), touch)

    def _function_target(self: SandboxService, task_id: str, container: FunctionContainer) -> ExecTarget:
        """A function container's commands run with its own env (plus the request's), in its
        workdir unless the request names one."""
        for gone in [t for t in self.function_execs if t not in self.emu.runtime.tasks]:
            del self.function_execs[gone]
        found = self.function_execs.get(task_id)
        if found is None or found.container is not container:
            found = self.function_execs[task_id] = FunctionExec(container)
        return ExecTarget(found, found.execs, "", dict, found.running, lambda: None)

    @staticmethod
    def _exec(target: ExecTarget, exec_id: str) -> Proc:
        proc = target.execs.get(exec_id)
        if proc is None:
            raise GRPCError(Status.NOT_FOUND, f"Exec '{exec_id}' not found")
        return proc

    # -- exec ---------------------------------------------------------------------------
    async def TaskExecStart(
        self: SandboxService, req: sr_pb2.TaskExecStartRequest, ctx: Ctx
    ) -> sr_pb2.TaskExecStartResponse:
        target = self._exec_target(ctx, req.task_id)
        if not target.running:
            raise GRPCError(Status.NOT_FOUND, f"Task '{req.task_id}' has finished")
        if req.exec_id in target.execs:  # a retried start: the exec id is the idempotency key
            return sr_pb2.TaskExecStartResponse()
        if not req.command_args:
            raise GRPCError(Status.INVALID_ARGUMENT, "An exec needs a command")
        extra = self._secret_env(req.secret_sources, req.secret_ids)
        extra.update(req.env)
        workdir = req.workdir if req.HasField("workdir") and req.workdir else target.workdir
        proc = Proc(
            target.spawner,
            target.spawner.tool_argv(list(req.command_args)),
            cwd=workdir,
            env=target.env(extra),
            timeout=float(req.timeout_secs) if req.HasField("timeout_secs") and req.timeout_secs else None,
            pipe_stdout=req.stdout_config != sr_pb2.TASK_EXEC_STDOUT_CONFIG_DEVNULL,
            pipe_stderr=req.stderr_config != sr_pb2.TASK_EXEC_STDERR_CONFIG_DEVNULL,
            merge_stderr=req.stderr_config == sr_pb2.TASK_EXEC_STDERR_CONFIG_STDOUT
            or req.HasField("pty_info"),
        )
        target.execs[req.exec_id] = proc
        target.touch()
        await proc.start()
        return sr_pb2.TaskExecStartResponse()

    @streaming
    async def TaskExecStdioRead(self: SandboxService, stream: Any, ctx: Ctx) -> None:
        req: sr_pb2.TaskExecStdioReadRequest = await stream.recv_message()
        proc = self._exec(self._exec_target(ctx, req.task_id), req.exec_id)
        fd = _EXEC_FD.get(req.file_descriptor)
        if fd is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "Unknown file descriptor")
        async for _, data in proc.read(fd, req.offset):
            await stream.send_message(sr_pb2.TaskExecStdioReadResponse(data=data))

    async def TaskExecWait(
        self: SandboxService, req: sr_pb2.TaskExecWaitRequest, ctx: Ctx
    ) -> sr_pb2.TaskExecWaitResponse:
        proc = self._exec(self._exec_target(ctx, req.task_id), req.exec_id)
        await proc.exited.wait()  # bounded by the client's deadline, which cancels us
        return sr_pb2.TaskExecWaitResponse(**_exit_fields(proc))

    async def TaskExecPoll(
        self: SandboxService, req: sr_pb2.TaskExecPollRequest, ctx: Ctx
    ) -> sr_pb2.TaskExecPollResponse:
        proc = self._exec(self._exec_target(ctx, req.task_id), req.exec_id)
        return sr_pb2.TaskExecPollResponse(**_exit_fields(proc))

    # -- stdin --------------------------------------------------------------------------
    async def TaskExecStdinWrite(
        self: SandboxService, req: sr_pb2.TaskExecStdinWriteRequest, ctx: Ctx
    ) -> sr_pb2.TaskExecStdinWriteResponse:
        target = self._exec_target(ctx, req.task_id)
        target.touch()
        await self._exec(target, req.exec_id).write_stdin(req.offset, req.data, req.eof)
        return sr_pb2.TaskExecStdinWriteResponse()

    @streaming
    async def TaskExecStdinWriteStream(self: SandboxService, stream: Any, ctx: Ctx) -> None:
        first: sr_pb2.TaskExecStdinWriteStreamRequest | None = await stream.recv_message()
        if first is None or first.WhichOneof("payload") != "start":
            raise GRPCError(Status.INVALID_ARGUMENT, "The stdin stream must begin with `start`")
        target = self._exec_target(ctx, first.start.task_id)
        proc = self._exec(target, first.start.exec_id)
        offset = first.start.offset
        async for msg in stream:
            target.touch()
            kind = msg.WhichOneof("payload")
            if kind == "data":
                await proc.write_stdin(offset, msg.data, False)
                offset += len(msg.data)
            elif kind == "end":
                await proc.write_stdin(offset, b"", True)
                break
        await stream.send_message(sr_pb2.TaskExecStdinWriteStreamResponse())

    async def TaskExecStdinStatus(
        self: SandboxService, req: sr_pb2.TaskExecStdinStatusRequest, ctx: Ctx
    ) -> sr_pb2.TaskExecStdinStatusResponse:
        proc = self._exec(self._exec_target(ctx, req.task_id), req.exec_id)
        return sr_pb2.TaskExecStdinStatusResponse(
            num_bytes_written=proc.stdin_written, closed=proc.stdin_closed
        )

    # -- the sandbox's own entrypoint ---------------------------------------------------
    @streaming
    async def SandboxStdioReadV2(self: SandboxService, stream: Any, ctx: Ctx) -> None:
        req: sr_pb2.SandboxStdioReadV2Request = await stream.recv_message()
        live = self._task(ctx, req.task_id)
        fd = _SANDBOX_FD.get(req.file_descriptor)
        if fd is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "Unknown file descriptor")
        if live.entry is None:  # no entrypoint: nothing is written until the sandbox ends
            await live.done.wait()
            return
        async for start, data in live.entry.read(fd, req.offset):
            await stream.send_message(sr_pb2.SandboxStdioReadV2Response(data=data, starting_offset=start))

    async def SandboxStdinWriteV2(
        self: SandboxService, req: sr_pb2.SandboxStdinWriteV2Request, ctx: Ctx
    ) -> sr_pb2.SandboxStdinWriteV2Response:
        live = self._task(ctx, req.task_id)
        live.last_activity = time.monotonic()
        if live.entry is not None:
            await live.entry.write_stdin(req.offset, req.data, req.eof)
        return sr_pb2.SandboxStdinWriteV2Response()

    async def SandboxWaitUntilReady(self: SandboxService, req: Any, ctx: Ctx) -> Any:
        """Both services have this name: the control plane's (by sandbox id) and the
        router's (by task id). Runs the sandbox's readiness probe (a TCP connect to
        127.0.0.1:port, or a command that must exit 0) until it passes; without a probe a
        started sandbox is ready."""
        if isinstance(req, sr_pb2.SandboxWaitUntilReadyTcrRequest):
            live = self._running_task(ctx, req.task_id)
            ready_at = await self._wait_ready(live, req.timeout)
            return sr_pb2.SandboxWaitUntilReadyTcrResponse(ready_at=ready_at)
        live = self.live.get(req.sandbox_id)
        if live is None or live.done.is_set():
            self._row(req.sandbox_id)  # NOT_FOUND for an unknown id
            raise GRPCError(Status.FAILED_PRECONDITION, f"Sandbox '{req.sandbox_id}' has finished")
        ready_at = await self._wait_ready(live, req.timeout)
        return api_pb2.SandboxWaitUntilReadyResponse(ready_at=ready_at)

    async def _wait_ready(self: SandboxService, live: LiveSandbox, timeout: float) -> float:
        if live.ready_at:
            return live.ready_at
        definition = api_pb2.Sandbox.FromString(self._row(live.sandbox_id)["definition"])
        probe = definition.readiness_probe if definition.HasField("readiness_probe") else None
        deadline = time.monotonic() + (timeout or 300.0)
        while probe is not None and not await _probe_passes(self, live, probe):
            if live.done.is_set():
                raise GRPCError(Status.FAILED_PRECONDITION, "The sandbox finished before it was ready")
            if time.monotonic() >= deadline:
                raise GRPCError(Status.DEADLINE_EXCEEDED, "The sandbox's readiness probe did not pass in time")
            await asyncio.sleep((probe.interval_ms or 100) / 1000.0)
        live.ready_at = time.time()
        return live.ready_at

    # -- volumes ------------------------------------------------------------------------
    async def TaskReloadVolumes(
        self: SandboxService, req: sr_pb2.TaskReloadVolumesRequest, ctx: Ctx
    ) -> sr_pb2.TaskReloadVolumesResponse:
        """Show the volumes' latest contents in the sandbox, keeping what it changed itself."""
        from harvest_iac.emulator.services.sandbox_volumes import read_entries, refresh, scan

        live = self._running_task(ctx, req.task_id)
        for link in live.volumes:
            target = live.volume_dirs[link.mount_path]
            changes = await asyncio.to_thread(scan, self.store, link, target)
            latest = read_entries(self.store, link.volume_id)
            await asyncio.to_thread(refresh, self.store, link, target, changes, latest)
        return sr_pb2.TaskReloadVolumesResponse()

    # -- directory snapshots and image mounts ---------------------------------------------
    async def TaskSnapshotDirectory(
        self: SandboxService, req: sr_pb2.TaskSnapshotDirectoryRequest, ctx: Ctx
    ) -> sr_pb2.TaskSnapshotDirectoryResponse:
        from harvest_iac.emulator.services.images import register_snapshot_image
        from harvest_iac.emulator.services.sandboxes import _inside

        live = self._task(ctx, req.task_id)
        source = _inside(live.root, req.path.decode("utf-8", "replace"))
        if not source.is_dir():
            raise GRPCError(Status.NOT_FOUND, f"No such directory in the sandbox: {req.path.decode()}")
        key = "dir:" + (req.snapshot_id or str(uuid.uuid4()))
        if key not in live.snapshots:
            dest = self.emu.data_dir / "snapshots" / uuid.uuid4().hex
            await asyncio.to_thread(_copy_tree, source, dest)
            live.snapshots[key] = register_snapshot_image(self.emu, live.environment_id, dest)
        return sr_pb2.TaskSnapshotDirectoryResponse(image_id=live.snapshots[key])

    async def TaskMountDirectory(
        self: SandboxService, req: sr_pb2.TaskMountDirectoryRequest, ctx: Ctx
    ) -> Any:
        from google.protobuf import empty_pb2

        from harvest_iac.emulator.services.images import image_exists, image_fs_dir

        live = self._running_task(ctx, req.task_id)
        path, target = _mount_point(live, req.path)
        if req.image_id and not image_exists(self.emu, req.image_id):
            raise GRPCError(Status.NOT_FOUND, f"Image '{req.image_id}' not found")
        source = image_fs_dir(self.emu, req.image_id) if req.image_id else None
        stash = None
        if path not in live.mounts:
            stash = live.root.parent / "stash" / uuid.uuid4().hex
            live.mounts[path] = stash
        await asyncio.to_thread(_mount, target, stash, source)
        return empty_pb2.Empty()

    async def TaskUnmountDirectory(
        self: SandboxService, req: sr_pb2.TaskUnmountDirectoryRequest, ctx: Ctx
    ) -> Any:
        from google.protobuf import empty_pb2

        live = self._running_task(ctx, req.task_id)
        path, target = _mount_point(live, req.path)
        if path not in live.mounts:
            raise GRPCError(Status.NOT_FOUND, f"Nothing is mounted at {path}")
        await asyncio.to_thread(_unmount, target, live.mounts.pop(path))
        return empty_pb2.Empty()

    # -- filesystem snapshots -----------------------------------------------------------
    async def TaskSnapshotFilesystem(
        self: SandboxService, req: sr_pb2.TaskSnapshotFilesystemRequest, ctx: Ctx
    ) -> sr_pb2.TaskSnapshotFilesystemResponse:
        from harvest_iac.emulator.services.images import register_snapshot_image

        live = self._task(ctx, req.task_id)
        key = req.snapshot_id or str(uuid.uuid4())
        if key in live.snapshots:  # a retried snapshot: the client's snapshot id is the key
            return sr_pb2.TaskSnapshotFilesystemResponse(image_id=live.snapshots[key])
        dest = self.emu.data_dir / "snapshots" / uuid.uuid4().hex
        await asyncio.to_thread(self._snapshot, live, dest)
        image_id = register_snapshot_image(self.emu, live.environment_id, dest, ttl_seconds=req.ttl_seconds,
                                           parent_id=live.image_id)
        live.snapshots[key] = image_id
        return sr_pb2.TaskSnapshotFilesystemResponse(image_id=image_id)


    def _snapshot(self: SandboxService, live: LiveSandbox, dest: Path) -> None:
        """A sandbox's root as a layer: what it changed on its image's layers, when those
        are all in the layer cache (kept for good); else (its image is itself a snapshot,
        which can be deleted) a copy of the whole root."""
        snapshots = (self.emu.data_dir / "snapshots").resolve()
        layers = live.container.spec.layers if live.container is not None else None
        if layers is not None and not any(snapshots in Path(layer).resolve().parents for layer in layers):
            snapshot_diff(live.root, layers, dest)
            return
        _copy_tree(live.root, dest)
        (dest / LAYER_SNAPSHOT).touch()


async def _probe_passes(svc: SandboxService, live: LiveSandbox, probe: api_pb2.Probe) -> bool:
    kind = probe.WhichOneof("probe_oneof")
    if kind == "tcp_port":
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", probe.tcp_port), 2.0)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True
    if kind == "exec_command":
        assert live.container is not None
        check = Proc(live.container, list(probe.exec_command.argv), cwd=live.workdir, env=svc.process_env(live),
                     timeout=10.0, pipe_stdout=False, pipe_stderr=False)
        await check.start()
        await check.exited.wait()
        return check.returncode == 0
    return True


def _mount_point(live: LiveSandbox, raw: bytes) -> tuple[str, Any]:
    from harvest_iac.emulator.services.sandboxes import _inside

    path = raw.decode("utf-8", "replace")
    target = _inside(live.root, path)
    if target == live.root:
        raise GRPCError(Status.INVALID_ARGUMENT, "The sandbox root cannot be a mount point")
    return path.rstrip("/"), target


def _mount(target: Any, stash: Any, source: Any) -> None:
    if stash is not None and target.exists():
        stash.parent.mkdir(parents=True, exist_ok=True)
        target.rename(stash)  # what was there shows again on unmount
    elif target.exists():
        shutil.rmtree(target)  # the previous mount at this path
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is not None and source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        target.mkdir()


def _unmount(target: Any, stash: Any) -> None:
    if target.exists():
        shutil.rmtree(target)
    if stash is not None and stash.exists():
        stash.rename(target)


def _copy_tree(src: Any, dest: Any) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=True, ignore=lambda d, names: {"__modal"} & set(names)
                    if d == str(src) else set())


def _exit_fields(proc: Proc) -> dict[str, int]:
    status = proc.exit_status()
    return {} if status is None else {status[0]: status[1]}


def _created_at(svc: SandboxService, sandbox_id: str) -> float:
    return float(svc._row(sandbox_id)["created_at"])
