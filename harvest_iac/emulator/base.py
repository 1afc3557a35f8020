"""What the local Modal's API services share: the call context and the service base.

Kept apart from `server.py` so that services never import the module that imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harvest_iac.emulator.auth import WORKSPACE_CALLER, Caller

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator
    from harvest_iac.emulator.store import Store

IMAGE_BUILDER_VERSION = "2025.06"
DEFAULT_ENVIRONMENT = "main"


def streaming(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a service method as a raw-stream handler: `async def X(self, stream, ctx)`."""
    fn.__harvest_streaming__ = True  # type: ignore[attr-defined]
    return fn


@dataclass
class Ctx:
    """What a handler knows about the call it serves."""

    method: str
    metadata: Mapping[str, str]
    emu: Emulator
    peer_token: str | None = None
    caller: Caller = WORKSPACE_CALLER

    @property
    def store(self) -> Store:
        return self.emu.store


class Service:
    """Base of the emulator's services. `schema` is DDL run once at start."""

    schema: str = ""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store

    async def on_start(self) -> None:
        """Called once the server listens (its URL is known)."""
