"""harvest apply end to end, each run a new `harvest` process against the local Modal:
converges, then plan says "No changes"; every kind of edit; guards; the lock; saved plans;
SIGKILL at every step; no secret value anywhere."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import modal
import pytest

from harvest_iac.lease import lease_advance, lease_read, lease_state
from harvest_iac.modal_backend import ModalOps
from tests.conftest import REPO
from tests.integration.helpers import (
    GITHUB_VALUE,
    SECRET_VALUE,
    SMALL,
    assert_no_secret,
    harvest,
    write_env,
)


def apply_ok(*args: str, **kw: object) -> str:
    proc = harvest("apply", *args, "--auto-approve", **kw)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_secret(proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def plan_text(*args: str, **kw: object) -> tuple[int, str]:
    proc = harvest("plan", *args, "--detailed-exitcode", **kw)  # type: ignore[arg-type]
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    assert_no_secret(proc.stdout, proc.stderr)
    return proc.returncode, proc.stdout


def test_example_environments_apply_then_no_changes(tmp_path: Path) -> None:
    """The README's main job: apply the examples to the local Modal; plan again: no changes."""
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    out = apply_ok("--target", "local", cwd=tmp_path)
    assert "Apply complete!" in out
    code, text = plan_text("--target", "local", cwd=tmp_path)
    assert code == 0, text
    assert text.count("No changes.") == 2
    # nothing under .harvest (rendered code, state record, emulator files but its own
    # database) holds a secret value
    for path in (tmp_path / ".harvest").rglob("*"):
        if path.is_file() and not path.name.startswith("state.sqlite3"):
            assert_no_secret(path.read_bytes().decode("latin-1"))


def test_every_kind_of_edit_converges(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0
    edited = SMALL.replace('"*/30 * * * *"', '"0 9 * * *"\n    timezone: Europe/Paris') \
        .replace("retries: 3", "retries: {{max: 5, backoff: 2.0}}") \
        .replace("pip: [requests]", "pip: [requests, httpx]") \
        .replace("cpu: 0.5", "cpu: 1.0") \
        .replace("    protect: false", "    protect: true")
    edited += "  extra:\n    every: 2h\n    task: reload-volumes\n"
    edited = edited.replace("volumes:\n  agent-state:", "volumes:\n  logs: {{version: 1}}\n  agent-state:")
    write_env(tmp_path, env, edited)
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path,
                           env={"OPENAI_API_KEY": "sk-new-DO-NOT-PRINT-1"})
    assert code == 2
    for expected in ['~ schedule = "*/30 * * * *" -> "0 9 * * *"', '~ timezone = "UTC" -> "Europe/Paris"',
                     "# image.base will be updated in place", "~ cpu = 0.5 -> 1.0",
                     "~ protect = false -> true", "# volume.logs will be created",
                     "# cron.extra will be created", "# secret.openai will be updated in place",
                     "~ values = (sensitive value)  # changed",
                     "runs every 2h from each deploy"]:
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert "sk-new-DO-NOT-PRINT-1" not in text
    apply_ok(str(path), "--target", "modal", cwd=tmp_path,
             env={"OPENAI_API_KEY": "sk-new-DO-NOT-PRINT-1"})
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path,
                           env={"OPENAI_API_KEY": "sk-new-DO-NOT-PRINT-1"})
    assert code == 0, text
    info = modal.Function.from_name("agents", "refresh-environment", environment_name=env).info()
    assert info.schedule == "Cron('0 9 * * *', Europe/Paris)" and info.max_retries == 5


def test_deletes_need_allow_destroy_and_protected_volumes_stay(tmp_path: Path,
                                                              modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    without = SMALL.replace("  scratch:\n    version: 1\n    protect: false\n", "") \
        .replace("  agent-state:\n    version: 2\n", "  agent-state-2:\n    version: 2\n")
    without = without.replace("{{/mnt/shared: agent-state}}", "{{/mnt/shared: agent-state-2}}")
    write_env(tmp_path, env, without)
    refused = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert refused.returncode == 1
    assert "volume.agent-state is protected" in refused.stderr
    assert "pass --allow-destroy volume.scratch" in refused.stderr
    assert "Traceback" not in refused.stderr
    names = {v.name for v in modal.Volume.objects.list(environment_name=env)}
    assert {"agent-state", "scratch"} <= names and "agent-state-2" not in names  # nothing touched
    # keep the protected volume declared; allow the scratch delete
    keep = without.replace("volumes:\n", "volumes:\n  agent-state:\n    version: 2\n", 1)
    write_env(tmp_path, env, keep)
    apply_ok(str(path), "--target", "modal", "--allow-destroy", "volume.scratch", cwd=tmp_path)
    names = {v.name for v in modal.Volume.objects.list(environment_name=env)}
    assert names >= {"agent-state", "agent-state-2"} and "scratch" not in names


def test_no_change_apply_makes_no_mutating_call(tmp_path: Path, modal_environment: str,
                                                local_modal: object) -> None:
    path = write_env(tmp_path, modal_environment)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    volumes = sorted(v.object_id for v in modal.Volume.objects.list(environment_name=modal_environment))
    before = local_modal.stats()["calls"]  # type: ignore[attr-defined]
    out = apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    after = local_modal.stats()["calls"]  # type: ignore[attr-defined]
    assert "No changes." in out
    called = {m for m in after if after[m] != before.get(m, 0)}
    reads = {"EnvironmentList", "VolumeList", "SecretList", "VolumeGetOrCreate", "VolumeGetFile2",
             "AppGetByDeploymentName", "AppGetTags", "AppDeploymentHistory", "AppGetLayout", "FunctionGet",
             "ImageFromId", "WorkspaceBillingRates", "EnvironmentBillingSummary"}
    assert called and called <= reads, called - reads
    # VolumeGetOrCreate was a lookup (of the state volume): nothing was created
    assert sorted(v.object_id for v in modal.Volume.objects.list(
        environment_name=modal_environment)) == volumes


def test_without_a_terminal_apply_needs_auto_approve(tmp_path: Path) -> None:
    path = write_env(tmp_path, "never-made")
    proc = harvest("apply", str(path), "--target", "local", cwd=tmp_path)
    assert proc.returncode == 1 and "--auto-approve" in proc.stderr
    assert not (tmp_path / ".harvest").exists()  # nothing started, nothing touched


def test_missing_variable_fails_before_any_change(tmp_path: Path, modal_environment: str) -> None:
    path = write_env(tmp_path, modal_environment)
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path,
                   unset=("HARVEST_GITHUB_TOKEN",))
    assert proc.returncode == 1
    assert "environment variable HARVEST_GITHUB_TOKEN is not set" in proc.stderr
    assert f"{path}:" in proc.stderr
    assert modal.Volume.objects.list(environment_name=modal_environment) == []


def test_lock_held_by_another_apply(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    locks = ModalOps(env).lock_dict()
    assert lease_advance(locks, "agents", 0, {"owner": "alice@ci (pid 1)", "run_url": "https://ci/run/7",
                                              "id": "x", "acquired_at": 0, "deadline": 9e12})
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve",
                   "--lock-timeout", "1s", cwd=tmp_path)
    assert proc.returncode == 1
    assert "held by alice@ci (pid 1)" in proc.stderr and "https://ci/run/7" in proc.stderr
    assert "harvest unlock" in proc.stderr
    unlock = harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path)
    assert unlock.returncode == 0 and "Lock freed." in unlock.stdout
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert lease_state(lease_read(locks, "agents")[1], time.time()) == "free"  # released


def test_two_concurrent_applies_one_waits(tmp_path: Path, modal_environment: str) -> None:
    import subprocess
    import sys
    import os
    from tests.integration.helpers import SECRETS_ENV

    path = write_env(tmp_path, modal_environment)
    env = {**os.environ, **SECRETS_ENV}
    cmd = [sys.executable, "-m", "harvest_iac", "apply", str(path), "--target", "modal",
           "--auto-approve", "--lock-timeout", "60s"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    joined = "".join(o + e for o, e in outs)
    assert joined.count("Apply complete!") + joined.count("No changes.") == 2
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0


def test_saved_plan_refused_when_live_state_moved(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    saved = tmp_path / "plan.json"
    proc = harvest("plan", str(path), "--target", "modal", "-o", str(saved), cwd=tmp_path)
    assert proc.returncode == 0
    assert_no_secret(saved.read_text())
    modal.Volume.objects.create("agent-state", version=2, environment_name=env)
    stale = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert stale.returncode == 1 and "moved since the plan was saved" in stale.stderr
    proc = harvest("plan", str(path), "--target", "modal", "-o", str(saved), cwd=tmp_path)
    apply_ok(str(saved), "--target", "modal", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0


# One kill point per step: after its change in Modal but before the state record is
# written (the worst moment), or right after the record is written.
KILL_POINTS = ["before:volumes", "after:volumes", "saved:secrets", "after:app.agents deploy",
               "after:snapshots"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_each_step_then_rerun_converges(tmp_path: Path, point: str,
                                                   local_modal: object) -> None:
    import uuid

    env = "kill-" + uuid.uuid4().hex[:8]
    body = SMALL + "snapshots:\n  warm:\n    image: base\n    setup: [\"echo warm > warm.txt\"]\n"
    path = write_env(tmp_path, env, body)
    killed = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path,
                     env={"HARVEST_KILL_AT": point})
    assert killed.returncode == -9, killed.stderr
    # the lock of the killed run is still there: a new apply names it; unlock frees it
    blocked = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert blocked.returncode == 1 and "harvest unlock" in blocked.stderr
    assert harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path).returncode == 0
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 0, text
    assert {v.name for v in modal.Volume.objects.list(environment_name=env)} == {
        "agent-state", "scratch", "harvest-state"}


def test_json_plan_file_and_outputs_hold_no_secret(tmp_path: Path, modal_environment: str) -> None:
    path = write_env(tmp_path, modal_environment)
    js = harvest("plan", str(path), "--target", "modal", "--json", cwd=tmp_path)
    data = json.loads(js.stdout)
    assert_no_secret(js.stdout, json.dumps(data))
    out = apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert SECRET_VALUE not in out and GITHUB_VALUE not in out
    for f in (tmp_path / ".harvest").rglob("*.py"):
        assert_no_secret(f.read_text())


def test_dotenv_secret_keys_and_value_changes(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    (tmp_path / ".env.registry").write_text("# registry login\nexport REGISTRY_USER=bot\n"
                                            "REGISTRY_PASSWORD='pw-DO-NOT-PRINT-9'\n")
    body = SMALL.replace("secrets:\n  openai:",
                         "secrets:\n  registry:\n    from_dotenv: .env.registry\n  openai:")
    path = write_env(tmp_path, env, body)
    out = apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert "pw-DO-NOT-PRINT-9" not in out
    keys = {s.name: s for s in modal.Secret.objects.list(environment_name=env)}
    assert "registry" in keys
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 0, text
    # Re-created by hand with another value: drift, and apply puts the declared values back.
    modal.Secret.objects.delete("registry", environment_name=env)
    modal.Secret.objects.create("registry", {"REGISTRY_USER": "bot", "REGISTRY_PASSWORD": "hand"},
                                environment_name=env)
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 2 and "re-created outside of harvest" in text, text
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0
    app = modal.App.lookup("reader", create_if_missing=True, environment_name=env)
    sb = modal.Sandbox.create("sh", "-c", "echo $REGISTRY_PASSWORD", app=app, secrets=[
        modal.Secret.from_name("registry", environment_name=env)])
    sb.wait()
    assert sb.stdout.read().strip() == "pw-DO-NOT-PRINT-9"
    (tmp_path / ".env.registry").write_text("REGISTRY_USER=bot\nREGISTRY_PASSWORD=pw2-DO-NOT-7\n")
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 2 and "# secret.registry will be updated in place" in text
    assert "pw2-DO-NOT-7" not in text
    (tmp_path / ".env.registry").unlink()
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert proc.returncode == 1 and "cannot read dotenv file" in proc.stderr


def test_snapshot_and_secret_key_edits(tmp_path: Path, modal_environment: str) -> None:
    from harvest_iac.state import STATE_VOLUME, StateRecord, state_path

    env = modal_environment
    snap = "snapshots:\n  warm:\n    image: base\n    setup: [\"echo one > warm.txt\"]\n    keep: 2\n"
    path = write_env(tmp_path, env, SMALL + snap)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)

    def record() -> StateRecord:
        vol = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
        return StateRecord.from_json(b"".join(vol.read_file(state_path("agents"))).decode())

    first = record().resources["snapshot.warm"].snapshots
    assert len(first) == 1
    edited = (SMALL + snap.replace("echo one", "echo two")).replace(
        "from_env: [OPENAI_API_KEY]", "from_env: [OPENAI_API_KEY, OPENAI_ORG]")
    write_env(tmp_path, env, edited)
    extra = {"OPENAI_ORG": "org-1"}
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path, env=extra)
    assert code == 2
    assert "# (re-made: its recipe changed)" in text
    assert '~ keys = ["OPENAI_API_KEY"] -> ["OPENAI_API_KEY", "OPENAI_ORG"]' in text
    apply_ok(str(path), "--target", "modal", cwd=tmp_path, env=extra)
    second = record().resources["snapshot.warm"].snapshots
    assert len(second) == 2 and second[0] == first[0] and second[1].image_id != first[0].image_id
    # the plan reads the secret's key names back from Modal: both keys are there now
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path, env=extra)[0] == 0


def test_dockerfile_change_redeploys(tmp_path: Path, modal_environment: str) -> None:
    (tmp_path / "agent.Dockerfile").write_text("FROM python:3.11-slim\n")
    body = ("harvest: 1\nenvironment: {env}\napp: agents\nimages:\n  custom:\n"
            "    from: dockerfile\n    path: agent.Dockerfile\n"
            "crons:\n  tick:\n    every: 1h\n    image: custom\n    task: reload-volumes\n")
    path = write_env(tmp_path, modal_environment, body)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0
    (tmp_path / "agent.Dockerfile").write_text("FROM python:3.11-slim\nRUN pip install httpx\n")
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 2 and "~ dockerfile_sha256 = " in text and "# app.agents will be updated" in text
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0


def test_volume_version_change_replaces_only_with_permission(tmp_path: Path,
                                                             modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    before = {v.name: v.object_id for v in modal.Volume.objects.list(environment_name=env)}
    write_env(tmp_path, env, SMALL.replace("  scratch:\n    version: 1", "  scratch:\n    version: 2"))
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 2 and "# volume.scratch must be replaced" in text
    assert "~ version = 1 -> 2  # forces replacement" in text
    refused = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert refused.returncode == 1 and "--allow-destroy volume.scratch" in refused.stderr
    apply_ok(str(path), "--target", "modal", "--allow-destroy", "volume.scratch", cwd=tmp_path)
    after = {v.name: v.object_id for v in modal.Volume.objects.list(environment_name=env)}
    assert after["scratch"] != before["scratch"] and after["agent-state"] == before["agent-state"]
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0


def test_app_with_nothing_left_to_deploy_is_stopped_only_with_permission(
        tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    apply_ok(str(path), "--target", "modal", cwd=tmp_path)
    bare = SMALL.split("sandboxes:")[0]
    write_env(tmp_path, env, bare)
    code, text = plan_text(str(path), "--target", "modal", cwd=tmp_path)
    assert code == 2 and "# app.agents will be destroyed" in text
    assert "# cron.refresh-environment will be destroyed" in text
    refused = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert refused.returncode == 1 and "--allow-destroy app.agents" in refused.stderr
    apply_ok(str(path), "--target", "modal", "--allow-destroy", "app.agents", cwd=tmp_path)
    assert plan_text(str(path), "--target", "modal", cwd=tmp_path)[0] == 0
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("agents", "refresh-environment", environment_name=env).hydrate()


def test_in_a_terminal_apply_asks_and_only_yes_applies(tmp_path: Path,
                                                       modal_environment: str) -> None:
    """Through a pseudo-terminal: the plan is shown, `no` cancels, `yes` applies."""
    from tests.integration.helpers import in_terminal

    path = write_env(tmp_path, modal_environment)

    def run(answer: str) -> tuple[int, str]:
        return in_terminal("apply", str(path), "--target", "modal", answer=answer,
                           when=b"Only 'yes' will be accepted", cwd=tmp_path)

    code, out = run("no")
    assert code == 1 and "Plan: 8 to add, 0 to change, 0 to destroy." in out and "apply cancelled; nothing was changed" in out
    assert modal.Volume.objects.list(environment_name=modal_environment) == []
    code, out = run("yes")
    assert code == 0 and "Apply complete!" in out
    assert_no_secret(out)
