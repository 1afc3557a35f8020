"""Processes in a local container: an entrypoint or an exec'd command, started by the
container's agent (`containers.Container`) or beside a function container's process
(`function_exec.FunctionExec`), with its output buffered in memory so readers can
stream it from any byte offset, an offset-checked stdin, a timeout, and a kill that takes
its whole process group down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

STDOUT = 1
STDERR = 2
_READ_CHUNK = 64 * 1024
NOT_FOUND_EXIT = 127
DRAIN_AFTER_EXIT_S = 2.0


class Spawner(Protocol):
    """What starts a `Proc` and kills it: a container's agent, or exec in a function container."""

    async def spawn(
        self, proc: Proc, *, stdio: list[str], env: Mapping[str, str]
    ) -> tuple[asyncio.StreamWriter | None, dict[int, asyncio.StreamReader], str | None]: ...

    def kill(self, ident: str) -> None: ...


class Proc:
    """One process of a container, started with `start()`."""

    def __init__(
        self,
        container: Spawner,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        timeout: float | None = None,
        pipe_stdout: bool = True,
        pipe_stderr: bool = True,
        merge_stderr: bool = False,
    ) -> None:
        self.container = container
        self.argv = list(argv)
        self.cwd = cwd
        self._env = dict(env)
        self.timeout = timeout
        self._piped = {STDOUT: pipe_stdout, STDERR: pipe_stderr and not merge_stderr}
        self._merge_stderr = merge_stderr
        self.output = {STDOUT: bytearray(), STDERR: bytearray()}
        self.closed = {fd: not piped for fd, piped in self._piped.items()}
        self.stdin_written = 0
        self.stdin_closed = False
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.timed_out = False
        self.ident = ""
        self.exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self._stdin: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._expiry: asyncio.Task[None] | None = None
        self._stdin_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the process; a command that cannot be executed exits 127 with a message."""
        try:
            stdin, readers, failure = await self.container.spawn(
                self, stdio=self._stdio(), env=self._env
            )
        finally:
            self._env = {}  # secret values are not kept longer than needed
        if failure is not None:
            self._fail_to_start(failure)
            return
        self._stdin = stdin
        for fd, reader in readers.items():
            self._tasks.append(asyncio.ensure_future(self._pump(reader, fd)))
        self._tasks.append(asyncio.ensure_future(self._reap()))
        if self.timeout:
            self._expiry = asyncio.ensure_future(self._expire(self.timeout))

    def _stdio(self) -> list[str]:
        out = "fd" if self._piped[STDOUT] else "null"
        if self._merge_stderr:
            err = "stdout" if self._piped[STDOUT] else "null"
        else:
            err = "fd" if self._piped[STDERR] else "null"
        return ["fd", out, err]

    def _fail_to_start(self, reason: str) -> None:
        name = self.argv[0] if self.argv else ""
        message = f"exec: {name!r}: {reason}\n".encode()
        fd = STDOUT if self._merge_stderr else STDERR
        if self._piped[fd]:
            self.output[fd] += message
        self.closed = {STDOUT: True, STDERR: True}
        self.stdin_closed = True
        self.returncode = NOT_FOUND_EXIT
        self.exited.set()
        self._pulse()

    async def _pump(self, reader: asyncio.StreamReader, fd: int) -> None:
        try:
            while chunk := await reader.read(_READ_CHUNK):
                self.output[fd] += chunk
                self._pulse()
        finally:
            self.closed[fd] = True
            self._pulse()

    async def _reap(self) -> None:
        code = await self.exit_code
        # Report the exit only once the output is drained (as a container's runtime does), so
        # a client that stops reading at the exit status still gets all of it. Bounded: a
        # background child may keep the pipes open.
        pumps = [t for t in self._tasks if t is not asyncio.current_task()]
        if pumps:
            await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT_S)
        self.returncode = code
        self.stdin_closed = True
        if self._stdin is not None:
            self._stdin.close()
        if self._expiry is not None and not self._expiry.done():
            self._expiry.cancel()
        self.exited.set()
        self._pulse()

    async def _expire(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.exited.is_set():
            self.timed_out = True
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process's whole group (synchronous, safe to call repeatedly)."""
        if self.ident and not self.exit_code.done():
            self.container.kill(self.ident)

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    def exit_status(self) -> tuple[str, int] | None:
        """('code', n) or ('signal', n) once exited, else None."""
        if self.returncode is None:
            return None
        if self.returncode < 0:
            return "signal", -self.returncode
        return "code", self.returncode

    # -- output --------------------------------------------------------------------
    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def read(
        self, fd: int, offset: int, max_chunk: int = 1024 * 1024
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (starting offset, bytes) from `offset` on, as output arrives, until the
        stream is closed and drained."""
        offset = max(0, offset)
        while True:
            waiter = self._changed
            buf = self.output[fd]
            if offset < len(buf):
                data = bytes(buf[offset : offset + max_chunk])
                yield offset, data
                offset += len(data)
                continue
            if self.closed[fd]:
                return
            await waiter.wait()

    # -- stdin ---------------------------------------------------------------------
    async def write_stdin(self, offset: int, data: bytes, eof: bool) -> None:
        """Write `data`, which starts at byte `offset` of the stdin stream; bytes already
        written (a retried call) are skipped, so the write is idempotent."""
        async with self._stdin_lock:
            writer = self._stdin
            skip = max(0, self.stdin_written - offset)
            fresh = data[skip:] if offset <= self.stdin_written else b""
            if writer is None or self.stdin_closed:
                return
            try:
                if fresh:
                    writer.write(fresh)
                    self.stdin_written += len(fresh)
                    await writer.drain()
                if eof:
                    self.stdin_closed = True
                    writer.close()
            except (BrokenPipeError, ConnectionResetError):
                self.stdin_closed = True

    async def close(self) -> None:
        """Kill the process if it still runs and stop the helper tasks."""
        self.kill()
        if self._expiry is not None and not self._expiry.done():
            self._expiry.cancel()
        with contextlib.suppress(Exception):
            if self._stdin is not None:
                self._stdin.close()
