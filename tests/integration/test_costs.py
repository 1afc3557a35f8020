"""Cost through the local Modal: the plan prices the seed's example ($24/month) at the target's
published rates, warns over the budget, and shows the environment's actual spend, which the
local Modal meters from what its sandboxes ran (seconds x requested resources)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import modal
import pytest
from google.protobuf import empty_pb2

from harvest_iac.estimate import money
from tests.conftest import raw_rpc
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
settings:
  budget: 20
images:
  base: {{from: debian_slim}}
sandboxes:
  agent:
    image: base
    cpu: 0.5
    memory: 1GiB
    expected: {{runs_per_day: 1000, duration: 30s}}
"""


def _plan(path: Path) -> tuple[int, str]:
    proc = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode, proc.stdout


def test_the_seed_example_its_budget_and_metered_spend(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = tmp_path / "env.yaml"
    path.write_text(BODY.format(env=env))
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    code, text = _plan(path)
    assert code == 0
    assert "Note: cost: sandbox.agent expected $24.12/month: 1,000 runs a day, 30s each, at 0.5 CPU and " \
           "1024 MiB" in text
    assert "prices: the target's published rates (WorkspaceBillingRates)" in text
    assert "Warning: the estimate of $24.12/month exceeds the budget of $20.00 per billing cycle" in text
    assert "so far this cycle" in text and "(the last billing cycle)" in text

    # two sandboxes run and end: the local Modal meters them at the published rates
    app = modal.App.lookup("agents", environment_name=env)
    for _ in range(2):
        modal.Sandbox.create("sleep", "1", app=app, cpu=2.0, memory=4096).wait()
    summary = modal.Environment.from_name(env).billing.summary()
    cpu, memory = summary.metered_cost_breakdown["CPU"], summary.metered_cost_breakdown["Memory"]
    assert cpu > 0 and summary.metered_cost == pytest.approx(cpu + memory, abs=Decimal("0.000002"))
    # sandbox prices: memory costs this much of CPU for 2 cores and 4 GiB (each part is given
    # to the micro-dollar, so the ratio holds within that rounding)
    ratio = (4 * 0.00000672) / (2 * 0.00003942)
    assert float(memory) == pytest.approx(float(cpu) * ratio, abs=1e-6 * (1 + ratio))
    assert float(summary.metered_cost) >= 2 * 1 * (2 * 0.00003942 + 4 * 0.00000672)  # 2 runs of 1s at least
    listed = raw_rpc("EnvironmentList", empty_pb2.Empty()).items  # type: ignore[attr-defined]
    usage = next(e for e in listed if e.name == env).current_cycle_usage
    assert usage == pytest.approx(float(summary.metered_cost), abs=1e-6)
    code, text = _plan(path)
    assert f"{money(usage)} so far this cycle" in text
