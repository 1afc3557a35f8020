"""A local container: its agent (`agent.py`) started through a launcher, and the processes the
agent runs in it on request (`processes.Proc`).

All processes of one container share it: its root folder, mounts, PID namespace and network
when the launcher isolates, and the agent as the reaper of whatever they leave behind. Stopping
the container kills every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest_iac.emulator.runtime import fs_tools
from harvest_iac.emulator.runtime.launcher import ContainerSpec, Launcher, Mount
from harvest_iac.emulator.runtime.processes import STDERR, STDOUT

if TYPE_CHECKING:
    from harvest_iac.emulator.runtime.processes import Proc

log = logging.getLogger("harvest.emulator")
TOOLS_DIR = "/__modal/.bin"
CONTAINER_PYTHON = "/usr/local/bin/python"
STOP_GRACE_S = 5.0
_SEND_TIMEOUT_S = 5.0
_HEADER = struct.Struct(">I")
_STDERR_KEEP = 4096


class ContainerError(Exception):
    """The container could not be started (the message says why)."""


class Container:
    """One container, started with `start()` and ended with `stop()`."""

    def __init__(self, launcher: Launcher, spec: ContainerSpec) -> None:
        self.launcher = launcher
        self.spec = spec
        self.exited = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self._commands: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._procs: dict[str, Proc] = {}
        self._starting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stderr = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._events_writer: asyncio.StreamWriter | None = None  # kept: it owns the socket

    # -- where things are ------------------------------------------------------------
    @property
    def isolated(self) -> bool:
        return self.launcher.isolated

    def reach(self, mount: Mount) -> str:
        """The path at which processes of this container find a mount (isolated launchers
        place mounts at their targets; the host launcher leaves them where they are)."""
        return mount.target if self.isolated else str(mount.source)

    def path(self, container_path: str) -> str:
        """A container path as the container's processes open it."""
        if self.isolated:
            return container_path
        return str(fs_tools.resolve_in_root(self.spec.root, container_path))

    @property
    def python(self) -> str:
        return CONTAINER_PYTHON if self.isolated else sys.executable

    def tool_argv(self, argv: list[str]) -> list[str]:
        """The client's filesystem tool (`/__modal/.bin/modal-sandbox-fs-tools`) is our script."""
        if argv and argv[0] == fs_tools.TOOL_PATH:
            return [self.python, "-I", self.reach(_FS_TOOLS), *argv[1:]]
        return argv

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the agent; raises ContainerError when the container cannot run."""
        cmd_ours, cmd_theirs = socket.socketpair()
        ev_ours, ev_theirs = socket.socketpair()
        try:
            spec = replace(
                self.spec,
                argv=[self.python, "-I", "-S", self.reach(_AGENT),
                      str(cmd_theirs.fileno()), str(ev_theirs.fileno())],
                mounts=[*self.spec.mounts, _AGENT, _FS_TOOLS],
            )
            host = await asyncio.to_thread(self.launcher.prepare, spec)
            self.process = await asyncio.create_subprocess_exec(
                *host.argv, env=host.env, cwd=str(host.cwd), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                pass_fds=(cmd_theirs.fileno(), ev_theirs.fileno()), start_new_session=True,
            )
        except OSError as exc:
            cmd_ours.close()
            ev_ours.close()
            raise ContainerError(str(exc)) from exc
        finally:
            cmd_theirs.close()
            ev_theirs.close()
        cmd_ours.settimeout(_SEND_TIMEOUT_S)
        self._commands = cmd_ours
        reader, self._events_writer = await asyncio.open_unix_connection(sock=ev_ours)
        self._tasks = [asyncio.ensure_future(self._events(reader)),
                       asyncio.ensure_future(self._watch())]
        await asyncio.wait([self._ready], timeout=30.0)
        if not self._ready.done() or self._ready.exception() is not None:
            self.kill_now()
            detail = self._stderr.decode("utf-8", "replace").strip() or "it did not start"
            raise ContainerError(f"the container's agent exited: {detail.splitlines()[-1]}")

    async def _watch(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while chunk := await self.process.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]
        await self.process.wait()
        self._ended()

    def _ended(self) -> None:
        if not self._ready.done():
            self._ready.set_exception(ContainerError("exited"))
            self._ready.exception()  # retrieved: the caller reads it through done()
        for future in self._starting.values():
            if not future.done():
                future.set_result({"error": "The container has stopped"})
        for proc in self._procs.values():
            if not proc.exit_code.done():
                proc.exit_code.set_result(-signal.SIGKILL)
        self._procs.clear()
        if self._commands is not None:
            self._commands.close()
        self.exited.set()

    async def _events(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            event = json.loads(line)
            if "ready" in event:
                if not self._ready.done():
                    self._ready.set_result(None)
                continue
            ident = str(event.get("id"))
            if "exit" in event:
                proc = self._procs.pop(ident, None)
                if proc is not None and not proc.exit_code.done():
                    proc.exit_code.set_result(int(event["exit"]))
            else:
                started = self._starting.pop(ident, None)
                if started is not None and not started.done():  # not abandoned, nor ended
                    started.set_result(event)

    @property
    def running(self) -> bool:
        return self.process is not None and not self.exited.is_set()

    async def stop(self) -> None:
        """Kill every process of the container, and wait (briefly) until they are gone."""
        if self.process is None:
            return
        self._send({"op": "shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.exited.wait(), STOP_GRACE_S)
        if not self.exited.is_set():
            self._kill_group()
            await self.exited.wait()

    def kill_now(self) -> None:
        """Synchronous stop (emulator shutdown): isolated containers are killed whole at
        once; a host container's agent is told to kill its processes and exit."""
        self._send({"op": "shutdown"})
        if self.isolated:
            self._kill_group()

    def _kill_group(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    # -- processes ---------------------------------------------------------------------
    async def spawn(
        self, proc: Proc, *, stdio: list[str], env: Mapping[str, str]
    ) -> tuple[asyncio.StreamWriter | None, dict[int, asyncio.StreamReader], str | None]:
        """Start `proc` in the container: (its stdin, its output readers, None), or a reason
        it could not be started."""
        if not self.running:
            return None, {}, "The container has stopped"
        ident = str(next(self._ids))
        proc.ident = ident
        theirs: list[int] = []
        ours: dict[int, int] = {}
        for target, kind in enumerate(stdio):
            if kind != "fd":
                continue
            r, w = os.pipe()
            theirs.append(r if target == 0 else w)
            ours[target] = w if target == 0 else r
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        self._starting[ident] = started
        self._procs[ident] = proc
        message = {"op": "spawn", "id": ident, "argv": proc.argv, "env": dict(env),
                   "cwd": self.path(proc.cwd), "stdio": stdio}
        try:
            await asyncio.to_thread(self._send, message, theirs)
        finally:
            for fd in theirs:
                os.close(fd)
        event = await started
        if "error" in event:
            self._procs.pop(ident, None)
            for fd in ours.values():
                os.close(fd)
            return None, {}, str(event["error"])
        return await _stdin_writer(ours.get(0)), await _readers(ours), None

    def kill(self, ident: str) -> None:
        self._send({"op": "kill", "id": ident})

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        sock = self._commands
        if sock is None or self.exited.is_set():
            return
        body = json.dumps(message).encode()
        data = _HEADER.pack(len(body)) + body
        try:
            with self._send_lock:
                sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
                if sent < len(data):
                    sock.sendall(data[sent:])
        except OSError as exc:
            log.debug("container agent unreachable: %s", exc)


_RUNTIME_DIR = Path(__file__).resolve().parent
_AGENT = Mount(_RUNTIME_DIR / "agent.py", f"{TOOLS_DIR}/agent.py", read_only=True)
_FS_TOOLS = Mount(Path(fs_tools.__file__).resolve(), f"{TOOLS_DIR}/fs_tools.py", read_only=True)


async def _stdin_writer(fd: int | None) -> asyncio.StreamWriter | None:
    if fd is None:
        return None
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(fd, "wb", 0)
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)  # type: ignore[arg-type]


async def _readers(fds: dict[int, int]) -> dict[int, asyncio.StreamReader]:
    loop = asyncio.get_running_loop()
    readers: dict[int, asyncio.StreamReader] = {}
    for target, fd in fds.items():
        if target == 0:
            continue
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), os.fdopen(fd, "rb", 0))
        readers[STDOUT if target == 1 else STDERR] = reader
    return readers
