"""What containers print, per app: the lines `modal run`, `modal serve` and `modal app logs`
read back, in memory (the newest lines of each app; a restart forgets them)."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from harvest_iac.emulator.runtime.calls import Pulse

STDOUT = 1
STDERR = 2
KEEP_LINES = 10_000


@dataclass(frozen=True)
class LogLine:
    entry: int
    task_id: str
    function_id: str
    fd: int
    data: str
    at: float


@dataclass(eq=False)
class AppLog:
    """One app's recent output; `done` once the app has stopped (no more lines will come)."""

    lines: collections.deque[LogLine] = field(
        default_factory=lambda: collections.deque(maxlen=KEEP_LINES)
    )
    last_entry: int = 0
    done: bool = False
    changed: Pulse = field(default_factory=Pulse)

    def after(self, entry: int) -> list[LogLine]:
        return [line for line in self.lines if line.entry > entry]


class LogBook:
    """Every app's log."""

    def __init__(self) -> None:
        self.apps: dict[str, AppLog] = {}

    def app(self, app_id: str) -> AppLog:
        return self.apps.setdefault(app_id, AppLog())

    def write(self, app_id: str, task_id: str, function_id: str, fd: int, data: str) -> None:
        log = self.app(app_id)
        log.last_entry += 1
        log.lines.append(LogLine(log.last_entry, task_id, function_id, fd, data, time.time()))
        log.changed.fire()

    def close(self, app_id: str) -> None:
        log = self.app(app_id)
        log.done = True
        log.changed.fire()
