"""Schedules: each deployed `modal.Cron` and `modal.Period` function is called at its times
while the local Modal runs.

A cron fires at the times its 5-field expression names in its timezone; a period fires
every period after it was deployed (years and months as calendar steps, like dateutil's
`relativedelta`). A redeploy that keeps a schedule keeps its times; stopping the app (or
deploying it without the schedule) stops it. Ticks missed while the local Modal was down are
not made up: after a start, each schedule fires at its next time from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter
from dateutil.relativedelta import relativedelta

from harvest_iac.emulator.runtime.calls import Pulse

log = logging.getLogger("harvest.emulator.runtime")
IDLE_WAIT_S = 3600.0


@dataclass(frozen=True)
class Cron:
    expression: str
    timezone: str = "UTC"

    def next_after(self, moment: datetime, anchor: datetime) -> datetime:
        local = moment.astimezone(ZoneInfo(self.timezone or "UTC"))
        following = croniter(self.expression, local).get_next(datetime)
        return datetime.fromtimestamp(following.timestamp(), timezone.utc)


@dataclass(frozen=True)
class Period:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: float = 0.0

    def _at(self, anchor: datetime, k: int) -> datetime:
        """Anchor plus k periods: calendar years and months, then a fixed duration."""
        fixed = timedelta(weeks=self.weeks, days=self.days, hours=self.hours, minutes=self.minutes,
                          seconds=self.seconds)
        calendar: datetime = anchor + relativedelta(years=k * self.years, months=k * self.months)
        return calendar + k * fixed

    def next_after(self, moment: datetime, anchor: datetime) -> datetime:
        """The first of anchor + k periods (k >= 1) after `moment`."""
        if self._at(anchor, 1) <= anchor:
            raise ValueError("a period must be positive")
        k = 1
        if not (self.years or self.months) and moment > anchor:
            k = max(1, int((moment - anchor) / (self._at(anchor, 1) - anchor)))
        while self._at(anchor, k) <= moment:
            k += 1
        return self._at(anchor, k)


Schedule = Cron | Period


@dataclass(eq=False)
class Entry:
    """One scheduled function of one app."""

    function_id: str
    app_id: str
    name: str
    schedule: Schedule
    anchor: datetime
    next_at: datetime


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Ticker:
    """Every deployed schedule, and the loop that fires them."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._changed = Pulse()
        self._loop: asyncio.Task[None] | None = None

    def set_app(self, app_id: str, schedules: Mapping[str, tuple[str, Schedule]]) -> None:
        """The app's scheduled functions now: {function id: (name, schedule)}. Unchanged
        schedules keep their times; the others start from now."""
        now = _now()
        kept = {fid: e for fid, e in self.entries.items() if e.app_id == app_id}
        for fid in kept.keys() - schedules.keys():
            del self.entries[fid]
        for fid, (name, schedule) in schedules.items():
            old = kept.get(fid)
            if old is not None and old.schedule == schedule:
                old.name = name
                continue
            try:
                first = schedule.next_after(now, now)
            except (ValueError, KeyError) as exc:
                log.warning("schedule of %s not understood, it will not fire: %s", name, exc)
                continue
            self.entries[fid] = Entry(fid, app_id, name, schedule, now, first)
        self._changed.fire()

    def drop_app(self, app_id: str) -> None:
        self.set_app(app_id, {})

    def start(self, fire: Callable[[Entry], None]) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run(fire))

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()

    async def _run(self, fire: Callable[[Entry], None]) -> None:
        while True:
            now = _now()
            for entry in sorted(self.entries.values(), key=lambda e: e.next_at):
                if entry.next_at > now:
                    break
                entry.next_at = entry.schedule.next_after(now, entry.anchor)
                try:
                    fire(entry)
                except Exception:  # one schedule's failure must not stop the others
                    log.exception("schedule of %s did not fire", entry.name)
            upcoming = min((e.next_at for e in self.entries.values()), default=None)
            wait = (upcoming - _now()).total_seconds() if upcoming else IDLE_WAIT_S
            await self._changed.wait(min(max(wait, 0.0), IDLE_WAIT_S))
