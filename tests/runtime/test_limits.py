"""An environment's limits hold for function containers as for sandboxes: they count toward
`max_concurrent_tasks` (over it a function's call waits for a task to end, a sandbox is
refused), they are metered at function prices in `billing.summary()`, and once the metered
spend reaches the budget new calls and sandboxes are refused until the budget is cleared."""

from __future__ import annotations

import uuid
from pathlib import Path

import modal
import pytest
from modal.exception import ResourceExhaustedError
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc
from tests.runtime.test_calls import wait_until

APP = Path(__file__).parent / "apps" / "limits_app.py"
FUNCTION_CPU_S, FUNCTION_MEMORY_S = 0.0000131, 0.00000222


def test_function_containers_are_capped_metered_and_held_to_the_budget(local_modal: object) -> None:
    env = "rt-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(env)
    modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent)
    raw_rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(current_name=env, max_concurrent_tasks=1))

    def fn(name: str) -> modal.Function:
        return modal.Function.from_name("rt-limits", name, environment_name=env)

    notes = modal.Dict.from_name("rt-limit-notes", environment_name=env, create_if_missing=True)
    app = modal.App.lookup("rt-limits", environment_name=env)
    first = fn("first").spawn("a", 3.0)
    wait_until(lambda: "a-start" in notes)
    second = fn("second").spawn("b", 0.0)  # another function: its container waits for the task
    with pytest.raises(ResourceExhaustedError, match="limit of 1 concurrent tasks"):
        modal.Sandbox.create("true", app=app)
    assert (first.get(timeout=60), second.get(timeout=60)) == ("a", "b")
    assert notes["b-start"] >= notes["a-end"]  # one after the other, neither failed

    summary = modal.Environment.from_name(env).billing.summary()
    assert summary.metered_cost_breakdown["CPU"] > 0 and summary.metered_cost_breakdown["Memory"] > 0
    assert float(summary.metered_cost) >= 3 * 0.5 * (FUNCTION_CPU_S + FUNCTION_MEMORY_S)  # 3s at least

    env_id = modal.Environment.from_name(env).hydrate().object_id
    raw_rpc("EnvironmentSetBudget", api_pb2.EnvironmentSetBudgetRequest(
        environment_id=env_id, cycle_budget_dollars=0.000001))
    budget = raw_rpc("EnvironmentGetBudget", api_pb2.EnvironmentGetBudgetRequest(environment_id=env_id))
    assert budget.spend_limit_reached  # type: ignore[attr-defined]
    with pytest.raises(ResourceExhaustedError, match="reached its budget of"):
        fn("first").remote("c", 0.0)
    with pytest.raises(ResourceExhaustedError, match="reached its budget of"):
        modal.Sandbox.create("true", app=app)
    raw_rpc("EnvironmentSetBudget", api_pb2.EnvironmentSetBudgetRequest(environment_id=env_id, clear_budget=True))
    assert fn("first").remote("c", 0.0) == "c"
