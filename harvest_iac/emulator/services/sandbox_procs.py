"""Local processes behind the local Modal's sandboxes: an entrypoint or an exec'd command run
as an asyncio subprocess in its own process group, with its output buffered in memory so
readers can stream it from any byte offset, an offset-checked stdin, a timeout, and a kill
that takes the whole process group down.

This is NOT isolation: the commands run as the emulator's own user on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

STDOUT = 1
STDERR = 2
_READ_CHUNK = 64 * 1024
NOT_FOUND_EXIT = 127


class Proc:
    """One local process of a sandbox, started with `start()`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float | None = None,
        pipe_stdout: bool = True,
        pipe_stderr: bool = True,
        merge_stderr: bool = False,
    ) -> None:
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
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._expiry: asyncio.Task[None] | None = None
        self._stdin_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the process; a command that cannot be executed exits 127 with a message."""
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=str(self.cwd),
                env=self._env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if self._piped[STDOUT] else asyncio.subprocess.DEVNULL,
                stderr=self._stderr_target(),
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # not found, not executable, a NUL in an argument
            self._fail_to_start(exc)
            return
        finally:
            self._env = {}  # secret values are not kept longer than needed
        proc = self._process
        if proc.stdout is not None:
            self._tasks.append(asyncio.ensure_future(self._pump(proc.stdout, STDOUT)))
        if proc.stderr is not None:
            self._tasks.append(asyncio.ensure_future(self._pump(proc.stderr, STDERR)))
        self._tasks.append(asyncio.ensure_future(self._reap()))
        if self.timeout:
            self._expiry = asyncio.ensure_future(self._expire(self.timeout))

    def _stderr_target(self) -> int:
        if self._merge_stderr:
            return asyncio.subprocess.STDOUT if self._piped[STDOUT] else asyncio.subprocess.DEVNULL
        return asyncio.subprocess.PIPE if self._piped[STDERR] else asyncio.subprocess.DEVNULL

    def _fail_to_start(self, exc: Exception) -> None:
        name = self.argv[0] if self.argv else ""
        message = f"exec: {name!r}: {getattr(exc, 'strerror', None) or exc}\n".encode()
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
        assert self._process is not None
        code = await self._process.wait()
        # Report the exit only once the output is drained (as a container's runtime does), so
        # a client that stops reading at the exit status still gets all of it. Bounded: a
        # background child may keep the pipes open.
        pumps = [t for t in self._tasks if t is not asyncio.current_task()]
        if pumps:
            await asyncio.wait(pumps, timeout=2.0)
        self.returncode = code
        self.stdin_closed = True
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
        proc = self._process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

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
            proc = self._process
            skip = max(0, self.stdin_written - offset)
            fresh = data[skip:] if offset <= self.stdin_written else b""
            if proc is None or proc.stdin is None or self.stdin_closed:
                return
            try:
                if fresh:
                    proc.stdin.write(fresh)
                    self.stdin_written += len(fresh)
                    await proc.stdin.drain()
                if eof:
                    self.stdin_closed = True
                    proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                self.stdin_closed = True

    async def close(self) -> None:
        """Kill the process if it still runs and stop the helper tasks."""
        self.kill()
        if self._expiry is not None and not self._expiry.done():
            self._expiry.cancel()


def sandbox_env(home: Path, extra: Mapping[str, str], *, python_dir: str | None) -> dict[str, str]:
    """The environment of a sandbox command: a few host basics (never the emulator's own
    credentials), HOME in the sandbox, then the sandbox's secrets and env."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TERM")}
    path = env.get("PATH", os.defpath)
    if python_dir:
        path = python_dir + os.pathsep + path
    env.update(PATH=path, HOME=str(home), HARVEST_SANDBOX_ROOT=str(home))
    env.update(extra)
    return env
