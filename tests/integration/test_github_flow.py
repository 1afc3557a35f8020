"""The GitHub flow end to end: `harvest plan --comment`, `harvest apply` and `harvest drift
--issue` as CI runs them (subprocesses), against the local Modal and a strict local stand-in
for GitHub's REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest_iac.github import DRIFT_LABEL
from tests.ci.fake_github import FakeGitHub
from tests.ci.test_github import PR, TOKEN, parse_outputs
from tests.integration.helpers import assert_no_secret, harvest, write_env


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN) as fake:
        fake.add_pull_request(PR)
        yield fake


def ci_env(gh: FakeGitHub, tmp_path: Path, event: str = "pull_request") -> dict[str, str]:
    payload = tmp_path / f"{event}.json"
    payload.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": "f00d" * 10}}}
                                  if event == "pull_request" else {"ref": "refs/heads/main"}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": gh.repository, "GITHUB_API_URL": gh.url,
            "GITHUB_TOKEN": TOKEN, "GITHUB_EVENT_PATH": str(payload), "GITHUB_EVENT_NAME": event,
            "GITHUB_RUN_ID": "42", "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / "output")}


def no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text, "the GitHub token leaked"
    assert_no_secret(*texts)


def take(path: Path) -> str:
    """A step file's content, emptied as the next step gets a fresh one."""
    text = path.read_text() if path.exists() else ""
    path.write_text("")
    return text


def test_pull_request_plan_comment_summary_and_outputs(tmp_path: Path, modal_environment: str,
                                                       gh: FakeGitHub) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    environ = ci_env(gh, tmp_path)
    first = harvest("plan", str(path), "--target", "modal", "--comment", "-o", "plan.json",
                    env=environ, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Plan: 8 to add, 0 to change, 0 to destroy." in first.stdout
    [comment] = gh.comments_on(PR)
    body = str(comment["body"])
    assert body.startswith(f"<!-- harvest-plan: {env} -->\n### harvest plan\n")
    assert f"| `{env}` | `agents` | `{path}` | **Plan: 8 to add, 0 to change, 0 to destroy.** |" in body
    assert "commit `f00df00df00d`" in body and "[run 42](https://github.com/acme/infra/actions/runs/42)" in body
    assert f"Commented the plan on pull request #7: {comment['html_url']}" in first.stderr
    summary = take(tmp_path / "summary.md")
    assert summary.startswith(f"<!-- harvest-plan: {env} -->\n### harvest plan\n")
    assert parse_outputs(take(tmp_path / "output")) == {
        "has_changes": "true", "add": "8", "change": "0", "destroy": "0", "drift": "0",
        "summary": f"{env}: Plan: 8 to add, 0 to change, 0 to destroy."}
    no_token(first.stdout, first.stderr, body, summary, (tmp_path / "plan.json").read_text())

    same = harvest("plan", str(path), "--target", "modal", "--comment", env=environ, cwd=tmp_path)
    assert same.returncode == 0 and "is up to date" in same.stderr
    path.write_text(path.read_text().replace("protect: false", "protect: false\n  extra:\n    version: 2"))
    edited = harvest("plan", str(path), "--target", "modal", "--comment", env=environ, cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr
    assert [m for m, _ in gh.calls()] == ["GET", "POST", "GET", "GET", "PATCH"]
    [comment] = gh.comments_on(PR)
    assert "Plan: 9 to add" in str(comment["body"])


def test_a_failed_comment_fails_the_step_after_the_plan(tmp_path: Path, modal_environment: str,
                                                        gh: FakeGitHub) -> None:
    path = write_env(tmp_path, modal_environment)
    gh.fail("POST", r".*/comments", 403, "Resource not accessible by integration")
    proc = harvest("plan", str(path), "--target", "modal", "--comment", "--detailed-exitcode",
                   env=ci_env(gh, tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Plan: 8 to add" in proc.stdout  # the plan is still the plan
    assert proc.stderr.splitlines()[-1].startswith(
        "Error: GitHub API POST /repos/acme/infra/issues/7/comments: 403 Forbidden: Resource not "
        "accessible by integration")
    assert "Traceback" not in proc.stderr
    assert "Plan: 8 to add" in (tmp_path / "summary.md").read_text()  # written before commenting
    no_token(proc.stdout, proc.stderr)


def test_comment_outside_a_pull_request_still_plans(tmp_path: Path, modal_environment: str,
                                                    gh: FakeGitHub) -> None:
    path = write_env(tmp_path, modal_environment)
    proc = harvest("plan", str(path), "--target", "modal", "--comment",
                   env=ci_env(gh, tmp_path, event="push"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Plan: 8 to add" in proc.stdout
    assert ("--comment: this run is not for a pull request (event push); the plan is printed but "
            "not commented.") in proc.stderr.splitlines()
    assert gh.requests == []
    untokened = harvest("plan", str(path), "--target", "modal", "--comment",
                        env=ci_env(gh, tmp_path), unset=("GITHUB_TOKEN",), cwd=tmp_path)
    assert untokened.returncode == 0 and "--comment: GITHUB_TOKEN is not set" in untokened.stderr
    assert gh.requests == []


def test_drift_exit_codes_and_one_issue_opened_then_closed(tmp_path: Path, modal_environment: str,
                                                           gh: FakeGitHub) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    environ = ci_env(gh, tmp_path, event="schedule")
    for _ in range(2):
        drifted = harvest("drift", str(path), "--target", "modal", "--issue", env=environ,
                          cwd=tmp_path)
        assert drifted.returncode == 2, drifted.stderr
        assert "Plan: 8 to add" in drifted.stdout
        assert parse_outputs(take(tmp_path / "output"))["has_changes"] == "true"
    [issue] = gh.issues_labelled(DRIFT_LABEL)
    assert issue["state"] == "open" and issue["title"] == (
        f"harvest drift: environment {env} differs from its YAML")
    assert str(issue["body"]).startswith(f"<!-- harvest-drift: {env} -->\n### harvest drift: `{env}`")
    assert f"updated issue #{issue['number']}." in drifted.stderr

    applied = harvest("apply", str(path), "--target", "modal", "--auto-approve", env=environ,
                      cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    summary = take(tmp_path / "summary.md")
    assert f"<!-- harvest-plan: {env} -->\n### harvest apply\n" in summary
    assert parse_outputs(take(tmp_path / "output"))["add"] == "8"

    clean = harvest("drift", str(path), "--target", "modal", "--issue", env=environ, cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "No changes." in clean.stdout
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    assert gh.comments_on(int(str(issue["number"])))[0]["body"].startswith(
        f"Live state of `{env}` matches its YAML again")
    assert parse_outputs(take(tmp_path / "output"))["has_changes"] == "false"
    gh.requests.clear()
    quiet = harvest("drift", str(path), "--target", "modal", "--issue", env=environ, cwd=tmp_path)
    assert quiet.returncode == 0 and [m for m, _ in gh.calls()] == ["GET"]
    assert len(gh.issues_labelled(DRIFT_LABEL)) == 1
    no_token(drifted.stdout, drifted.stderr, applied.stdout, applied.stderr, clean.stdout,
             clean.stderr, str(issue["body"]), summary)

    broken = tmp_path / "broken.yaml"
    broken.write_text("harvest: 1\nenvironment: x\napp: a\nvolumes:\n  v:\n    versoin: 2\n")
    error = harvest("drift", str(broken), "--target", "modal", cwd=tmp_path)
    assert error.returncode == 1 and "broken.yaml:6:5:" in error.stderr
