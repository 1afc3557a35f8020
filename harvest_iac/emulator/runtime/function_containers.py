"""One function container: its folder, its process (started only through the launcher) and
its output.

The container runs Modal's own entrypoint, `python -m modal._container_entrypoint`, which
reads its `ContainerArguments` from the file `MODAL_CONTAINER_ARGUMENTS_PATH` names and then
talks to the local Modal like a container talks to Modal's workers. Its root starts with its
image's layers; the deployed code is at /root. Modal's client package (and what it imports)
is mounted into it as on Modal: the folder of this Python's packages that holds `modal`, on
the container Python's path after the image's own packages. A container without network
reaches the local Modal through a unix socket mounted into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harvest_iac.emulator.runtime.launcher import ContainerSpec, HostCommand, Launcher, Mount, host_path
from harvest_iac.emulator.runtime.rootfs import prepare_root

ARGUMENTS_PATH = "/.modal/container_arguments.bin"
CONTROL_DIR = "/__modal/control"
PID_FILE = "pid"
CODE_DIR = "/root"
ENTRYPOINT = ("-m", "modal._container_entrypoint")
_READ_CHUNK = 64 * 1024
STDERR_TAIL = 4096
LEFTOVER_CHECK_S = 1.0


@dataclass(frozen=True)
class ContainerPlan:
    """What a container of a function is, as the API layer describes it (per task)."""

    arguments: bytes
    """The serialized `ContainerArguments`, opaque here."""
    files: Mapping[str, Path] = field(default_factory=dict)
    """Container path -> host file to copy there (the deployed code)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The image's env, Modal's variables, secrets: later wins."""
    workdir: str = CODE_DIR
    layers: Sequence[Path] = ()
    mounts: Sequence[Mount] = ()
    network: bool = True
    control_socket: Path | None = None
    """The local Modal's API on a unix socket: how a container without network reaches it."""
    fill: Callable[[], None] | None = None
    """More of the container's files to write before it starts (in a worker thread)."""
    finish: Callable[[], Awaitable[None]] | None = None
    """Called once the container has exited."""


def visible_path(launcher: Launcher, root: Path, container_path: str) -> str:
    """How the container's process names `container_path`: itself when isolated, else the
    folder under the container's root on the host."""
    return container_path if launcher.isolated else str(host_path(root, container_path))


@functools.cache
def modal_packages() -> Path:
    """The folder of this Python's packages that holds Modal's client."""
    spec = importlib.util.find_spec("modal")
    assert spec is not None and spec.origin is not None, "the modal client is not installed"
    return Path(spec.origin).resolve().parent.parent


def _fill_root(root: Path, plan: ContainerPlan) -> None:
    """The image's files, then the container's own (its arguments, the code) over them."""
    prepare_root(root, plan.layers)
    args = host_path(root, ARGUMENTS_PATH)
    args.parent.mkdir(parents=True, exist_ok=True)
    args.write_bytes(plan.arguments)
    for target, source in plan.files.items():
        dest = host_path(root, str(PurePosixPath("/", target)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    host_path(root, CODE_DIR).mkdir(parents=True, exist_ok=True)


def container_spec(launcher: Launcher, root: Path, plan: ContainerPlan) -> ContainerSpec:
    """The launcher's view of a container: Modal's entrypoint under this Python, the plan's
    env plus where the container finds its arguments and code."""
    env = {"PYTHONUNBUFFERED": "1", **plan.env}  # each line reaches the logs as it is printed
    code = visible_path(launcher, root, CODE_DIR)
    env.update(
        MODAL_CONTAINER_ARGUMENTS_PATH=visible_path(launcher, root, ARGUMENTS_PATH),
        PYTHONPATH=os.pathsep.join(p for p in (code, env.get("PYTHONPATH", "")) if p),
        HOME=code,
    )
    mounts = list(plan.mounts)
    if not launcher.isolated:
        host = os.environ.get("PATH", os.defpath)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), host))
        env["HARVEST_CONTAINER_ROOT"] = str(root)
    elif not plan.network and plan.control_socket is not None:
        mounts.append(Mount(plan.control_socket.parent, CONTROL_DIR))
        env["MODAL_SERVER_URL"] = f"unix:{CONTROL_DIR}/{plan.control_socket.name}"
    return ContainerSpec(
        root=root, argv=[launcher.python, *ENTRYPOINT], layers=plan.layers, env=env,
        workdir=plan.workdir, mounts=mounts, network=plan.network, packages=[modal_packages()],
    )


class Container:
    """A started container process; `exited` is set once it is gone and its output read."""

    def __init__(self, root: Path, on_output: Callable[[int, str], None]) -> None:
        self.root = root
        self._on_output = on_output
        self._process: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.stderr_tail = b""
        self.command: HostCommand | None = None
        """How its process was started (`modal container exec` starts others alike)."""
        self.isolated = False
        self._main: int | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def main_pid(self) -> int | None:
        """The host pid of the container's own first process (Modal's entrypoint): the
        launched process itself, or, isolated, the first of its descendants that is not the
        launcher's (bubblewrap's monitor and its init)."""
        if self._main is None and self.pid is not None:
            self._main = _first_non_launcher(self.pid) if self.isolated else self.pid
        return self._main

    async def start(self, launcher: Launcher, plan: ContainerPlan) -> None:
        await asyncio.to_thread(_fill_root, self.root, plan)
        if plan.fill is not None:
            await asyncio.to_thread(plan.fill)
        command = launcher.prepare(container_spec(launcher, self.root, plan))
        self.command, self.isolated = command, launcher.isolated
        self._process = await asyncio.create_subprocess_exec(
            *command.argv, env=command.env, cwd=str(command.cwd),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        (self.root.parent / PID_FILE).write_text(str(self._process.pid))

    async def wait(self) -> int:
        """Reap the process and read its output to the end (briefly: a leftover child may
        hold the pipes open)."""
        proc = self._process
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        pumps = asyncio.gather(self._pump(proc.stdout, 1), self._pump(proc.stderr, 2))
        exit = asyncio.ensure_future(proc.wait())  # done once it exited and its pipes closed
        while not (await asyncio.wait({exit}, timeout=LEFTOVER_CHECK_S))[0]:
            if proc.returncode is not None:  # processes it started hold its output open:
                _kill_group(proc.pid)  # they end with the container, as in Modal's
        self.returncode = exit.result()
        try:
            await asyncio.wait_for(pumps, 2.0)
        except asyncio.TimeoutError:
            pass
        self.exited.set()
        return self.returncode

    async def _pump(self, reader: asyncio.StreamReader, fd: int) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            if fd == 2:
                self.stderr_tail = (self.stderr_tail + chunk)[-STDERR_TAIL:]
            self._on_output(fd, chunk.decode("utf-8", errors="replace"))

    def cpu_seconds(self) -> float | None:
        """CPU time the container's main process used so far (None where /proc is absent)."""
        pid = self.main_pid()
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig: int = signal.SIGKILL) -> None:
        """Signal the container's processes (safe to repeat): SIGKILL ends the container
        whole; another signal goes to its main process's group (isolated, the launcher's
        own processes would die of it and take the container down at once)."""
        proc = self._process
        if proc is None or proc.returncode is not None:
            return
        target = proc.pid if sig == signal.SIGKILL else self.main_pid() or proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(target), sig)

    def remove(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _first_non_launcher(pid: int) -> int | None:
    """Down the chain of first children from `pid`, the first process that is not
    bubblewrap (None while it has not started yet)."""
    current: int | None = pid
    while current is not None and _name(current) == "bwrap":
        current = min(_children(current), default=None)
    return current


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: look at every process
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(stat.parent.name))
        return found


def remove_leftovers(container_dir: Path) -> None:
    """Folders of containers an earlier local Modal left behind (it was killed): their
    processes, if still running Modal's entrypoint, are killed; the folders go."""
    if not container_dir.is_dir():
        return
    for folder in (f for f in container_dir.iterdir() if f.is_dir()):
        try:
            pid = int((folder / PID_FILE).read_text())
            if ENTRYPOINT[1].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(folder, ignore_errors=True)
