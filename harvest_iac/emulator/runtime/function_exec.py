"""`modal container exec` in a function container: commands started beside the container's
own process, with its environment and in its folders, each a `processes.Proc` as in a
sandbox, and each killed (with its process group) when the container ends.

Containers on the host only: one the launcher isolates (bubblewrap) has no way in yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import Mapping

from harvest_iac.emulator.runtime.function_containers import Container
from harvest_iac.emulator.runtime.launcher import host_path
from harvest_iac.emulator.runtime.processes import STDERR, STDOUT, Proc

_STDIO = {"fd": asyncio.subprocess.PIPE, "null": asyncio.subprocess.DEVNULL,
          "stdout": asyncio.subprocess.STDOUT}


class FunctionExec:
    """The commands exec'd in one function container (`Proc.container` for them)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.execs: dict[str, Proc] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._ids = itertools.count(1)
        self._watch: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.container.pid is not None and not self.container.exited.is_set()

    @staticmethod
    def tool_argv(argv: list[str]) -> list[str]:
        return argv

    async def spawn(
        self, proc: Proc, *, stdio: list[str], env: Mapping[str, str]
    ) -> tuple[asyncio.StreamWriter | None, dict[int, asyncio.StreamReader], str | None]:
        """Start `proc`: (its stdin, its output readers, None), or why it could not start."""
        command = self.container.command
        if command is None or not self.running:
            return None, {}, "the container has stopped"
        if self.container.isolated:
            return None, {}, "exec into an isolated function container is not supported yet"
        cwd = host_path(self.container.root, proc.cwd) if proc.cwd else command.cwd
        try:
            process = await asyncio.create_subprocess_exec(
                *proc.argv, env={**command.env, **env}, cwd=str(cwd), start_new_session=True,
                stdin=_STDIO[stdio[0]], stdout=_STDIO[stdio[1]], stderr=_STDIO[stdio[2]],
            )
        except OSError as exc:
            return None, {}, exc.strerror or str(exc)
        proc.ident = str(next(self._ids))
        self._processes[proc.ident] = process
        asyncio.ensure_future(self._reap(proc, process))
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._end_with_container())
        readers = {fd: r for fd, r in ((STDOUT, process.stdout), (STDERR, process.stderr)) if r is not None}
        return process.stdin, readers, None

    async def _reap(self, proc: Proc, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._processes.pop(proc.ident, None)
        if not proc.exit_code.done():
            proc.exit_code.set_result(code)

    async def _end_with_container(self) -> None:
        await self.container.exited.wait()
        for ident in list(self._processes):
            self.kill(ident)

    def kill(self, ident: str) -> None:
        """SIGKILL the command's process group."""
        process = self._processes.get(ident)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
