"""`modal container exec` in a function container: commands started beside the container's
own process, with its environment, each a `processes.Proc` as in a sandbox, and each killed
(with its process group) when the container ends.

A container on the host: the command runs on the host, in the container's folder. A container
the launcher isolated (bubblewrap): the command enters the namespaces of the container's
entrypoint and its root with `nsenter` (util-linux), joining first the user namespace that
owns them when bubblewrap made one (unprivileged), so it sees what the container sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harvest_iac.emulator.runtime.function_containers import Container
from harvest_iac.emulator.runtime.launcher import host_path
from harvest_iac.emulator.runtime.processes import STDERR, STDOUT, Proc

_STDIO = {"fd": asyncio.subprocess.PIPE, "null": asyncio.subprocess.DEVNULL,
          "stdout": asyncio.subprocess.STDOUT}


@dataclass(frozen=True)
class _Launch:
    """How to start a command: its argv, the host folder it starts in, fds it inherits."""

    argv: list[str]
    cwd: Path
    fds: tuple[int, ...] = ()


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
        how = self._entered(proc) if self.container.isolated else self._beside(proc, command.cwd)
        if isinstance(how, str):
            return None, {}, how
        try:
            process = await asyncio.create_subprocess_exec(
                *how.argv, env={**command.env, **env}, cwd=str(how.cwd), pass_fds=how.fds,
                start_new_session=True,
                stdin=_STDIO[stdio[0]], stdout=_STDIO[stdio[1]], stderr=_STDIO[stdio[2]],
            )
        except OSError as exc:
            return None, {}, exc.strerror or str(exc)
        finally:
            for fd in how.fds:
                os.close(fd)
        proc.ident = str(next(self._ids))
        self._processes[proc.ident] = process
        asyncio.ensure_future(self._reap(proc, process))
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._end_with_container())
        readers = {fd: r for fd, r in ((STDOUT, process.stdout), (STDERR, process.stderr)) if r is not None}
        return process.stdin, readers, None

    def _beside(self, proc: Proc, workdir: Path) -> _Launch:
        """On the host: in the container's folder for the workdir asked for, else in its own."""
        return _Launch(proc.argv, host_path(self.container.root, proc.cwd) if proc.cwd else workdir)

    def _entered(self, proc: Proc) -> _Launch | str:
        """Through `nsenter`, into the entrypoint's namespaces (those that are not ours) and
        root; in the workdir asked for, else in the entrypoint's."""
        nsenter = shutil.which("nsenter")
        target = self.container.main_pid()
        if nsenter is None:
            return "exec into an isolated container needs nsenter (util-linux)"
        if target is None:
            return "the container's entrypoint is not running"
        argv = [nsenter, f"--target={target}"]
        users = _user_namespace(target)
        if users is not None:
            argv += [f"--user=/proc/self/fd/{users}", "--preserve-credentials"]
        argv += [flag for kind, flag in _NAMESPACES if _namespace(target, kind) != _namespace(os.getpid(), kind)]
        workdir = f"--wd={host_path(self.container.root, proc.cwd)}" if proc.cwd else "--wd"
        argv += ["--root", workdir, "--", *proc.argv]
        return _Launch(argv, self.container.root, (users,) if users is not None else ())

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


_NAMESPACES = (("mnt", "--mount"), ("uts", "--uts"), ("ipc", "--ipc"), ("net", "--net"),
               ("pid", "--pid"))
NS_GET_PARENT = 0xB702
"""ioctl on a user namespace's fd: an fd of its parent namespace."""


def _namespace(pid: int, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return ""


def _user_namespace(pid: int) -> int | None:
    """An fd of the user namespace to join for the others of `pid`: on the chain from its own
    up to ours, the one right below ours (bubblewrap, unprivileged, makes its namespaces in
    one user namespace and runs the command in another inside it); None when `pid` is in ours."""
    own = os.stat("/proc/self/ns/user")
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    while not os.path.samestat(os.fstat(fd), own):
        try:
            parent = fcntl.ioctl(fd, NS_GET_PARENT)
        except OSError:  # no parent we may see: join the highest we reached
            return fd
        if os.path.samestat(os.fstat(parent), own):
            os.close(parent)
            return fd
        os.close(fd)
        fd = parent
    os.close(fd)
    return None
