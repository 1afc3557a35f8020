"""harvest on GitHub Actions: the step summary and outputs, the pull request comment, and one
issue per drifted environment.

An edge module: it reads the Actions environment (`GITHUB_*`), appends to the files Actions
names, and talks to the GitHub REST API with urllib. The token (`GITHUB_TOKEN`) is sent only as
a bearer header to `GITHUB_API_URL`, never follows a redirect, and never appears in a message:
every error raised here is scrubbed of it.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from harvest_iac import __version__
from harvest_iac.errors import HarvestError
from harvest_iac.plan import Plan
from harvest_iac.present import GITHUB_BODY_LIMIT, marker, render_markdown

API_VERSION = "2022-11-28"
DEFAULT_API_URL = "https://api.github.com"
DRIFT_LABEL = "harvest-drift"
#: GitHub refuses a step summary over 1 MiB.
STEP_SUMMARY_LIMIT = 1024 * 1024
#: A call GitHub answers with a server error (5xx) or rate limiting (429, or 403 with
#: `Retry-After` or no requests left) is tried again, this many times in all: after the wait
#: GitHub asks for (`Retry-After`, `x-ratelimit-reset`), else 1s, then 2s. A wait over a
#: minute is not waited for. A POST is not tried again after a server error: it may have been
#: made (a second comment); a refused one (rate limiting) is.
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 1.0
RETRY_WAIT_MAX_S = 60.0

Echo = Callable[[str], None]
NOT_ON_ACTIONS = "not running on GitHub Actions (GITHUB_ACTIONS and GITHUB_REPOSITORY are not set)"


class GitHubError(HarvestError):
    """GitHub (or the Actions environment) refused or failed; the message never holds the token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status GitHub answered, if it answered


def on_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def run_url(environ: Mapping[str, str]) -> str:
    """The URL of this workflow run, or "" outside GitHub Actions."""
    if not environ.get("GITHUB_RUN_ID"):
        return ""
    return (f"{environ.get('GITHUB_SERVER_URL', 'https://github.com')}/"
            f"{environ.get('GITHUB_REPOSITORY', '')}/actions/runs/{environ['GITHUB_RUN_ID']}")


def differs(plan: Plan) -> bool:
    """Live state does not match the YAML: something to change, or changed outside harvest."""
    return plan.summary.has_changes or bool(plan.drift)


# -- step summary and outputs -----------------------------------------------------------------
def plan_outputs(plans: Sequence[Plan]) -> dict[str, str]:
    """`has_changes`, `add`, `change`, `destroy`, `drift` over all plans, and `summary` (one
    line per environment)."""
    summaries = [p.summary for p in plans]
    return {
        "has_changes": "true" if any(s.has_changes for s in summaries) else "false",
        "add": str(sum(s.add for s in summaries)),
        "change": str(sum(s.change for s in summaries)),
        "destroy": str(sum(s.destroy for s in summaries)),
        "drift": str(sum(len(p.drift) for p in plans)),
        "summary": "\n".join(f"{p.environment}: "
                             f"{p.summary.line() if p.actionable else 'No changes.'}"
                             for p in plans),
    }


def output_lines(values: Mapping[str, str]) -> str:
    """`$GITHUB_OUTPUT` syntax: `name=value`, or a heredoc with a delimiter found in no line
    of the value for a value spanning lines."""
    out: list[str] = []
    for name, value in values.items():
        if "\n" not in value:
            out.append(f"{name}={value}\n")
            continue
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        out.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(out)


def publish(plans: Sequence[Plan], environ: Mapping[str, str], *, title: str) -> None:
    """On GitHub Actions: the Markdown to `$GITHUB_STEP_SUMMARY`, the counts to `$GITHUB_OUTPUT`."""
    if not on_actions(environ):
        return
    summary_file = environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        text = render_markdown(plans, title=title, limit=STEP_SUMMARY_LIMIT,
                               size=lambda s: len(s.encode()),
                               full_plan_at="the job's log and the saved plan (`-o plan.json`)")
        _append(summary_file, "GITHUB_STEP_SUMMARY", text)
    output_file = environ.get("GITHUB_OUTPUT")
    if output_file:
        _append(output_file, "GITHUB_OUTPUT", output_lines(plan_outputs(plans)))


def _append(path: str, variable: str, text: str) -> None:
    try:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise GitHubError(f"cannot write ${variable} ({path}): {exc.strerror or exc}") from None


# -- the REST client ---------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token elsewhere: treat it as the error it is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class Response:
    data: Any
    next_url: str | None


class Client:
    """The few GitHub REST calls harvest makes, for one repository."""

    def __init__(self, api_url: str, repository: str, token: str, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        if not token.isascii() or not token.isprintable() or " " in token:
            raise GitHubError("GITHUB_TOKEN is not a token (it holds spaces, line breaks or "
                              "non-ASCII characters); pass `${{ github.token }}` as it is")
        owner, _, name = repository.partition("/")
        if not owner or not name or "/" in name:
            raise GitHubError(f"GITHUB_REPOSITORY must be OWNER/NAME, got {repository!r}")
        self.api_url = api_url.rstrip("/")
        self.repo_path = f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"
        self._token = token
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._sleep = sleep
        self._clock = clock

    def call(self, method: str, path: str, body: Any = None,
             query: Mapping[str, str] | None = None) -> Any:
        url = self.api_url + self.repo_path + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return self._send(method, url, body).data

    def paginate(self, path: str, query: Mapping[str, str]) -> Iterator[Any]:
        url: str | None = (self.api_url + self.repo_path + path + "?"
                           + urllib.parse.urlencode({**query, "per_page": "100"}))
        while url is not None:
            page = self._send("GET", url, None)
            yield from page.data
            url = page.next_url
            if url is not None and not url.startswith(self.api_url + "/"):
                raise self._error(f"GitHub API GET {path}: the next page is on another host; "
                                  "not following it")

    def _send(self, method: str, url: str, body: Any) -> Response:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"harvest-iac/{__version__}",
            "Authorization": f"Bearer {self._token}",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        where = f"GitHub API {method} {urllib.parse.urlsplit(url).path}"
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                with self._opener.open(request, timeout=30) as resp:
                    raw = resp.read()
                    link = resp.headers.get("Link", "")
                break
            except urllib.error.HTTPError as exc:
                wait = _retry_wait(method, exc.code, exc.headers, attempt, self._clock())
                if wait is None or wait > RETRY_WAIT_MAX_S or attempt == RETRY_ATTEMPTS:
                    raise self._error(f"{where}: {exc.code} {exc.reason}{_explain(exc)}"
                                      f"{_gave_up(wait, attempt)}", exc.code) from None
                exc.close()
                self._sleep(wait)
            except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise self._error(f"cannot reach the GitHub API at {self.api_url}: {reason}") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            raise self._error(f"{where}: the answer is not JSON") from None
        return Response(parsed, _next_link(link))

    def _error(self, message: str, status: int | None = None) -> GitHubError:
        return GitHubError(message.replace(self._token, "***"), status)


def _rate_limited(status: int, headers: Any) -> bool:
    return status == 429 or (status == 403 and (headers.get("Retry-After") is not None
                                                or headers.get("x-ratelimit-remaining") == "0"))


def _retry_wait(method: str, status: int, headers: Any, attempt: int, now: float) -> float | None:
    """Seconds to wait before trying this answer's request again; None: it is not tried again."""
    if not _rate_limited(status, headers) and not (status >= 500 and method != "POST"):
        return None
    try:
        if headers.get("Retry-After") is not None:
            return max(0.0, float(headers["Retry-After"]))
        if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
    except ValueError:
        pass  # not a number of seconds (an HTTP date): back off as for a server error
    return RETRY_BACKOFF_S * 2 ** (attempt - 1)


def _gave_up(wait: float | None, attempt: int) -> str:
    if wait is None:
        return ""
    if wait > RETRY_WAIT_MAX_S:
        return f" (GitHub asks to wait {wait:.0f}s; not waiting that long: run the job again later)"
    return f" (gave up after {attempt} attempts)"


def _explain(exc: urllib.error.HTTPError) -> str:
    """GitHub's own message, and what to do for the usual refusals."""
    try:
        message = str(json.loads(exc.read() or b"{}").get("message", ""))
    except (ValueError, AttributeError, OSError):
        message = ""
    if _rate_limited(exc.code, exc.headers):
        return f": {message}" if message else ""
    hint = {
        401: "the token is not valid; pass `GITHUB_TOKEN: ${{ github.token }}` to the step",
        403: "the workflow needs `permissions: pull-requests: write` (comments) or "
             "`issues: write` (drift issues)",
        404: "no such repository, pull request or issue for this token",
    }.get(exc.code)
    text = f": {message}" if message else ""
    if 300 <= exc.code < 400:
        text += " (redirects are not followed: check GITHUB_API_URL and GITHUB_REPOSITORY)"
    return text + (f" ({hint})" if hint else "")


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", ""):
            return target.strip().strip("<>")
    return None


def client_from(environ: Mapping[str, str]) -> Client | str:
    """A client for this run's repository, or one line saying why there is none."""
    repository = environ.get("GITHUB_REPOSITORY")
    if not on_actions(environ) or not repository:
        return NOT_ON_ACTIONS
    token = environ.get("GITHUB_TOKEN")
    if not token:
        return "GITHUB_TOKEN is not set; give the step `env: GITHUB_TOKEN: ${{ github.token }}`"
    return Client(environ.get("GITHUB_API_URL") or DEFAULT_API_URL, repository, token)


def _first_line(body: Any) -> str:
    return str(body or "").split("\n", 1)[0].strip()


# -- the pull request comment ----------------------------------------------------------------
def pull_request(environ: Mapping[str, str]) -> tuple[int, str] | str:
    """(number, head commit) of the pull request this run is for, or why there is none."""
    event_path = environ.get("GITHUB_EVENT_PATH")
    if not event_path:
        return "GITHUB_EVENT_PATH is not set"
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"cannot read the event payload {event_path}: {getattr(exc, 'strerror', None) or exc}"
    pr = event.get("pull_request") if isinstance(event, dict) else None
    if isinstance(pr, dict) and isinstance(pr.get("number"), int):
        return pr["number"], str((pr.get("head") or {}).get("sha") or "")
    return f"this run is not for a pull request (event {environ.get('GITHUB_EVENT_NAME', '?')})"


def comment(plans: Sequence[Plan], environ: Mapping[str, str], echo: Echo) -> None:
    """Create or update this pull request's one comment for these environments. Outside a pull
    request or without a token, says why in one line and does nothing."""
    target = _comment_target(environ)
    if isinstance(target, str):
        echo(f"--comment: {target}; the plan is printed but not commented.")
        return
    client, number, head = target
    footer = _footer(environ, f"commit `{head[:12]}`" if head else "")
    body = render_markdown(plans, limit=GITHUB_BODY_LIMIT - len(footer)) + footer
    first = _first_line(body)
    path = f"/issues/{number}/comments"
    existing = next((c for c in client.paginate(path, {}) if _first_line(c.get("body")) == first),
                    None)
    if existing is None:
        made = client.call("POST", path, {"body": body})
        echo(f"Commented the plan on pull request #{number}: {made.get('html_url', '')}")
    elif existing.get("body") == body:
        echo(f"The plan comment on pull request #{number} is up to date.")
    else:
        client.call("PATCH", f"/issues/comments/{existing['id']}", {"body": body})
        echo(f"Updated the plan comment on pull request #{number}: {existing.get('html_url', '')}")


def _comment_target(environ: Mapping[str, str]) -> tuple[Client, int, str] | str:
    """The client and the pull request (number, head commit) to comment on, or why none."""
    if not on_actions(environ):
        return NOT_ON_ACTIONS
    pr = pull_request(environ)
    if isinstance(pr, str):
        return pr
    client = client_from(environ)
    if isinstance(client, str):
        return client
    return client, pr[0], pr[1]


def _footer(environ: Mapping[str, str], what: str) -> str:
    parts = [f"harvest {__version__}"]
    if what:
        parts.append(what)
    url = run_url(environ)
    if url:
        parts.append(f"[run {environ['GITHUB_RUN_ID']}]({url})")
    return "\n<sub>" + " · ".join(parts) + "</sub>\n"


# -- one issue per drifted environment -------------------------------------------------------
def report_drift(plans: Sequence[Plan], environ: Mapping[str, str], echo: Echo) -> None:
    """Keep one open issue (labelled `harvest-drift`, found by its hidden marker) per
    environment whose live state differs from its YAML; update it on every run; close it with a
    comment once the environment matches again."""
    client = client_from(environ)
    if isinstance(client, str):
        echo(f"--issue: {client}; no issue is opened, updated or closed.")
        return
    open_issues: dict[str, Any] = {}
    for issue in client.paginate("/issues", {"state": "open", "labels": DRIFT_LABEL}):
        if "pull_request" not in issue:
            open_issues.setdefault(_first_line(issue.get("body")), issue)
    by_env: dict[str, list[Plan]] = {}
    for plan in plans:
        by_env.setdefault(plan.environment, []).append(plan)
    for env, env_plans in by_env.items():
        issue = open_issues.get(marker("harvest-drift", [env]))
        if any(differs(p) for p in env_plans):
            _open_or_update(client, env, env_plans, issue, environ, echo)
        elif issue is not None:
            where = f" ([run {environ['GITHUB_RUN_ID']}]({run_url(environ)}))" if run_url(environ) else ""
            client.call("POST", f"/issues/{issue['number']}/comments",
                        {"body": f"Live state of `{env}` matches its YAML again{where}. Closing."})
            client.call("PATCH", f"/issues/{issue['number']}",
                        {"state": "closed", "state_reason": "completed"})
            echo(f"{env}: matches its YAML again; closed issue #{issue['number']}.")


def _open_or_update(client: Client, env: str, plans: list[Plan], issue: Any,
                    environ: Mapping[str, str], echo: Echo) -> None:
    footer = _footer(environ, "checked")
    body = render_markdown(plans, title=f"harvest drift: `{env}`", kind="harvest-drift",
                           limit=GITHUB_BODY_LIMIT - len(footer),
                           full_plan_at="the step summary of the run that checked it") + footer
    title = f"harvest drift: environment {env} differs from its YAML"
    if issue is not None:
        client.call("PATCH", f"/issues/{issue['number']}", {"title": title, "body": body})
        echo(f"{env}: differs from its YAML; updated issue #{issue['number']}.")
        return
    _ensure_label(client)
    made = client.call("POST", "/issues", {"title": title, "body": body, "labels": [DRIFT_LABEL]})
    echo(f"{env}: differs from its YAML; opened issue #{made['number']}: {made.get('html_url', '')}")


def _ensure_label(client: Client) -> None:
    try:
        client.call("GET", f"/labels/{DRIFT_LABEL}")
    except GitHubError as exc:
        if exc.status != 404:
            raise
        client.call("POST", "/labels", {"name": DRIFT_LABEL, "color": "d93f0b",
                                        "description": "harvest: live Modal state differs from the YAML"})
