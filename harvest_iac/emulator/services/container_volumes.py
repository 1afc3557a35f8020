"""Volumes in function containers: copied into the container's folder at their mount paths
when it starts; `vol.commit()` in the container (and its exit) writes its changes back,
`vol.reload()` brings in what others committed meanwhile (keeping its own changes).

An isolating launcher shows each copy at its mount path; the host launcher leaves it under
the container's folder (`$HARVEST_CONTAINER_ROOT/<mount path>`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest_iac.emulator.runtime.launcher import Mount, host_path
from harvest_iac.emulator.services.sandbox_volumes import (
    DIRECTORY,
    Changes,
    Entry,
    VolumeLink,
    commit,
    copy_in,
    read_entries,
    read_links,
    refresh,
    scan,
)

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

# The volumes of the function containers running now, by task id.
LIVE: dict[str, ContainerVolumes] = {}


@dataclass(eq=False)
class ContainerVolumes:
    """One container's volumes."""

    emu: Emulator
    task_id: str
    root: Path
    links: list[VolumeLink]

    @classmethod
    def open(cls, emu: Emulator, task_id: str, root: Path, volume_mounts: Any) -> ContainerVolumes:
        volumes = cls(emu, task_id, root, read_links(emu.store, volume_mounts))
        LIVE[task_id] = volumes
        return volumes

    def folder(self, link: VolumeLink) -> Path:
        return host_path(self.root, link.mount_path)

    def mounts(self) -> list[Mount]:
        return [Mount(self.folder(link), link.mount_path, link.read_only) for link in self.links]

    def fill(self) -> None:
        """Copy each volume in (file I/O only: the runtime runs it in a thread)."""
        for link in self.links:
            copy_in(self.emu.store, link, self.folder(link))

    def _mine(self, volume_id: str) -> list[VolumeLink]:
        return [link for link in self.links if link.volume_id == volume_id]

    async def commit(self, volume_id: str | None = None) -> None:
        """Write what the container changed in its volumes (all, or one) back to them."""
        for link in self.links if volume_id is None else self._mine(volume_id):
            if link.read_only:
                continue
            changes = await asyncio.to_thread(scan, self.emu.store, link, self.folder(link))
            with self.emu.store.tx():
                commit(self.emu.store, link, changes, int(time.time()))
            _seen(link, changes)

    async def reload(self, volume_id: str) -> None:
        """Bring the volume's latest files in, keeping what the container changed itself."""
        for link in self._mine(volume_id):
            changes = await asyncio.to_thread(scan, self.emu.store, link, self.folder(link))
            latest = read_entries(self.emu.store, link.volume_id)
            await asyncio.to_thread(refresh, self.emu.store, link, self.folder(link), changes, latest)

    async def close(self) -> None:
        """The container exited: commit, and forget it."""
        try:
            await self.commit()
        finally:
            LIVE.pop(self.task_id, None)


def _seen(link: VolumeLink, changes: Changes) -> None:
    """After a commit, what the container was given includes its own changes."""
    for path in changes.removed:
        for gone in [p for p in link.seed if p == path or p.startswith(path + "/")]:
            del link.seed[gone]
    for path in changes.dirs:
        link.seed[path] = Entry(DIRECTORY, 0o755)
    link.seed.update(changes.files)
