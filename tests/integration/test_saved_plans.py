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
     "[\"delete\", \"create\"], [\"delete\"], [\"import\"], got [\"explode\"]"),
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
