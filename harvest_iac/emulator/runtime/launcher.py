"""The container launcher: the only code that knows how a container's process is started.

One narrow interface, `Launcher.prepare(ContainerSpec) -> HostCommand`: what the container
is (its root folder, image layers, mounts, env, workdir, network, argv) in, the host command
that runs it out. Callers start and supervise the process themselves; they never build a
host command line of their own.

`BwrapLauncher` isolates with bubblewrap: the container's root folder is its `/`, the host's
system folders (`/usr`, `/etc`) and Python installation are read-only, each mount is at its
path, the image's Python packages are on the container Python's path (then the spec's
`packages`, read-only), and the container has
its own PID, IPC and UTS namespaces (and network namespace, so no network, when asked), no
capabilities and a session of its own; it dies with the process that started it.

`HostLauncher` runs the process on the host, not isolated: the container's workdir is a
folder under its root, mounts are not placed at their paths, the image's package folders are
on `PYTHONPATH`, and the network is open.

`choose_launcher()` picks bubblewrap when it works here, else the host launcher with a
one-line warning; `HARVEST_ISOLATION=host|bubblewrap` overrides.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harvest_iac.emulator.runtime.fs_tools import resolve_in_root
from harvest_iac.emulator.runtime.rootfs import (
    prepare_root,
    python_environment,
    root_site_packages,
    site_dirs,
)
from harvest_iac.errors import HarvestError

ISOLATION_ENV = "HARVEST_ISOLATION"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HOST_BASICS = ("LANG", "LC_ALL", "TZ", "TERM")
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PROC_READ_ONLY = ("sys", "irq", "bus", "fs")
_warned = False


class LauncherError(HarvestError):
    """The isolation asked for (HARVEST_ISOLATION) cannot be had here."""


@dataclass(frozen=True)
class Mount:
    """A host folder seen at `target` inside the container."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that makes one container, independent of how it is isolated."""

    root: Path
    """The container's own writable root folder on the host (what a filesystem snapshot captures)."""
    argv: Sequence[str]
    layers: Sequence[Path] = ()
    """The image's layer folders, bottom first; each holds files at their container paths."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The image's env, then the container's own (secrets, Modal's variables): later wins."""
    workdir: str = "/root"
    mounts: Sequence[Mount] = ()
    network: bool = True
    hostname: str = "modal"
    packages: Sequence[Path] = ()
    """Host folders of Python packages the container's Python sees read-only, after the
    image's own (Modal's client in function containers, mounted as on Modal)."""


@dataclass(frozen=True)
class HostCommand:
    """What to exec on the host to run a container: argv, its environment, its cwd."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Launcher(Protocol):
    """Turns a container into a host command."""

    name: str
    isolated: bool
    python: str
    """The Python interpreter of a container, as its processes name it."""

    def prepare(self, spec: ContainerSpec) -> HostCommand: ...


def host_path(root: Path, container_path: str) -> Path:
    """Where a container path lives under the container's root folder (symlinks are
    followed inside the root, never out of it)."""
    return resolve_in_root(root, container_path)


class HostLauncher:
    """Runs containers as host processes: no isolation (the README says so)."""

    name = "host"
    isolated = False
    python = sys.executable

    def prepare(self, spec: ContainerSpec) -> HostCommand:
        """The container's packages are this Python's own (`spec.packages` are not added)."""
        prepare_root(spec.root, spec.layers)
        cwd = host_path(spec.root, spec.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        home = host_path(spec.root, "/root")
        home.mkdir(parents=True, exist_ok=True)
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env = {k: v for k, v in os.environ.items() if k in _HOST_BASICS}
        env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + path, HOME=str(home))
        env.update(spec.env)
        packages = [*site_dirs(spec.layers), *root_site_packages(spec.root)]
        python_path = _joined(spec.env.get("PYTHONPATH", ""), *(str(p) for p in packages))
        if python_path:
            env["PYTHONPATH"] = python_path
        return HostCommand(argv=list(spec.argv), env=env, cwd=cwd)


class BwrapLauncher:
    """Runs containers under bubblewrap (see the module's docstring for what they get)."""

    name = "bubblewrap"
    isolated = True

    def __init__(self, bwrap: str) -> None:
        self.bwrap = bwrap
        self.python = python_environment(None, []).python

    def prepare(self, spec: ContainerSpec) -> HostCommand:
        root = spec.root
        prepare_root(root, spec.layers)
        packages = site_dirs(spec.layers)
        site_targets = [f"/__modal/site/{i}" for i in range(len(packages))]
        package_targets = [f"/__modal/packages/{i}" for i in range(len(spec.packages))]
        py = python_environment(root, site_targets, package_targets)
        argv = [self.bwrap, "--bind", str(root), "/", "--ro-bind", "/usr", "/usr"]
        if py.own_usr_local:
            argv += ["--bind", str(root / "usr" / "local"), "/usr/local"]
        argv += ["--ro-bind", "/etc", "/etc"]
        argv += _system_dirs(root)
        if not py.prefix.is_relative_to("/usr"):
            argv += ["--ro-bind", str(py.prefix), str(py.prefix)]
        argv += ["--dev", "/dev", "--proc", "/proc"]
        argv += _proc_masks()
        argv += ["--tmpfs", "/__modal"]
        for source, target in zip([*packages, *spec.packages], [*site_targets, *package_targets]):
            argv += ["--ro-bind", str(source), target]
        for source, target in py.binds:
            argv += ["--ro-bind", str(source), target]
        for mount in spec.mounts:
            argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.target]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", spec.hostname,
                 "--new-session", "--die-with-parent", "--cap-drop", "ALL"]
        if not spec.network:
            argv.append("--unshare-net")
        argv += ["--dir", spec.workdir, "--chdir", spec.workdir, "--", *spec.argv]
        env = {k: v for k, v in os.environ.items() if k in _HOST_BASICS}
        env.update(PATH=CONTAINER_PATH, HOME="/root", HOSTNAME=spec.hostname)
        env.update(py.env)
        env.update(spec.env)
        if "PYTHONPATH" in py.env:
            env["PYTHONPATH"] = _joined(spec.env.get("PYTHONPATH", ""), py.env["PYTHONPATH"])
        return HostCommand(argv=argv, env=env, cwd=root)


def _joined(*paths: str) -> str:
    """A search path of the non-empty entries, in order."""
    return os.pathsep.join(p for p in paths if p)


def _system_dirs(root: Path) -> list[str]:
    """/tmp and /root in the container's root, and /bin, /lib, ... as on the host: the same
    symlinks (into /usr), or read-only binds."""
    for name, mode in (("tmp", 0o1777), ("root", 0o700)):
        if not (root / name).is_dir():
            (root / name).mkdir()
            (root / name).chmod(mode)
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        host = Path("/", name)
        if host.is_symlink():
            inside = root / name
            if not inside.is_symlink() and not inside.exists():
                inside.symlink_to(os.readlink(host))
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    return args


def _proc_masks() -> list[str]:
    """What Docker makes read-only in /proc: a container's root must not change the host's
    kernel settings (sysctls, IRQs, sysrq) through it."""
    args: list[str] = []
    for name in _PROC_READ_ONLY:
        if Path("/proc", name).exists():
            args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    if Path("/proc/sysrq-trigger").exists():
        args += ["--ro-bind", "/dev/null", "/proc/sysrq-trigger"]
    return args


@functools.cache
def _bwrap_problem(bwrap: str | None) -> str | None:
    """Why bubblewrap cannot isolate here, or None when a trial container runs."""
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    trial = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--unshare-net", "--unshare-ipc", "--unshare-uts", "--new-session",
             "--die-with-parent", "--cap-drop", "ALL", "--", "true"]
    try:
        done = subprocess.run(trial, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not run: {exc}"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"bubblewrap cannot create a container here: {reason}"
    return None


def choose_launcher(environ: Mapping[str, str] | None = None) -> Launcher:
    """Bubblewrap when it works here, else the host launcher (with one warning per process).
    `HARVEST_ISOLATION=host` or `=bubblewrap` decides instead."""
    global _warned
    wanted = (os.environ if environ is None else environ).get(ISOLATION_ENV, "").strip().lower()
    if wanted == "host":
        return HostLauncher()
    if wanted not in ("", "auto", "bubblewrap", "bwrap"):
        raise LauncherError(f"{ISOLATION_ENV}={wanted}: use host, bubblewrap or auto")
    bwrap = shutil.which("bwrap")
    problem = _bwrap_problem(bwrap)
    if problem is None:
        assert bwrap is not None
        return BwrapLauncher(bwrap)
    if wanted in ("bubblewrap", "bwrap"):
        raise LauncherError(f"{ISOLATION_ENV}={wanted}, but {problem}")
    if not _warned:
        _warned = True
        print(f"warning: {problem}: the local Modal runs sandbox and function code as host "
              "processes, NOT isolated (install bubblewrap: apt-get install bubblewrap)",
              file=sys.stderr)
    return HostLauncher()
