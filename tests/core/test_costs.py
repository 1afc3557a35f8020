"""Prices and estimates: the seed's $24/month example, Modal's minimums, GPUs, the published
rates read back, the fallback to built-in prices (said so), actual spend and the budget."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from harvest_iac.diff import Desired, DiffInput, compare
from harvest_iac.estimate import PRICES, Prices, usage_cost, usage_parts
from harvest_iac.live import Live, LiveBilling, LiveEnvironment

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
#: The seed's headline example: 1,000 sandbox runs a day, 30 s each, 0.5 CPU, 1 GiB.
SEED = {"image": "base", "cpu": 0.5, "memory_mib": 1024, "timeout": 300,
        "expected": {"runs_per_day": 1000, "duration": 30}}


def _plan(sandbox: dict[str, object], live: Live, budget: float | None = None) -> object:
    desired = [Desired("sandbox.agent", "sandbox", "agent", sandbox)]
    if budget is not None:
        desired.append(Desired("settings.dev", "settings", "dev", {"budget": budget}, {"budget": budget}))
    return compare(DiffInput(environment="dev", app="app", source="dev.yaml", target="local",
                             desired={d.address: d for d in desired}, app_digest="sha256:a",
                             secret_values={}, now=NOW), live)


def test_the_seed_example_costs_about_24_dollars_a_month() -> None:
    per_run = usage_cost(30, 0.5, 1024, None, sandbox=True)
    assert per_run == pytest.approx(30 * (0.5 * 0.00003942 + 1 * 0.00000672))
    monthly = 1000 * (365 / 12) * per_run
    assert monthly == pytest.approx(24.12, abs=0.005)
    plan = _plan(SEED, Live("dev", False))
    assert "cost: sandbox.agent expected $24.12/month: 1,000 runs a day, 30s each, at 0.5 CPU and " \
           "1024 MiB" in plan.notes  # type: ignore[attr-defined]


def test_minimums_defaults_and_gpus() -> None:
    # asked for less than Modal bills: 0.125 cores and 0.25 GiB
    assert usage_cost(1, 0.05, 128, None, sandbox=False) == pytest.approx(
        0.125 * 0.0000131 + 0.25 * 0.00000222)
    assert usage_parts(3600, None, None, "T4:2", sandbox=True)["GPU T4"] == pytest.approx(2 * 0.59)
    assert usage_parts(3600, None, None, "l4", sandbox=True)["GPU L4"] == pytest.approx(0.80)


def test_published_rates_are_read_back_and_used() -> None:
    doubled = Prices(sandbox_cpu_core_s=2 * PRICES.sandbox_cpu_core_s, sandbox_mem_gib_s=2 * PRICES.sandbox_mem_gib_s)
    read = PRICES.from_rates(doubled.rates(), "published")
    assert read is not None and read.sandbox_cpu_core_s == pytest.approx(doubled.sandbox_cpu_core_s)
    plan = _plan(SEED, Live("dev", False, billing=LiveBilling(rates=doubled.rates())))
    notes = " ".join(plan.notes)  # type: ignore[attr-defined]
    assert "$48.23/month" in notes and "prices: the target's published rates (WorkspaceBillingRates)" in notes


@pytest.mark.parametrize(("rates", "why"), [
    (None, "the target publishes no rates"),
    ({"cpu": "0.05"}, "the target's rates lack memory, sandbox_cpu, sandbox_memory"),
])
def test_without_usable_rates_the_built_in_prices_are_used_and_said(rates: dict[str, str] | None,
                                                                    why: str) -> None:
    plan = _plan(SEED, Live("dev", False, billing=LiveBilling(rates=rates)))
    notes = " ".join(plan.notes)  # type: ignore[attr-defined]
    assert "$24.12/month" in notes and f"prices: harvest's built-in list prices ({why})" in notes


def test_actual_spend_beside_the_estimate_and_the_budget_warning() -> None:
    live = Live("dev", True, details=LiveEnvironment("en-1", {"budget": 20.0}, current_cycle_usage=3.5),
                billing=LiveBilling(last_cycle="2026-10", last_cycle_spend=17.25))
    plan = _plan(SEED, live)
    assert "spend: $17.25 in 2026-10 (the last billing cycle), $3.50 so far this cycle" in plan.notes  # type: ignore[attr-defined]
    assert plan.warnings == ("the estimate of $24.12/month exceeds the budget of $20.00 per billing cycle "  # type: ignore[attr-defined]
                             "(settings.budget): raise the budget or lower the usage",)
    assert not _plan(SEED, live, budget=30.0).warnings  # type: ignore[attr-defined]
