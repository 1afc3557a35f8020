"""The container launcher: the only code that knows how a container's process is started.

One narrow interface, `Launcher.prepare(ContainerSpec) -> HostCommand`: what the container
is (its root folder, image layers, mounts, env, workdir, network, argv) in, the host command
that runs it out. Callers start and supervise the process themselves; they never build a
host command line of their own.

`HostLauncher` runs the process on the host, not isolated: the container's workdir is a
folder under its root, mounts are not placed at their paths, and the network is open.
An isolating launcher (bubblewrap) implements the same interface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol


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

    def prepare(self, spec: ContainerSpec) -> HostCommand: ...


def host_path(root: Path, container_path: str) -> Path:
    """Where a container path lives under the container's root folder."""
    rel = PurePosixPath("/", container_path).relative_to("/")
    return root / rel


class HostLauncher:
    """Runs containers as host processes: no isolation (the README says so)."""

    name = "host"
    isolated = False

    def prepare(self, spec: ContainerSpec) -> HostCommand:
        cwd = host_path(spec.root, spec.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
        env.update(spec.env)
        return HostCommand(argv=list(spec.argv), env=env, cwd=cwd)
