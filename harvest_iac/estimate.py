"""Next fire times of schedules and monthly cost estimates. Pure: `now` is passed in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
DEFAULT_CPU = 0.125  # Modal's defaults when a function asks for nothing
DEFAULT_MEMORY_MIB = 128
MIN_BILLED_CPU = 0.125  # Modal bills at least this much of each, whatever is asked for
MIN_BILLED_MEMORY_GIB = 0.25
STARTER_PLAN_CRON_LIMIT = 5

#: GPU prices per GPU-hour (the seed's for T4 and L4; the others from Modal's pricing page).
GPU_HOUR: dict[str, float] = {
    "T4": 0.59, "L4": 0.80, "A10": 1.10, "A10G": 1.10, "L40S": 1.95, "A100": 2.10,
    "A100-40GB": 2.10, "A100-80GB": 2.50, "H100": 3.95, "H200": 4.54, "B200": 6.25,
}

#: The keys of Modal's published rates (WorkspaceBillingRates: per unit per hour, as decimal
#: strings) harvest reads, and the attribute of `Prices` each one sets (per second).
RATE_KEYS: dict[str, str] = {
    "cpu": "function_cpu_core_s",
    "memory": "function_mem_gib_s",
    "sandbox_cpu": "sandbox_cpu_core_s",
    "sandbox_memory": "sandbox_mem_gib_s",
}
GPU_RATE_PREFIX = "gpu."


@dataclass(frozen=True)
class Prices:
    """Per-second prices (the seed's by default; `from_rates` reads the target's) and where
    they came from."""

    sandbox_cpu_core_s: float = 0.00003942
    sandbox_mem_gib_s: float = 0.00000672
    function_cpu_core_s: float = 0.0000131
    function_mem_gib_s: float = 0.00000222
    gpu_hour: Mapping[str, float] = field(default_factory=lambda: dict(GPU_HOUR))
    source: str = "harvest's built-in list prices"

    def rates(self) -> dict[str, str]:
        """As WorkspaceBillingRates answers: per unit per hour, decimal strings."""
        out = {key: _decimal(getattr(self, attr) * 3600) for key, attr in RATE_KEYS.items()}
        out.update({GPU_RATE_PREFIX + gpu: _decimal(price) for gpu, price in self.gpu_hour.items()})
        return out

    def from_rates(self, rates: Mapping[str, str], source: str) -> Prices | None:
        """These prices with the published `rates` (per hour) in place, or None when a rate
        harvest needs is missing or not a number."""
        try:
            per_second = {attr: float(rates[key]) / 3600 for key, attr in RATE_KEYS.items()}
            gpus = {key.removeprefix(GPU_RATE_PREFIX): float(value) for key, value in rates.items()
                    if key.startswith(GPU_RATE_PREFIX)}
        except (KeyError, ValueError):
            return None
        return replace(self, **per_second, gpu_hour={**self.gpu_hour, **gpus}, source=source)


def _decimal(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".")


PRICES = Prices()


def gpu_kind(gpu: str | None) -> tuple[str, int]:
    """`"a100-80gb:2"` -> ("A100-80GB", 2); no GPU -> ("", 0)."""
    if not gpu:
        return "", 0
    name, _, count = gpu.partition(":")
    return name.upper().rstrip("!+"), int(count or 1)


def usage_parts(seconds: float, cpu: float | None, memory_mib: int | None, gpu: str | None,
                prices: Prices = PRICES, *, sandbox: bool) -> dict[str, float]:
    """What `seconds` of one container (or sandbox) cost at these resources, by resource
    ("CPU", "Memory", "GPU T4"), with Modal's minimums (0.125 cores, 0.25 GiB) and defaults
    (0.125 cores, 128 MiB)."""
    cores = max(cpu if cpu is not None else DEFAULT_CPU, MIN_BILLED_CPU)
    gib = max((memory_mib if memory_mib is not None else DEFAULT_MEMORY_MIB) / 1024.0, MIN_BILLED_MEMORY_GIB)
    cpu_s, mem_s = ((prices.sandbox_cpu_core_s, prices.sandbox_mem_gib_s) if sandbox
                    else (prices.function_cpu_core_s, prices.function_mem_gib_s))
    parts = {"CPU": seconds * cores * cpu_s, "Memory": seconds * gib * mem_s}
    kind, count = gpu_kind(gpu)
    if count:
        parts[f"GPU {kind}"] = seconds * count * prices.gpu_hour.get(kind, 0.0) / 3600
    return parts


def describe_resources(cpu: float | None, memory_mib: int | None, gpu: str | None) -> str:
    """`0.5 CPU and 1024 MiB`, `... and 2 x A100-80GB`, for the assumptions printed with a cost."""
    text = f"{cpu if cpu is not None else DEFAULT_CPU} CPU and " \
           f"{memory_mib if memory_mib is not None else DEFAULT_MEMORY_MIB} MiB"
    kind, count = gpu_kind(gpu)
    return f"{text} and {count} x {kind}" if count else text


def usage_cost(seconds: float, cpu: float | None, memory_mib: int | None, gpu: str | None,
               prices: Prices = PRICES, *, sandbox: bool) -> float:
    """The total of `usage_parts`."""
    return sum(usage_parts(seconds, cpu, memory_mib, gpu, prices, sandbox=sandbox).values())


def next_cron_fires(schedule: str, timezone: str, now: datetime, count: int = 3) -> list[datetime]:
    """The next `count` fire times of a cron string in its timezone (aware datetimes)."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    it = croniter(schedule, now.astimezone(tz))
    return [it.get_next(datetime) for _ in range(count)]


#: A fixed week the longest gap between a schedule's runs is measured from (deterministic:
#: the default snapshot lifetime derived from it is part of the generated code).
_REFERENCE = datetime(2025, 1, 6)


def longest_interval(schedule: str, timezone: str) -> float:
    """The longest time between two runs of a cron string, in seconds (over two months from a
    fixed date, at most 2,000 runs)."""
    from croniter import croniter

    start = _REFERENCE.replace(tzinfo=ZoneInfo(timezone))
    it = croniter(schedule, start)
    previous, longest = start, 0.0
    for _ in range(2000):
        fire = it.get_next(datetime)
        longest = max(longest, (fire - previous).total_seconds())
        if fire - start > timedelta(days=62):
            break
        previous = fire
    return longest


def run_gap(schedule: str | None, timezone: str | None, every_seconds: float | None) -> float:
    """The longest time between two runs of a cron: a cron string's, or a period's."""
    if every_seconds is not None:
        return float(every_seconds)
    return longest_interval(schedule or "", timezone or "UTC")


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
                      prices: Prices = PRICES, gpu: str | None = None) -> float:
    return usage_cost(seconds, cpu, memory_mib, gpu, prices, sandbox=False)


def sandbox_hour_cost(cpu: float | None, memory_mib: int | None, prices: Prices = PRICES,
                      gpu: str | None = None) -> float:
    return usage_cost(3600.0, cpu, memory_mib, gpu, prices, sandbox=True)


def money(amount: float) -> str:
    if amount >= 100:
        return f"${amount:,.0f}"
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


def format_fire_times(times: list[datetime]) -> str:
    return ", ".join(t.strftime("%Y-%m-%d %H:%M %Z") for t in times)
