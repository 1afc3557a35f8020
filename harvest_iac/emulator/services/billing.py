"""Billing: the published rates (the seed's prices, the same `estimate.Prices` harvest plans
with) and each environment's metered spend, from what its sandboxes ran (seconds x requested
resources, with Modal's minimums). Function containers are not metered yet."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.estimate import PRICES, usage_parts

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator


def cycle_bounds(start: datetime | None = None) -> tuple[float, float]:
    """The billing cycle (a calendar month, UTC) that starts at `start`, or the current one."""
    first = (start or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return first.timestamp(), after.timestamp()


def spend(emu: Emulator, env_id: str, start: float, end: float) -> dict[str, float]:
    """Metered cost in [start, end), by resource ("CPU", "Memory", "GPU <type>")."""
    from harvest_iac.emulator.services.sandboxes import sandbox_usage

    out: dict[str, float] = {}
    for m in sandbox_usage(emu.store, env_id, start, end):
        for key, value in usage_parts(m.seconds, m.cpu, m.memory_mib, m.gpu, sandbox=True).items():
            out[key] = out.get(key, 0.0) + value
    return out


def cycle_usage(emu: Emulator, env_id: str) -> float:
    """This billing cycle's metered spend of an environment, in dollars."""
    return sum(spend(emu, env_id, *cycle_bounds()).values())


def _money(value: float) -> str:
    return f"{value:.6f}"


#: The local Modal's one workspace, as `modal.Workspace.from_context()` names it.
WORKSPACE_NAME = "local"


class BillingService(Service):
    """The workspace's name, its billing rates, and each environment's metered spend."""

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
