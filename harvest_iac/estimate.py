"""Next fire times of schedules and monthly cost estimates. Pure: `now` is passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
DEFAULT_CPU = 0.125  # Modal's defaults when a function asks for nothing
DEFAULT_MEMORY_MIB = 128
STARTER_PLAN_CRON_LIMIT = 5


@dataclass(frozen=True)
class Prices:
    """Per-second prices (the seed's; a setting, not a law of nature)."""

    sandbox_cpu_core_s: float = 0.00003942
    sandbox_mem_gib_s: float = 0.00000672
    function_cpu_core_s: float = 0.0000131
    function_mem_gib_s: float = 0.00000222


PRICES = Prices()


def next_cron_fires(schedule: str, timezone: str, now: datetime, count: int = 3) -> list[datetime]:
    """The next `count` fire times of a cron string in its timezone (aware datetimes)."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    it = croniter(schedule, now.astimezone(tz))
    return [it.get_next(datetime) for _ in range(count)]


def cron_runs_per_month(schedule: str, timezone: str, now: datetime) -> float:
    """Fires in a month, counted over one week from `now` and scaled (cheap for `* * * * *`)."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    start = now.astimezone(tz)
    end = start + timedelta(days=7)
    it = croniter(schedule, start)
    n = 0
    while it.get_next(datetime) <= end and n < 20000:
        n += 1
    return n * (HOURS_PER_MONTH / (7 * 24))


def function_run_cost(seconds: float, cpu: float | None, memory_mib: int | None,
                      prices: Prices = PRICES) -> float:
    cores = cpu if cpu is not None else DEFAULT_CPU
    gib = (memory_mib if memory_mib is not None else DEFAULT_MEMORY_MIB) / 1024.0
    return seconds * (cores * prices.function_cpu_core_s + gib * prices.function_mem_gib_s)


def sandbox_hour_cost(cpu: float | None, memory_mib: int | None, prices: Prices = PRICES) -> float:
    cores = cpu if cpu is not None else DEFAULT_CPU
    gib = (memory_mib if memory_mib is not None else DEFAULT_MEMORY_MIB) / 1024.0
    return 3600.0 * (cores * prices.sandbox_cpu_core_s + gib * prices.sandbox_mem_gib_s)


def money(amount: float) -> str:
    if amount >= 100:
        return f"${amount:,.0f}"
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


def format_fire_times(times: list[datetime]) -> str:
    return ", ".join(t.strftime("%Y-%m-%d %H:%M %Z") for t in times)
