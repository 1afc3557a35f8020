"""The pull request comment, the drift issues, the step summary and outputs, against a strict
local stand-in for GitHub's REST API (tests/ci/fake_github.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harvest_iac import github
from harvest_iac.github import DRIFT_LABEL, Client, GitHubError
from harvest_iac.plan import Action, Change, Drift, Plan
from harvest_iac.present import GITHUB_BODY_LIMIT
from tests.ci.fake_github import FakeGitHub
from tests.core.test_present import sample_plan

TOKEN = "ghs_FAKE-token-DO-NOT-PRINT-9c1e"
PR = 7


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN) as fake:
        fake.add_pull_request(PR)
        yield fake


def actions_env(gh: FakeGitHub, tmp_path: Path, event: dict[str, object] | None = None,
                **extra: str) -> dict[str, str]:
    payload = tmp_path / "event.json"
    payload.write_text(json.dumps(event if event is not None else
                                  {"pull_request": {"number": PR, "head": {"sha": "ab12cd34ef56" * 3}}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": gh.repository,
            "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": TOKEN, "GITHUB_EVENT_PATH": str(payload),
            "GITHUB_EVENT_NAME": "pull_request", "GITHUB_RUN_ID": "42",
            "GITHUB_SERVER_URL": "https://github.com", **extra}


class Lines(list[str]):
    def __call__(self, text: str) -> None:
        self.append(text)


def plan_for(env: str, changes: int = 1, drifted: bool = False) -> Plan:
    made = tuple(Change(f"volume.v{i:04d}", "volume", f"v{i:04d}", Action.CREATE,
                        after={"version": 2, "protect": True}) for i in range(changes))
    drift = (Drift("secret.api", "secret", "api", "was deleted outside of harvest"),) if drifted else ()
    return Plan(environment=env, app="agents", target="modal", source=f"environments/{env}.yaml",
                changes=made, drift=drift)


def harvest_comments(gh: FakeGitHub) -> list[dict[str, object]]:
    return [c for c in gh.comments_on(PR) if str(c["body"]).startswith("<!-- harvest-plan")]


# -- the pull request comment ------------------------------------------------------------------
def test_one_comment_created_then_updated_in_place(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    out = Lines()
    github.comment([sample_plan()], environ, out)
    assert gh.calls() == [("GET", "/repos/acme/infra/issues/7/comments"),
                          ("POST", "/repos/acme/infra/issues/7/comments")]
    [first] = harvest_comments(gh)
    assert str(first["body"]).startswith("<!-- harvest-plan: dev -->\n### harvest plan\n")
    assert "commit `ab12cd34ef56`" in str(first["body"])
    assert out == [f"Commented the plan on pull request #7: {first['html_url']}"]

    gh.requests.clear()
    github.comment([plan_for("dev", changes=3)], environ, out)
    assert gh.calls() == [("GET", "/repos/acme/infra/issues/7/comments"),
                          ("PATCH", f"/repos/acme/infra/issues/comments/{first['id']}")]
    [again] = harvest_comments(gh)
    assert again["id"] == first["id"] and "Plan: 0 to add" not in str(again["body"])
    assert "**Plan: 3 to add, 0 to change, 0 to destroy.**" in str(again["body"])

    gh.requests.clear()
    github.comment([plan_for("dev", changes=3)], environ, out)
    assert gh.calls() == [("GET", "/repos/acme/infra/issues/7/comments")]
    assert out[-1] == "The plan comment on pull request #7 is up to date."


def test_own_comment_found_on_a_later_page(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    for i in range(120):
        gh.add_comment(PR, f"looks good {i}")
    gh.add_comment(PR, "quoting it: <!-- harvest-plan: dev --> is not a first line")
    github.comment([plan_for("dev")], environ, Lines())
    for i in range(30):
        gh.add_comment(PR, f"more review {i}")
    gh.requests.clear()
    github.comment([plan_for("dev", changes=2)], environ, Lines())
    assert [(r.method, r.query.get("page")) for r in gh.requests] == [
        ("GET", None), ("GET", "2"), ("PATCH", None)]
    assert all(r.query.get("per_page") == "100" for r in gh.requests if r.method == "GET")
    assert len(harvest_comments(gh)) == 1 and len(gh.comments_on(PR)) == 152


def test_one_comment_per_set_of_environments(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    github.comment([plan_for("dev")], environ, Lines())
    github.comment([plan_for("prod"), plan_for("dev")], environ, Lines())
    github.comment([plan_for("dev", changes=2)], environ, Lines())
    firsts = sorted(str(c["body"]).split("\n", 1)[0] for c in harvest_comments(gh))
    assert firsts == ["<!-- harvest-plan: dev -->", "<!-- harvest-plan: dev, prod -->"]


def test_every_request_sends_what_github_requires(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    github.comment([plan_for("dev")], environ, Lines())
    github.report_drift([plan_for("dev", drifted=True)], environ, Lines())
    assert len(gh.requests) >= 6
    for r in gh.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert r.headers["accept"] == "application/vnd.github+json"
        assert r.headers["x-github-api-version"] == "2022-11-28"
        assert r.headers["user-agent"].startswith("harvest-iac/")
        assert (r.headers.get("content-type") == "application/json") == (r.method != "GET")


def test_a_big_plan_is_cut_at_a_resource_boundary(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    big = replace(plan_for("prod", changes=3000, drifted=True),
                  changes=tuple(replace(c, notes=("a long note " * 8,))
                                for c in plan_for("prod", changes=3000).changes))
    github.comment([plan_for("dev"), big], environ, Lines())
    [made] = harvest_comments(gh)
    body = str(made["body"])
    assert len(body) <= GITHUB_BODY_LIMIT
    assert len(body) > GITHUB_BODY_LIMIT - 2000  # cut close to the limit, not far below it
    assert "| `prod` | `agents` | `environments/prod.yaml` | **Plan: 3000 to add" in body
    assert "| `dev` |" in body and "`secret.api` was deleted outside of harvest" in body
    note = re.search(r"Not shown: `prod`: (\d+) changes from `volume\.v(\d+)` on\. "
                     r"The full plan is in the job's step summary and the `plan.json` artifact",
                     body)
    assert note, body[:2000]
    rows = re.findall(r"^\| `\+` \| `(volume\.v\d+)` \| create \|", body, re.M)
    blocks = re.findall(r"^\+ \+ (volume\.v\d+)$", body, re.M)
    prod_rows = rows[1:]  # the first row is dev's
    assert prod_rows == blocks[1:] == [f"volume.v{i:04d}" for i in range(len(prod_rows))]
    assert int(note.group(1)) == 3000 - len(prod_rows) and int(note.group(2)) == len(prod_rows)
    assert body.count("```") % 2 == 0 and body.count("<details>") == body.count("</details>")


def test_github_refusals_are_one_line_without_the_token(gh: FakeGitHub, tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    gh.fail("POST", r".*/comments", 403, "Resource not accessible by integration")
    with pytest.raises(GitHubError) as refused:
        github.comment([plan_for("dev")], environ, Lines())
    message = str(refused.value)
    assert message == ("GitHub API POST /repos/acme/infra/issues/7/comments: 403 Forbidden: "
                       "Resource not accessible by integration (the workflow needs "
                       "`permissions: pull-requests: write` (comments) or `issues: write` "
                       "(drift issues))")
    client = Client(gh.url, gh.repository, TOKEN)
    with pytest.raises(GitHubError) as too_big:
        client.call("POST", f"/issues/{PR}/comments", {"body": "x" * (GITHUB_BODY_LIMIT + 1)})
    assert too_big.value.status == 422 and "Validation Failed" in str(too_big.value)
    wrong = Client(gh.url, gh.repository, TOKEN + "x")
    with pytest.raises(GitHubError) as unauthorized:
        wrong.call("GET", f"/issues/{PR}/comments")
    assert "401 Unauthorized: Bad credentials (the token is not valid" in str(unauthorized.value)
    for exc in (refused.value, too_big.value, unauthorized.value):
        assert TOKEN not in str(exc) and "\n" not in str(exc)
        assert exc.__cause__ is None and exc.__suppress_context__


def test_server_errors_and_rate_limits_are_tried_again_a_bounded_number_of_times(
        gh: FakeGitHub) -> None:
    waits: list[float] = []
    client = Client(gh.url, gh.repository, TOKEN, sleep=waits.append, clock=lambda: 1000.0)
    comments = r".*/issues/7/comments"

    gh.fail("GET", comments, 502, "Server Error")
    assert client.call("GET", f"/issues/{PR}/comments") == []
    assert waits == [1.0] and len(gh.requests) == 2

    waits.clear()
    gh.fail("GET", comments, 403, "API rate limit exceeded", times=2,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1004"})
    gh.fail("POST", comments, 429, "You have exceeded a secondary rate limit",
            headers={"Retry-After": "3"})
    assert client.call("GET", f"/issues/{PR}/comments") == []
    assert client.call("POST", f"/issues/{PR}/comments", {"body": "once"})["body"] == "once"
    assert waits == [4.0, 4.0, 3.0]

    waits.clear()
    gh.requests.clear()
    gh.fail("GET", comments, 503, "Service Unavailable", times=5)
    with pytest.raises(GitHubError) as gave_up:
        client.call("GET", f"/issues/{PR}/comments")
    assert str(gave_up.value) == ("GitHub API GET /repos/acme/infra/issues/7/comments: 503 Service "
                                  "Unavailable: Service Unavailable (gave up after 3 attempts)")
    assert waits == [1.0, 2.0] and len(gh.requests) == 3
    assert TOKEN not in str(gave_up.value) and gave_up.value.__cause__ is None

    waits.clear()
    gh.failures.clear()
    gh.fail("GET", comments, 429, "slow down", headers={"Retry-After": "3600"})
    with pytest.raises(GitHubError, match=r"429 Too Many Requests: slow down \(GitHub asks to wait "
                                          r"3600s; not waiting that long: run the job again later\)$"):
        client.call("GET", f"/issues/{PR}/comments")
    gh.fail("POST", comments, 502, "Server Error")  # the comment may have been made: not again
    gh.fail("PATCH", r".*/issues/comments/\d+", 403, "Resource not accessible by integration")
    for method, path in (("POST", f"/issues/{PR}/comments"), ("PATCH", "/issues/comments/1")):
        with pytest.raises(GitHubError) as refused:
            client.call(method, path, {"body": "x"})
        assert TOKEN not in str(refused.value) and "\n" not in str(refused.value)
        assert "attempts" not in str(refused.value)
    assert waits == [] and not gh.failures


def test_unreachable_api_and_redirects_keep_the_token_home(gh: FakeGitHub, tmp_path: Path) -> None:
    closed = Client("http://127.0.0.1:9", gh.repository, TOKEN)
    with pytest.raises(GitHubError, match=r"^cannot reach the GitHub API at http://127\.0\.0\.1:9: "):
        closed.call("GET", "/issues")
    with FakeGitHub(TOKEN) as elsewhere:
        gh.redirect["/repos/acme/infra/issues/7/comments"] = f"{elsewhere.url}/steal"
        with pytest.raises(GitHubError, match="301 Moved Permanently.*redirects are not followed"):
            github.comment([plan_for("dev")], actions_env(gh, tmp_path), Lines())
        assert elsewhere.requests == []


def test_a_malformed_token_is_refused_without_echoing_it(gh: FakeGitHub, tmp_path: Path) -> None:
    bad = TOKEN + "\nX-Injected: 1"
    with pytest.raises(GitHubError) as refused:
        github.comment([plan_for("dev")], actions_env(gh, tmp_path, GITHUB_TOKEN=bad), Lines())
    assert "GITHUB_TOKEN is not a token" in str(refused.value)
    assert TOKEN not in str(refused.value) and gh.requests == []


@pytest.mark.parametrize(("change", "why"), [
    ({"GITHUB_ACTIONS": ""}, "--comment: not running on GitHub Actions (GITHUB_ACTIONS and "
                             "GITHUB_REPOSITORY are not set); the plan is printed but not commented."),
    ({"GITHUB_TOKEN": ""}, "--comment: GITHUB_TOKEN is not set; give the step `env: GITHUB_TOKEN: "
                           "${{ github.token }}`; the plan is printed but not commented."),
    ({"GITHUB_EVENT_NAME": "push", "event": "push"},
     "--comment: this run is not for a pull request (event push); the plan is printed but not "
     "commented."),
])
def test_outside_a_pull_request_or_without_a_token_says_why(
        gh: FakeGitHub, tmp_path: Path, change: dict[str, str], why: str) -> None:
    event = {"ref": "refs/heads/main"} if change.pop("event", None) else None
    environ = {**actions_env(gh, tmp_path, event), **change}
    out = Lines()
    github.comment([plan_for("dev")], environ, out)
    assert out == [why] and gh.requests == []


# -- drift issues -------------------------------------------------------------------------------
def drift_issues(gh: FakeGitHub, state: str = "open") -> dict[str, dict[str, object]]:
    return {str(i["body"]).split("\n", 1)[0]: i for i in gh.issues_labelled(DRIFT_LABEL)
            if i["state"] == state and "pull_request" not in i}


def test_one_issue_per_drifted_environment_updated_then_closed(gh: FakeGitHub,
                                                                tmp_path: Path) -> None:
    environ = actions_env(gh, tmp_path)
    gh.add_label(DRIFT_LABEL)
    gh.state.issues[3] = {"number": 3, "title": "a PR", "state": "open", "pull_request": {},
                          "body": "<!-- harvest-drift: dev -->", "labels": [gh.state.labels[DRIFT_LABEL]]}
    del gh.state.labels[DRIFT_LABEL]  # the label is made by harvest when missing
    out = Lines()
    github.report_drift([plan_for("dev", drifted=True), plan_for("prod", changes=0, drifted=True),
                         plan_for("staging", changes=0)], environ, out)
    opened = drift_issues(gh)
    assert sorted(opened) == ["<!-- harvest-drift: dev -->", "<!-- harvest-drift: prod -->"]
    dev = opened["<!-- harvest-drift: dev -->"]
    assert dev["title"] == "harvest drift: environment dev differs from its YAML"
    assert "### harvest drift: `dev`" in str(dev["body"]) and "[run 42]" in str(dev["body"])
    assert ("POST", "/repos/acme/infra/labels") in gh.calls()
    assert out == [f"dev: differs from its YAML; opened issue #{dev['number']}: {dev['html_url']}",
                   f"prod: differs from its YAML; opened issue #{opened['<!-- harvest-drift: prod -->']['number']}: "
                   f"{opened['<!-- harvest-drift: prod -->']['html_url']}"]

    gh.requests.clear()
    github.report_drift([plan_for("dev", changes=2, drifted=True),
                         plan_for("prod", changes=0, drifted=True)], environ, Lines())
    assert [m for m, _ in gh.calls()] == ["GET", "PATCH", "PATCH"]
    assert drift_issues(gh).keys() == opened.keys()
    assert "Plan: 2 to add" in str(drift_issues(gh)["<!-- harvest-drift: dev -->"]["body"])

    gh.requests.clear()
    out.clear()
    github.report_drift([plan_for("dev", changes=0), plan_for("prod", changes=0, drifted=True)],
                        environ, out)
    assert gh.calls()[1:] == [("POST", f"/repos/acme/infra/issues/{dev['number']}/comments"),
                              ("PATCH", f"/repos/acme/infra/issues/{dev['number']}"),
                              ("PATCH", f"/repos/acme/infra/issues/{opened['<!-- harvest-drift: prod -->']['number']}")]
    assert gh.requests[2].body == {"state": "closed", "state_reason": "completed"}
    assert gh.comments_on(int(str(dev["number"])))[0]["body"] == (
        "Live state of `dev` matches its YAML again ([run 42]"
        "(https://github.com/acme/infra/actions/runs/42)). Closing.")
    assert out[0] == f"dev: matches its YAML again; closed issue #{dev['number']}."
    assert list(drift_issues(gh)) == ["<!-- harvest-drift: prod -->"]

    gh.requests.clear()
    github.report_drift([plan_for("dev", changes=0)], environ, Lines())
    assert [m for m, _ in gh.calls()] == ["GET"]  # nothing to open, update or close
    assert gh.state.issues[3]["state"] == "open"  # a pull request is never taken for an issue


def test_drift_issue_without_actions_says_why(tmp_path: Path) -> None:
    out = Lines()
    github.report_drift([plan_for("dev", drifted=True)], {}, out)
    assert out == ["--issue: not running on GitHub Actions (GITHUB_ACTIONS and GITHUB_REPOSITORY "
                   "are not set); no issue is opened, updated or closed."]


# -- step summary and outputs --------------------------------------------------------------------
def parse_outputs(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<")[0]:
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_step_summary_and_outputs_on_actions_only(tmp_path: Path) -> None:
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
               "GITHUB_OUTPUT": str(output)}
    plans = [sample_plan(), plan_for("prod", changes=0, drifted=True)]
    github.publish(plans, environ, title="harvest plan")
    github.publish([plan_for("qa", changes=0)], environ, title="harvest apply")
    text = summary.read_text()
    assert text.startswith("<!-- harvest-plan: dev, prod -->\n### harvest plan\n")
    assert "<!-- harvest-plan: qa -->\n### harvest apply\n" in text
    raw = output.read_text()
    assert re.search(r"^summary<<ghadelimiter_[0-9a-f]{32}$", raw, re.M)
    first, second = raw.split("has_changes=")[1:]
    assert parse_outputs("has_changes=" + first) == {
        "has_changes": "true", "add": "2", "change": "2", "destroy": "2", "drift": "2",
        "summary": "dev: Plan: 1 to import, 2 to add, 2 to change, 2 to destroy.\nprod: No changes."}
    assert parse_outputs("has_changes=" + second)["has_changes"] == "false"

    elsewhere = tmp_path / "not-actions"
    github.publish(plans, {"GITHUB_STEP_SUMMARY": str(elsewhere)}, title="harvest plan")
    assert not elsewhere.exists()
