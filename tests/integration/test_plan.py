"""harvest plan against the local Modal through the real client: creates, imports, drift,
unmanaged objects, outputs, and secret values never printed."""

from __future__ import annotations

import json
from pathlib import Path

import modal
import pytest

from harvest_iac.secrethash import SecretHasher
from harvest_iac.state import ResourceRecord, StateRecord
from tests.conftest import modal_cli
from tests.integration.helpers import (
    write_state_file,
    SECRETS_ENV,
    addresses,
    assert_no_secret,
    harvest,
    plan_for,
    write_env,
)

HASHER = SecretHasher()


def test_empty_environment_plans_everything(tmp_path: Path, local_modal: object) -> None:
    env = "plan-empty"  # never created: the environment itself is planned
    plan = plan_for(write_env(tmp_path, env))
    assert addresses(plan) == {
        "environment.plan-empty": "create",
        "volume.agent-state": "create",
        "volume.scratch": "create",
        "secret.github": "create",
        "secret.openai": "create",
        "image.base": "create",
        "cron.refresh-environment": "create",
        "sandbox.agent": "create",
        "app.agents": "create",
    }
    assert plan.summary.line() == "Plan: 9 to add, 0 to change, 0 to destroy."
    assert not plan.drift and not plan.unmanaged
    cron = next(c for c in plan.changes if c.address == "cron.refresh-environment")
    assert cron.notes[0] == ("next runs: 2026-11-27 22:30 UTC, 2026-11-27 23:00 UTC, "
                             "2026-11-27 23:30 UTC")
    assert "/month" in cron.notes[1]


def test_objects_made_with_the_modal_cli_are_adopted_or_left_alone(
        tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    modal_cli("volume", "create", "agent-state", "--version", "2", "--env", env)
    modal_cli("volume", "create", "scratch", "--version", "2", "--env", env)  # wrong version
    modal_cli("volume", "create", "hand-made", "--env", env)
    modal_cli("secret", "create", "openai", "OPENAI_API_KEY=old", "--env", env)
    modal_cli("secret", "create", "legacy", "X=1", "--env", env)
    plan = plan_for(write_env(tmp_path, env))
    acts = addresses(plan)
    assert acts["volume.agent-state"] == "import"
    assert acts["secret.openai"] == "import"
    assert acts["volume.scratch"] == "replace"
    scratch = next(c for c in plan.changes if c.address == "volume.scratch")
    assert scratch.blocked and "set `version: 2` to adopt it" in scratch.blocked
    assert acts["secret.github"] == "create"
    assert "environment." + env not in acts
    assert plan.unmanaged == ("secret.legacy", "volume.hand-made")
    assert "volume.hand-made" not in acts and "secret.legacy" not in acts


def _record(env: str, app: str, state: StateRecord) -> None:
    write_state_file(env, app, state.to_json().encode())





def test_drift_volume_deleted_secret_recreated_and_key_lost(tmp_path: Path,
                                                            modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    modal.Secret.objects.create("openai", {"OPENAI_API_KEY": "v"}, environment_name=env)
    modal.Secret.objects.create("github", {"GITHUB_TOKEN": "v"}, environment_name=env)
    secrets = {s.name: s for s in modal.Secret.objects.list(environment_name=env)}
    st = StateRecord.new(env, "agents")
    st = st.with_resource("volume.agent-state", ResourceRecord(object_id="vo-gone", spec={
        "version": 2, "protect": True}))
    st = st.with_resource("secret.openai", ResourceRecord(
        object_id="st-old-id", spec={"keys": ["OPENAI_API_KEY"]},
        values_hash=HASHER.hash("openai", {"OPENAI_API_KEY": SECRETS_ENV["OPENAI_API_KEY"]})))
    st = st.with_resource("secret.github", ResourceRecord(
        object_id=secrets["github"].object_id, spec={"keys": ["GITHUB_TOKEN", "EXTRA"]},
        values_hash=HASHER.hash("github", {"GITHUB_TOKEN": SECRETS_ENV["HARVEST_GITHUB_TOKEN"]})))
    _record(env, "agents", st)
    plan = plan_for(path)
    drift = {d.address: d.what for d in plan.drift}
    assert drift["volume.agent-state"] == "was deleted outside of harvest"
    assert drift["secret.openai"] == "was re-created outside of harvest (its values may differ)"
    assert drift["secret.github"] == "lost key(s) EXTRA outside of harvest"
    assert addresses(plan)["volume.agent-state"] == "create"
    # Its values may differ from the declared ones: apply puts them again, though their hash
    # matches the record.
    openai = next(c for c in plan.changes if c.address == "secret.openai")
    assert openai.action.value == "update" and openai.reason.startswith("re-created outside")
    assert [f.path for f in openai.fields] == ["values"]


def test_secret_value_change_is_an_update_without_the_value(tmp_path: Path,
                                                            modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    modal.Secret.objects.create("openai", {"OPENAI_API_KEY": "x"}, environment_name=env)
    item = next(s for s in modal.Secret.objects.list(environment_name=env) if s.name == "openai")
    st = StateRecord.new(env, "agents").with_resource("secret.openai", ResourceRecord(
        object_id=item.object_id, spec={"keys": ["OPENAI_API_KEY"]}))
    st = st.with_resource("secret.openai", ResourceRecord(
        object_id=item.object_id, spec={"keys": ["OPENAI_API_KEY"]},
        values_hash=HASHER.hash("openai", {"OPENAI_API_KEY": "the-old-value"})))
    _record(env, "agents", st)
    plan = plan_for(path)
    change = next(c for c in plan.changes if c.address == "secret.openai")
    assert change.action.value == "update" and change.reason == "values changed"
    assert not any(d.address == "secret.openai" for d in plan.drift)
    same = plan_for(path, {"OPENAI_API_KEY": "the-old-value"})
    assert "secret.openai" not in addresses(same)


def test_missing_variable_is_named_not_a_traceback(tmp_path: Path, local_modal: object) -> None:
    path = write_env(tmp_path, "plan-missing-var")
    proc = harvest("plan", str(path), "--target", "modal", unset=("OPENAI_API_KEY",))
    assert proc.returncode == 0, proc.stderr
    assert "secret.openai: cannot compare values: OPENAI_API_KEY is not set" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_outputs_and_exit_codes_never_show_secret_values(tmp_path: Path,
                                                             local_modal: object) -> None:
    path = write_env(tmp_path, "plan-cli")
    out_file = tmp_path / "plan.json"
    text = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", "-o",
                   str(out_file))
    assert text.returncode == 2, text.stderr
    assert "Plan: 9 to add, 0 to change, 0 to destroy." in text.stdout
    js = harvest("plan", str(path), "--target", "modal", "--json")
    data = json.loads(js.stdout)
    assert data["change_summary"] == {"add": 9, "change": 0, "remove": 0, "import": 0, "forget": 0}
    assert {rc["address"] for rc in data["resource_changes"]} >= {"volume.agent-state",
                                                                   "secret.openai"}
    md = harvest("plan", str(path), "--target", "modal", "--format", "markdown")
    assert md.stdout.startswith("<!-- harvest-plan: plan-cli -->\n### harvest plan\n")
    assert_no_secret(text.stdout, text.stderr, js.stdout, js.stderr, md.stdout, md.stderr,
                     out_file.read_text())
    saved = json.loads(out_file.read_text())
    assert saved["plans"][0]["live_fingerprint"].startswith("sha256:")


@pytest.mark.parametrize("flag", ["--json", "--format=markdown"])
def test_bad_file_is_exit_1_with_position(tmp_path: Path, flag: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("harvest: 1\nenvironment: dev\napp: a\nvolumes:\n  v:\n    versoin: 2\n")
    proc = harvest("plan", str(bad), flag, "--target", "local", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{bad}:6:5:" in proc.stderr or "bad.yaml:6:5:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_manual_modal_deploy_over_the_app_is_drift(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    hand = tmp_path / "hand.py"
    hand.write_text("import modal\napp = modal.App('agents')\n\n"
                    "@app.function(name='refresh-environment', schedule=modal.Period(hours=1))\n"
                    "def f():\n    pass\n")
    modal_cli("deploy", str(hand), "--env", env)
    plan = plan_for(path)
    drift = {d.address: d.what for d in plan.drift}
    assert drift["app.agents"].startswith("was deployed outside of harvest (version 2")
    assert drift["cron.refresh-environment"] == "was changed outside of harvest"
    assert addresses(plan)["app.agents"] == "update"
    again = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not plan_for(path).actionable


def test_transient_errors_are_retried(tmp_path: Path, local_modal: object) -> None:
    """With a quarter of all RPCs failing UNAVAILABLE/INTERNAL, the plan is still right."""
    path = write_env(tmp_path, "plan-flaky")
    clean = plan_for(path)
    faults = local_modal.faults  # type: ignore[attr-defined]
    injected = local_modal.stats()["injected_errors"]  # type: ignore[attr-defined]
    faults.error_rate = 0.25
    try:
        # A plan makes few calls: plan again until some of them really failed (a run without
        # any injected error proves nothing), each plan the same as the clean one.
        for _ in range(20):
            assert addresses(plan_for(path)) == addresses(clean)
            if local_modal.stats()["injected_errors"] > injected:  # type: ignore[attr-defined]
                break
    finally:
        faults.error_rate = 0.0
    assert local_modal.stats()["injected_errors"] > injected  # type: ignore[attr-defined]


def test_unreachable_modal_is_a_clean_error(tmp_path: Path) -> None:
    path = write_env(tmp_path, "plan-down")
    proc = harvest("plan", str(path), "--target", "modal",
                   env={"MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_TOKEN_ID": "ak-x",
                        "MODAL_TOKEN_SECRET": "as-x"})
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("Error: cannot reach Modal at http://127.0.0.1:9")
    assert "Traceback" not in proc.stderr


def test_golden_plan_of_an_empty_environment(tmp_path: Path, local_modal: object) -> None:
    """Text, JSON and Markdown of a real plan (environment never created: deterministic)."""
    from harvest_iac.present import render_json, render_markdown, render_text
    from tests.golden import check_golden

    golden = Path(__file__).parent / "golden"
    path = write_env(tmp_path, "golden-env")
    plan = plan_for(path)
    plan = type(plan)(**{**plan.__dict__, "source": "environments/golden-env.yaml"})
    import re

    def mask(text: str) -> str:  # the rendered code's hash is tested in tests/render
        return re.sub(r'(code_hash"?[ :=]+")sha256:[0-9a-f.]+', r"\1sha256:(code)", text)

    check_golden(golden / "empty.txt", mask(render_text([plan])))
    check_golden(golden / "empty.md", mask(render_markdown([plan])))
    data = json.loads(render_json([plan]))
    data["live_fingerprint"] = "sha256:(varies)"
    for rc in data["resource_changes"]:  # a new salt on every run
        if "values_hash" in rc:
            rc["values_hash"].update(salt="(varies)", digest="(varies)")
    check_golden(golden / "empty.json", mask(json.dumps(data, indent=2, sort_keys=True) + "\n"))


@pytest.mark.parametrize("resources", [
    [], {"volume.agent-state": "a string"}, {"volume": {"spec": {}}},
], ids=["a list", "a string value", "an address without a dot"])
def test_corrupt_state_record_is_one_line(tmp_path: Path, modal_environment: str,
                                          resources: object) -> None:
    path = write_env(tmp_path, modal_environment)
    record = {"format": 1, "environment": modal_environment, "app": "agents", "serial": 3,
              "lineage": "l-1", "salt": "00", "resources": resources}
    write_state_file(modal_environment, "agents", json.dumps(record).encode())
    proc = harvest("plan", str(path), "--target", "modal")
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("Error: state record harvest-state:/apps/agents.json is corrupt (")
    assert proc.stderr.rstrip().endswith("; fix or remove it")
