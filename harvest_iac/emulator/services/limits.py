"""An environment's limits on what starts in it.

* `max_concurrent_tasks`: sandboxes and function containers count alike. At the cap a new
  sandbox is refused with RESOURCE_EXHAUSTED (`modal.exception.ResourceExhaustedError`), as
  Modal does; a function's inputs wait in its queue until a task ends, as Modal's autoscaler
  does (its containers are not started, its calls do not fail).
* `budget`: once this billing cycle's metered spend reaches it, nothing new starts: a sandbox or
  a function call is refused with RESOURCE_EXHAUSTED, queued inputs wait, and what runs goes on
  running. Raising or clearing the budget lets them start again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from harvest_iac.emulator.services.billing import cycle_usage
from harvest_iac.emulator.services.environments import environment_settings

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator


def running_tasks(emu: Emulator, env_id: str) -> int:
    """The environment's running sandboxes and function containers."""
    from harvest_iac.emulator.services.sandboxes import running_sandboxes

    return running_sandboxes(emu.store, env_id) + emu.runtime.running_in(env_id)


def budget_reached(emu: Emulator, env_id: str) -> str | None:
    """Why nothing new may start in the environment (its spend reached its budget), or None."""
    budget = environment_settings(emu.store, env_id).get("budget")
    if budget is None:
        return None
    spent = cycle_usage(emu, env_id)
    if spent < budget:
        return None
    return (f"Environment '{_name(emu, env_id)}' has reached its budget of ${budget:.2f} for this "
            f"billing cycle (spent ${spent:.4f}); raise or clear the budget to start more")


def task_room(emu: Emulator, env_id: str) -> int | None:
    """How many more containers may start in the environment now (None: no limit)."""
    if budget_reached(emu, env_id):
        return 0
    cap = environment_settings(emu.store, env_id).get("max_concurrent_tasks")
    return None if cap is None else int(cap) - running_tasks(emu, env_id)


def check_can_start(emu: Emulator, env_id: str, *, sandbox: bool) -> None:
    """Refuse a new sandbox (over the budget or the task cap) or a new function call (over the
    budget) with RESOURCE_EXHAUSTED."""
    reason = budget_reached(emu, env_id)
    if reason is None and sandbox:
        cap = environment_settings(emu.store, env_id).get("max_concurrent_tasks")
        if cap is not None and running_tasks(emu, env_id) >= cap:
            reason = (f"Environment '{_name(emu, env_id)}' is at its limit of {cap} concurrent tasks "
                      "(max_concurrent_tasks); wait for running tasks to finish or raise the limit")
    if reason is not None:
        raise GRPCError(Status.RESOURCE_EXHAUSTED, reason)


def _name(emu: Emulator, env_id: str) -> str:
    row = emu.store.one("SELECT name FROM environments WHERE id = ?", env_id)
    return str(row["name"]) if row else env_id
