"""`settings:`: the environment's own settings applied, read back live, changed field by
field, drift when changed by hand (modal CLI, raw RPC), undeclared keys left alone; and the
local Modal holding them (EnvironmentList, EnvironmentGetBudget) and enforcing
`max_concurrent_tasks` on sandboxes with RESOURCE_EXHAUSTED."""

from __future__ import annotations

from pathlib import Path

import modal
import pytest
from google.protobuf import empty_pb2
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
settings:
  web_suffix: {suffix}
  max_concurrent_tasks: {tasks}
  budget: {budget}
  image_builder_version: "2025.06"
  block_unauthenticated_resources: true
volumes:
  data: {{}}
"""


def _write(tmp_path: Path, env: str, *, suffix: str = "agents-a", tasks: int = 2,
           budget: int | str = 50) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(BODY.format(env=env, suffix=suffix, tasks=tasks, budget=budget))
    return path


def _plan(path: Path) -> tuple[int, str]:
    proc = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode, proc.stdout


def _apply(path: Path) -> None:
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _listed(env: str) -> api_pb2.EnvironmentListItem:
    items = raw_rpc("EnvironmentList", empty_pb2.Empty()).items  # type: ignore[attr-defined]
    return next(i for i in items if i.name == env)


def test_settings_apply_change_and_drift(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _write(tmp_path, env)
    code, text = _plan(path)
    assert code == 2 and "+ max_concurrent_tasks = 2" in text and "+ budget = 50.0" in text, text
    _apply(path)
    item = _listed(env)
    assert (item.webhook_suffix, item.max_concurrent_tasks, item.cycle_budget_dollars,
            item.image_builder_version, item.block_unauthenticated_resources) == (
        "agents-a", 2, 50.0, "2025.06", True)
    assert _plan(path)[0] == 0  # a new process: no changes

    _write(tmp_path, env, tasks=5, budget=80)
    code, text = _plan(path)
    assert code == 2
    assert "# settings." + env + " will be updated in place" in text
    assert "~ max_concurrent_tasks = 2 -> 5" in text and "~ budget = 50.0 -> 80.0" in text
    assert "web_suffix" not in text.split("~ settings")[1].split("}")[0]  # unchanged keys not shown
    _apply(path)
    assert _plan(path)[0] == 0

    # by hand: the web suffix with the modal CLI, the task cap and the GPU cap (not declared,
    # so not managed) through the API
    modal_cli("environment", "update", env, "--set-web-suffix", "by-hand")
    raw_rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(
        current_name=env, max_concurrent_tasks=9, max_concurrent_gpus=4))
    code, text = _plan(path)
    assert code == 2
    drift, actions = text.split("harvest will perform the following actions:")
    assert f"# settings.{env} was changed outside of harvest" in drift
    assert '~ web_suffix = "agents-a" -> "by-hand"' in drift and "~ max_concurrent_tasks = 5 -> 9" in drift
    assert '~ web_suffix = "by-hand" -> "agents-a"' in actions
    assert "~ max_concurrent_tasks = 9 -> 5" in actions
    assert "max_concurrent_gpus" not in text
    _apply(path)
    assert _plan(path)[0] == 0
    item = _listed(env)
    assert (item.webhook_suffix, item.max_concurrent_tasks, item.max_concurrent_gpus) == ("agents-a", 5, 4)

    # `budget: none` clears the budget, and then there is nothing to do
    _write(tmp_path, env, tasks=5, budget="none")
    code, text = _plan(path)
    assert code == 2 and '~ budget = 80.0 -> "none"' in text, text
    _apply(path)
    assert not _listed(env).HasField("cycle_budget_dollars")
    assert _plan(path)[0] == 0


def test_the_local_modal_keeps_settings_and_enforces_the_task_cap(modal_environment: str) -> None:
    env = modal_environment
    env_id = modal.Environment.from_name(env).hydrate().object_id
    raw_rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(current_name=env, max_concurrent_tasks=1))
    raw_rpc("EnvironmentSetBudget", api_pb2.EnvironmentSetBudgetRequest(
        environment_id=env_id, cycle_budget_dollars=12.5))
    budget = raw_rpc("EnvironmentGetBudget", api_pb2.EnvironmentGetBudgetRequest(environment_id=env_id))
    assert budget.cycle_budget_dollars == 12.5 and not budget.spend_limit_reached  # type: ignore[attr-defined]
    app = modal.App.lookup("capped", create_if_missing=True, environment_name=env)
    first = modal.Sandbox.create("sleep", "30", app=app)
    try:
        assert _listed(env).current_concurrent_tasks == 1
        with pytest.raises(modal.exception.ResourceExhaustedError, match="limit of 1 concurrent tasks"):
            modal.Sandbox.create("sleep", "30", app=app)
    finally:
        first.terminate()
    second = modal.Sandbox.create("true", app=app)  # room again once the first has ended
    second.wait()
    raw_rpc("EnvironmentSetBudget", api_pb2.EnvironmentSetBudgetRequest(environment_id=env_id,
                                                                          clear_budget=True))
    assert not _listed(env).HasField("cycle_budget_dollars")
