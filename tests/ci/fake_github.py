"""A small, strict stand-in for the GitHub REST endpoints harvest uses, on a local port.

Strict as GitHub is (stricter where noted): exact paths under one repository, the bearer
token, `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`, a
User-Agent, JSON bodies, bodies of at most 65,536 characters (422 otherwise), pages of at most
100 with `Link: rel="next"`. Unknown query parameters, and labels that do not exist on a new
issue, are refused (GitHub ignores the first and creates the second).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BODY_LIMIT = 65_536
API_VERSION = "2022-11-28"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class State:
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1000


@dataclass
class Failure:
    status: int
    message: str
    times: int
    headers: dict[str, str]


class HTTPFailure(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class FakeGitHub:
    """`with FakeGitHub(token) as gh:` serves on `gh.url`; `gh.requests` records every call."""

    def __init__(self, token: str, repository: str = "acme/infra") -> None:
        self.token = token
        self.repository = repository
        self.state = State()
        self.requests: list[Recorded] = []
        self.failures: dict[tuple[str, str], Failure] = {}  # (method, path regex): see fail()
        self.redirect: dict[str, str] = {}  # path -> Location (answered with 301)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- fixtures ---------------------------------------------------------------------------
    def add_pull_request(self, number: int) -> None:
        self.state.issues[number] = {"number": number, "title": f"PR {number}", "body": "",
                                     "state": "open", "labels": [], "pull_request": {"url": "x"}}

    def add_comment(self, issue: int, body: str, login: str = "someone") -> dict[str, Any]:
        return self._new_comment(issue, body, login)

    def fail(self, method: str, pattern: str, status: int, message: str, *, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests of `method` to a path matching `pattern` with this
        error (and these headers, e.g. `Retry-After`)."""
        self.failures[(method, pattern)] = Failure(status, message, times, headers or {})

    def add_label(self, name: str) -> None:
        self.state.labels[name] = {"name": name, "color": "ededed"}

    def comments_on(self, issue: int) -> list[dict[str, Any]]:
        return [c for c in self.state.comments.values() if c["issue"] == issue]

    def issues_labelled(self, label: str) -> list[dict[str, Any]]:
        return [i for i in self.state.issues.values()
                if any(lab["name"] == label for lab in i["labels"])]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    # -- the server -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                status, payload, headers = fake._dispatch(self)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler

    def _dispatch(self, req: BaseHTTPRequestHandler) -> tuple[int, Any, dict[str, str]]:
        split = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in req.headers.items()}
        with self._lock:
            record = Recorded(req.command, split.path, query, headers, None)
            self.requests.append(record)
            try:
                record.body = body = self._check(req.command, split.path, headers, raw)
                if split.path in self.redirect:
                    return 301, None, {"Location": self.redirect[split.path]}
                for (method, pattern), failure in list(self.failures.items()):
                    if method == req.command and re.fullmatch(pattern, split.path):
                        failure.times -= 1
                        if failure.times == 0:
                            del self.failures[(method, pattern)]
                        raise HTTPFailure(failure.status, failure.message, headers=failure.headers)
                return self._route(req.command, split.path, query, body)
            except HTTPFailure as exc:
                doc: dict[str, Any] = {"message": exc.message,
                                       "documentation_url": "https://docs.github.com/rest"}
                if exc.errors:
                    doc["errors"] = exc.errors
                return exc.status, doc, exc.headers

    def _check(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
        if headers.get("authorization") != f"Bearer {self.token}":
            raise HTTPFailure(401, "Bad credentials")
        if headers.get("accept") != "application/vnd.github+json":
            raise HTTPFailure(415, f"Unsupported Accept header {headers.get('accept')!r}")
        if headers.get("x-github-api-version") != API_VERSION:
            raise HTTPFailure(400, "Unsupported API version")
        if not headers.get("user-agent"):
            raise HTTPFailure(403, "Request forbidden by administrative rules: no User-Agent")
        if method in ("POST", "PATCH"):
            if headers.get("content-type") != "application/json":
                raise HTTPFailure(415, "Content-Type must be application/json")
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise HTTPFailure(400, "Problems parsing JSON") from exc
            text = body.get("body") if isinstance(body, dict) else None
            if isinstance(text, str) and len(text) > BODY_LIMIT:
                raise HTTPFailure(422, "Validation Failed", [{
                    "resource": "IssueComment" if "comments" in path else "Issue",
                    "code": "custom", "field": "body",
                    "message": f"body is too long (maximum is {BODY_LIMIT} characters)"}])
            return body
        if raw:
            raise HTTPFailure(400, f"{method} takes no body")
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any
               ) -> tuple[int, Any, dict[str, str]]:
        prefix = f"/repos/{self.repository}"
        if not path.startswith(prefix + "/"):
            raise HTTPFailure(404, "Not Found")
        rest = path[len(prefix):]
        routes = [
            ("GET", r"/issues/(\d+)/comments", self._list_comments, {"per_page", "page"}),
            ("POST", r"/issues/(\d+)/comments", self._create_comment, set()),
            ("PATCH", r"/issues/comments/(\d+)", self._update_comment, set()),
            ("GET", r"/issues", self._list_issues, {"state", "labels", "per_page", "page"}),
            ("POST", r"/issues", self._create_issue, set()),
            ("PATCH", r"/issues/(\d+)", self._update_issue, set()),
            ("GET", r"/labels/([^/]+)", self._get_label, set()),
            ("POST", r"/labels", self._create_label, set()),
        ]
        for verb, pattern, fn, allowed in routes:
            match = re.fullmatch(pattern, rest)
            if match and verb == method:
                unknown = set(query) - allowed
                if unknown:
                    raise HTTPFailure(400, f"unexpected query parameters {sorted(unknown)}")
                return fn(query, body, *match.groups())
        raise HTTPFailure(404, "Not Found")

    def _page(self, items: list[Any], query: dict[str, str], path: str
              ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", "30")), 100)
        page = int(query.get("page", "1"))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            nxt = {**query, "page": str(page + 1)}
            qs = "&".join(f"{k}={v}" for k, v in nxt.items())
            headers["Link"] = (f'<{self.url}{path}?{qs}>; rel="next", '
                               f'<{self.url}{path}?page=1>; rel="first"')
        return 200, chunk, headers

    def _issue(self, number: str) -> dict[str, Any]:
        issue = self.state.issues.get(int(number))
        if issue is None:
            raise HTTPFailure(404, "Not Found")
        return issue

    def _list_comments(self, query: dict[str, str], body: Any, number: str
                       ) -> tuple[int, Any, dict[str, str]]:
        self._issue(number)
        items = sorted(self.comments_on(int(number)), key=lambda c: c["id"])
        return self._page(items, query, f"/repos/{self.repository}/issues/{number}/comments")

    def _new_comment(self, issue: int, text: str, login: str) -> dict[str, Any]:
        self.state.next_id += 1
        cid = self.state.next_id
        comment = {"id": cid, "issue": issue, "body": text, "user": {"login": login},
                   "html_url": f"https://github.com/{self.repository}/pull/{issue}#issuecomment-{cid}"}
        self.state.comments[cid] = comment
        return comment

    def _require_body(self, body: Any, *keys: str) -> None:
        if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in keys):
            raise HTTPFailure(422, "Validation Failed",
                              [{"code": "missing_field", "field": ",".join(keys)}])

    def _create_comment(self, query: dict[str, str], body: Any, number: str
                        ) -> tuple[int, Any, dict[str, str]]:
        self._issue(number)
        self._require_body(body, "body")
        return 201, self._new_comment(int(number), body["body"], "github-actions[bot]"), {}

    def _update_comment(self, query: dict[str, str], body: Any, cid: str
                        ) -> tuple[int, Any, dict[str, str]]:
        comment = self.state.comments.get(int(cid))
        if comment is None:
            raise HTTPFailure(404, "Not Found")
        self._require_body(body, "body")
        comment["body"] = body["body"]
        return 200, comment, {}

    def _list_issues(self, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "open")
        wanted = [x for x in query.get("labels", "").split(",") if x]
        items = [i for i in sorted(self.state.issues.values(), key=lambda i: i["number"])
                 if (state == "all" or i["state"] == state)
                 and all(any(lab["name"] == w for lab in i["labels"]) for w in wanted)]
        return self._page(items, query, f"/repos/{self.repository}/issues")

    def _create_issue(self, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        self._require_body(body, "title", "body")
        labels = body.get("labels", [])
        missing = [name for name in labels if name not in self.state.labels]
        if missing:
            raise HTTPFailure(422, "Validation Failed",
                              [{"resource": "Label", "code": "invalid", "value": missing}])
        number = max(self.state.issues, default=0) + 1
        issue = {"number": number, "title": body["title"], "body": body["body"], "state": "open",
                 "state_reason": None, "labels": [self.state.labels[n] for n in labels],
                 "html_url": f"https://github.com/{self.repository}/issues/{number}"}
        self.state.issues[number] = issue
        return 201, issue, {}

    def _update_issue(self, query: dict[str, str], body: Any, number: str
                      ) -> tuple[int, Any, dict[str, str]]:
        issue = self._issue(number)
        allowed = {"title", "body", "state", "state_reason"}
        if not isinstance(body, dict) or set(body) - allowed:
            raise HTTPFailure(422, "Validation Failed")
        if body.get("state") not in (None, "open", "closed"):
            raise HTTPFailure(422, "Validation Failed", [{"field": "state", "code": "invalid"}])
        issue.update(body)
        return 200, issue, {}

    def _get_label(self, query: dict[str, str], body: Any, name: str
                   ) -> tuple[int, Any, dict[str, str]]:
        if name not in self.state.labels:
            raise HTTPFailure(404, "Not Found")
        return 200, self.state.labels[name], {}

    def _create_label(self, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        self._require_body(body, "name")
        if body["name"] in self.state.labels:
            raise HTTPFailure(422, "Validation Failed",
                              [{"resource": "Label", "code": "already_exists", "field": "name"}])
        if not re.fullmatch(r"[0-9a-fA-F]{6}", str(body.get("color", "ededed"))):
            raise HTTPFailure(422, "Validation Failed", [{"field": "color", "code": "invalid"}])
        self.state.labels[body["name"]] = {"name": body["name"], "color": body.get("color")}
        return 201, self.state.labels[body["name"]], {}
