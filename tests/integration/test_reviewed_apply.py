"""`harvest apply --reviewed plan.json`: the merge job applies what the pull request's plan showed,
or nothing. Live state may move in between (another merge applied); the changes may not."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.integration.helpers import SECRET_VALUE, assert_no_secret, harvest, one_error_line

BODY = """\
harvest: 1
environment: {env}
app: agents
volumes:
  data:
    version: 2
secrets:
  openai:
    from_env: [OPENAI_API_KEY]
"""
EXTRA_VOLUME = "  extra:\n    version: 2\n"


def _volumes(env: str) -> list[str]:
    import modal

    return sorted(v.name for v in modal.Volume.objects.list(environment_name=env)
                  if not v.name.startswith("harvest"))


def _run(tmp_path: Path, *args: str, **kw: Any) -> Any:
    return harvest(*args, "--target", "modal", cwd=tmp_path, **kw)


def _refused(proc: Any) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_no_secret(proc.stdout, proc.stderr)
    return one_error_line(proc.stderr)


def test_apply_reviewed_applies_what_was_reviewed_or_nothing(tmp_path: Path,
                                                              modal_environment: str) -> None:
    env = modal_environment
    path = tmp_path / "env.yaml"
    path.write_text(BODY.format(env=env))
    assert _run(tmp_path, "plan", "env.yaml", "-o", "plan.json").returncode == 0
    assert SECRET_VALUE not in (tmp_path / "plan.json").read_text()

    # another change landed in the YAML after the review
    path.write_text(BODY.format(env=env).replace("secrets:", EXTRA_VOLUME + "secrets:"))
    landed = _run(tmp_path, "apply", "--reviewed", "plan.json", "env.yaml", "--auto-approve")
    assert _refused(landed) == (
        "Error: plan.json: volume.extra: the reviewed plan does not change it, apply would now "
        "create it; apply refused, nothing was changed: what was reviewed is not what apply would "
        "do now (did another change land since?); plan it again in a pull request and review it")
    assert _volumes(env) == []
    path.write_text(BODY.format(env=env))

    # the secret's value is not the one reviewed (compared by hash)
    other = _run(tmp_path, "apply", "--reviewed", "plan.json", "env.yaml", "--auto-approve",
                 env={"OPENAI_API_KEY": "sk-not-the-reviewed-one"})
    assert _refused(other).startswith(
        "Error: plan.json: secret.openai: its values are not the ones the reviewed plan would "
        "set; apply refused, nothing was changed")
    assert _volumes(env) == []

    # live state moved in a way the plan does not show (a volume made by hand): a saved plan is
    # stale then, the reviewed one still holds
    import modal

    modal.Volume.objects.create("made-by-hand", environment_name=env)
    stale = _run(tmp_path, "apply", "plan.json", "--auto-approve")
    assert "moved since the plan was saved" in _refused(stale)
    ok = _run(tmp_path, "apply", "--reviewed", "plan.json", "env.yaml", "--auto-approve")
    assert ok.returncode == 0, ok.stderr
    assert "Apply complete! Resources: 0 imported, 2 added, 0 changed, 0 destroyed." in ok.stdout
    assert _volumes(env) == ["data", "made-by-hand"]

    # the job run again: the reviewed changes are live, nothing to apply
    again = _run(tmp_path, "apply", "--reviewed", "plan.json", "env.yaml", "--auto-approve")
    assert again.returncode == 0, again.stderr
    assert "No changes." in again.stdout
    assert "plan.json: the reviewed changes to" in again.stderr and "are live already" in again.stderr


def test_apply_reviewed_refuses_what_the_review_did_not_show(tmp_path: Path,
                                                             modal_environment: str) -> None:
    import modal

    first, second = modal_environment, "t-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(second)
    envs = tmp_path / "environments"
    envs.mkdir()
    (envs / "a.yaml").write_text(BODY.format(env=first))
    (envs / "b.yaml").write_text(BODY.format(env=second))
    assert _run(tmp_path, "apply", "environments/a.yaml", "--auto-approve").returncode == 0
    assert _run(tmp_path, "plan", "environments/a.yaml", "-o", "plan.json").returncode == 0
    assert json.loads((tmp_path / "plan.json").read_text())["plans"][0]["resource_changes"] == []

    missing = _run(tmp_path, "apply", "--reviewed", "plan.json", "--auto-approve")
    assert _refused(missing) == (
        f"Error: plan.json: no reviewed plan for environment {second!r} (app 'agents') of "
        "environments/b.yaml; apply refused, nothing was changed: a change not reviewed is not "
        "applied. Plan that file in the pull request (`harvest plan -o`)")
    assert _volumes(second) == []

    # reviewed: no changes; at merge time: a new volume
    (envs / "a.yaml").write_text(BODY.format(env=first).replace("secrets:", EXTRA_VOLUME + "secrets:"))
    unreviewed = _run(tmp_path, "apply", "--reviewed", "plan.json", "environments/a.yaml",
                      "--auto-approve")
    assert _refused(unreviewed).startswith(
        "Error: plan.json: volume.extra: the reviewed plan does not change it, apply would now "
        "create it; apply refused")
    assert _volumes(first) == ["data"]

    plan_file = _run(tmp_path, "apply", "--reviewed", "plan.json", "plan.json", "--auto-approve")
    assert _refused(plan_file) == (
        "Error: --reviewed compares a plan made now from the YAML with the reviewed one: give "
        "environment files or folders, not the plan file plan.json")
    helped = harvest("apply", "--help")
    assert "--reviewed PLAN" in helped.stdout and "reviewed in the pull request" in helped.stdout
