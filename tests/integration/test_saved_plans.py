"""Saved plan files (`harvest plan -o plan.json`, then `harvest apply plan.json`): a malformed
file is one clean line; a saved plan applies only the changes it shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harvest_iac.plan import Plan, plan_to_dict
from tests.integration.helpers import SMALL, harvest


def _doc(**overrides: Any) -> dict[str, Any]:
    plan = Plan(environment="dev", app="agents", target="local", source="environments/dev.yaml",
                changes=(), live_fingerprint="sha256:0", spec_digest="sha256:0")
    return {**plan_to_dict(plan), **overrides}


def _one_error_line(proc: Any) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return str(lines[0])


MALFORMED = [
    ("source is a list", {"plans": [_doc(source=["environments/dev.yaml"])]},
     "plans[0].source: expected a string, got a list"),
    ("a plan listed twice", {"plans": [_doc(), _doc()]},
     "plans[1]: a second plan for environment 'dev' (app 'agents'); keep one plan per environment"),
    ("no plans", {"plans": []}, "plans: holds no plan"),
    ("plans is not a list", {"plans": "environments/dev.yaml"}, "plans: expected a list, got a string"),
    ("a plan that is a number", {"plans": [1]}, "plans[0]: expected a mapping (key: value), got a number"),
    ("a change that is a string", {"plans": [_doc(resource_changes=["volume.x"])]},
     "plans[0].resource_changes[0]: expected a mapping (key: value), got a string"),
    ("an unknown action", {"plans": [_doc(resource_changes=[
        {"address": "volume.x", "type": "volume", "name": "x", "actions": ["explode"]}])]},
     "plans[0].resource_changes[0].actions: expected one of [\"create\"], [\"update\"], "
     "[\"delete\", \"create\"], [\"delete\"], [\"import\"], [\"forget\"], got [\"explode\"]"),
    ("a missing key", {"plans": [{k: v for k, v in _doc().items() if k != "spec_digest"}]},
     "plans[0]: missing required key `spec_digest`"),
    ("a bare plan whose environment is a number", _doc(environment=7),
     "environment: expected a string, got a number"),
    ("not a mapping", [1, 2], "expected a mapping (key: value) with `plans`, got a list"),
]


@pytest.mark.parametrize(("data", "what"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_plan_file_is_one_line_and_touches_nothing(tmp_path: Path, data: Any,
                                                             what: str) -> None:
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "dev.yaml").write_text(SMALL.format(env="dev"))
    (tmp_path / "plan.json").write_text(json.dumps(data))
    proc = harvest("apply", "plan.json", "--auto-approve", "--target", "local", cwd=tmp_path)
    line = _one_error_line(proc)
    assert line == (f"Error: plan.json: {what}; make a new plan with `harvest plan -o plan.json`"), line
    assert not (tmp_path / ".harvest").exists()  # no local Modal started, nothing applied


def _state_serial(env: str) -> int:
    import modal

    from harvest_iac.state import STATE_VOLUME, state_path

    vol = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
    return int(json.loads(b"".join(vol.read_file(state_path("agents"))))["serial"])


def _applied(tmp_path: Path, environment: str, **kw: Any) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(SMALL.format(env=environment))
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path, **kw)
    assert proc.returncode == 0, proc.stderr
    return path


def _saved(tmp_path: Path, path: Path, **kw: Any) -> Path:
    out = tmp_path / "plan.json"
    proc = harvest("plan", str(path), "--target", "modal", "-o", str(out), cwd=tmp_path, **kw)
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_no_changes_plan_does_not_apply_a_changed_secret_variable(
        tmp_path: Path, modal_environment: str) -> None:
    path = _applied(tmp_path, modal_environment)
    saved = _saved(tmp_path, path)
    assert json.loads(saved.read_text())["plans"][0]["resource_changes"] == []
    serial = _state_serial(modal_environment)
    proc = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path,
                   env={"OPENAI_API_KEY": "sk-changed-after-review"})
    assert _one_error_line(proc) == (
        f"Error: {saved}: secret.openai: the saved plan does not change it, apply would now update "
        f"it; the plan no longer shows what apply would do: run `harvest plan -o {saved}` again "
        "and review it")
    assert _state_serial(modal_environment) == serial  # nothing written, the secret not put


def test_a_plan_with_its_changes_removed_by_hand_is_refused(tmp_path: Path,
                                                            modal_environment: str) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(SMALL.format(env=modal_environment))
    saved = _saved(tmp_path, path)
    data = json.loads(saved.read_text())
    assert len(data["plans"][0]["resource_changes"]) == 8
    data["plans"][0]["resource_changes"] = []
    saved.write_text(json.dumps(data))
    proc = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path)
    line = _one_error_line(proc)
    assert line.startswith(f"Error: {saved}: app.agents: the saved plan does not change it, apply "
                           "would now create it (and 7 more); "), line
    import modal

    assert not list(modal.Volume.objects.list(environment_name=modal_environment))


def test_a_secret_update_applies_only_the_reviewed_values(tmp_path: Path,
                                                          modal_environment: str) -> None:
    path = _applied(tmp_path, modal_environment)
    reviewed = {"OPENAI_API_KEY": "sk-reviewed-value-2"}
    saved = _saved(tmp_path, path, env=reviewed)
    change, = json.loads(saved.read_text())["plans"][0]["resource_changes"]
    assert change["address"] == "secret.openai" and change["values_hash"]["method"] == "scrypt"
    assert "sk-reviewed-value-2" not in saved.read_text()
    other = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path,
                    env={"OPENAI_API_KEY": "sk-another-value-3"})
    assert _one_error_line(other).startswith(
        f"Error: {saved}: secret.openai: its values are not the ones the saved plan would set; ")
    ok = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path,
                 env=reviewed)
    assert ok.returncode == 0 and "Apply complete!" in ok.stdout, ok.stderr
    again = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", cwd=tmp_path,
                    env=reviewed)
    assert again.returncode == 0 and "No changes." in again.stdout, again.stdout


def test_a_plan_saved_with_harvest_state_key_is_refused_without_it(
        tmp_path: Path, modal_environment: str) -> None:
    key = {"HARVEST_STATE_KEY": "ci-key-7d1f0e9c2b4a6f80"}
    path = _applied(tmp_path, modal_environment, env=key)
    reviewed = {"OPENAI_API_KEY": "sk-reviewed-value-2", "HARVEST_GITHUB_TOKEN": "ghp-reviewed-2"}
    saved = _saved(tmp_path, path, env={**key, **reviewed})
    proc = harvest("apply", str(saved), "--target", "modal", "--auto-approve", cwd=tmp_path,
                   env=reviewed)
    assert _one_error_line(proc).startswith(
        f"Error: {saved}: secret.github: its values cannot be compared with the saved plan's (its "
        "hash was made with HARVEST_STATE_KEY, which is not set) (and 1 more); ")
