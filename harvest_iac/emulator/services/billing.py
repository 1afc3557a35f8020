"""Billing: the published rates (the seed's prices, the same `estimate.Prices` harvest plans
with) and each environment's metered spend, from what its sandboxes and function containers
ran: seconds from start to end x the resources they asked for, with Modal's minimums, at
sandbox and function prices. A function container's run is recorded when it starts and when
it ends (`Meter`, the scheduler's accounting)."""

from __future__ import annotations

from datetime import datetime, timezone
import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.estimate import PRICES, usage_parts

if TYPE_CHECKING:
    from harvest_iac.emulator.runtime.scheduler import Task
    from harvest_iac.emulator.server import Emulator
    from harvest_iac.emulator.services.sandboxes import Metered

SCHEMA = """
CREATE TABLE IF NOT EXISTS function_container_runs (
    task_id TEXT PRIMARY KEY, environment_id TEXT NOT NULL, function_id TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, cpu REAL, memory_mib INTEGER, gpu TEXT
);
CREATE INDEX IF NOT EXISTS function_container_runs_by_env
    ON function_container_runs (environment_id, started_at);
"""


def cycle_bounds(start: datetime | None = None) -> tuple[float, float]:
    """The billing cycle (a calendar month, UTC) that starts at `start`, or the current one."""
    first = (start or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return first.timestamp(), after.timestamp()


def function_usage(store: Any, env_id: str, start: float, end: float) -> list[Metered]:
    """Each function container's running time within [start, end) (a running one up to now),
    with its requested cpu, memory and GPU."""
    from harvest_iac.emulator.services.sandboxes import Metered

    now = time.time()
    rows = store.all(
        "SELECT * FROM function_container_runs WHERE environment_id = ? AND started_at < ? "
        "AND (finished_at IS NULL OR finished_at > ?)", env_id, end, start)
    return [Metered(max(min(r["finished_at"] or now, end) - max(r["started_at"], start), 0.0),
                    r["cpu"], r["memory_mib"], r["gpu"]) for r in rows]


def spend(emu: Emulator, env_id: str, start: float, end: float) -> dict[str, float]:
    """Metered cost in [start, end), by resource ("CPU", "Memory", "GPU <type>")."""
    from harvest_iac.emulator.services.sandboxes import sandbox_usage

    out: dict[str, float] = {}
    runs = [(m, True) for m in sandbox_usage(emu.store, env_id, start, end)]
    runs += [(m, False) for m in function_usage(emu.store, env_id, start, end)]
    for m, sandbox in runs:
        for key, value in usage_parts(m.seconds, m.cpu, m.memory_mib, m.gpu, sandbox=sandbox).items():
            out[key] = out.get(key, 0.0) + value
    return out


def cycle_usage(emu: Emulator, env_id: str) -> float:
    """This billing cycle's metered spend of an environment, in dollars."""
    return sum(spend(emu, env_id, *cycle_bounds()).values())


def _money(value: float) -> str:
    return f"{value:.6f}"


#: The local Modal's one workspace, as `modal.Workspace.from_context()` names it.
WORKSPACE_NAME = "local"


class Meter:
    """The scheduler's accounting: function containers start only within their environment's
    limits (see `limits.task_room`), and each one's run is recorded for billing."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def room(self, environment_id: str) -> int | None:
        from harvest_iac.emulator.services.limits import task_room

        return task_room(self.emu, environment_id)

    def started(self, task: Task) -> None:
        config = task.pool.config
        res = config.resources
        self.emu.store.run(
            "INSERT OR REPLACE INTO function_container_runs (task_id, environment_id, function_id,"
            " started_at, cpu, memory_mib, gpu) VALUES (?, ?, ?, ?, ?, ?, ?)",
            task.task_id, config.environment_id, config.function_id, task.started_at,
            res.cpu, res.memory_mib, res.gpu)

    def ended(self, task: Task) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # the local Modal stopped meanwhile
            self.emu.store.run("UPDATE function_container_runs SET finished_at = ? WHERE task_id = ?",
                               time.time(), task.task_id)


class BillingService(Service):
    """The workspace's name, its billing rates, and each environment's metered spend."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        emu.runtime.accounting = Meter(emu)
        emu.environment_delete_hooks.append(self._drop_environment)

    def _drop_environment(self, env_id: str) -> None:
        self.store.run("DELETE FROM function_container_runs WHERE environment_id = ?", env_id)

    async def on_start(self) -> None:
        """Containers an earlier local Modal left running are gone: their runs end now."""
        self.store.run("UPDATE function_container_runs SET finished_at = ? WHERE finished_at IS NULL",
                       time.time())

    def WorkspaceNameLookup(self, req: Any, ctx: Ctx) -> api_pb2.WorkspaceNameLookupResponse:
        return api_pb2.WorkspaceNameLookupResponse(workspace_name=WORKSPACE_NAME, username=WORKSPACE_NAME)

    def WorkspaceBillingRates(
        self, req: api_pb2.WorkspaceBillingRatesRequest, ctx: Ctx
    ) -> api_pb2.WorkspaceBillingRatesResponse:
        rates = PRICES.rates()
        formatted = "\n".join(f"{key}: ${value}/hour" for key, value in sorted(rates.items()))
        return api_pb2.WorkspaceBillingRatesResponse(rates=rates, formatted=formatted)

    def EnvironmentBillingSummary(
        self, req: api_pb2.EnvironmentBillingSummaryRequest, ctx: Ctx
    ) -> api_pb2.EnvironmentBillingSummaryResponse:
        if self.store.one("SELECT 1 FROM environments WHERE id = ?", req.environment_id) is None:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{req.environment_id}' not found")
        given = req.start_timestamp.ToDatetime(timezone.utc) if req.HasField("start_timestamp") else None
        start, end = cycle_bounds(given)
        parts = spend(self.emu, req.environment_id, start, end)
        resp = api_pb2.EnvironmentBillingSummaryResponse(
            metered_cost=_money(sum(parts.values())),
            metered_cost_breakdown={k: _money(v) for k, v in sorted(parts.items())},
        )
        resp.start_timestamp.FromSeconds(int(start))
        resp.end_timestamp.FromSeconds(int(end))
        return resp
