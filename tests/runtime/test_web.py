"""Web endpoints on the local Modal: `@modal.asgi_app`, `@modal.wsgi_app`,
`@modal.fastapi_endpoint` (with `requires_proxy_auth`) and `@modal.web_server`, each served
on a local port whose URL `modal deploy` and `modal serve` print and `get_web_url()` returns;
an HTTP request runs through Modal's own container entrypoint."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import modal
import pytest
from modal_proto import api_pb2

from harvest_iac.emulator.server import free_port
from tests.conftest import modal_cli, raw_rpc

APP = Path(__file__).parent / "apps" / "web_app.py"
ENDPOINTS = ("echo", "hello", "add", "secret_word", "files")


@dataclass
class Deployed:
    env: str
    output: str

    def url(self, name: str) -> str:
        found = modal.Function.from_name("rt-web", name, environment_name=self.env).get_web_url()
        assert found, f"{name} has no web URL"
        return found


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())


@pytest.fixture(scope="module")
def deployed(local_modal: object) -> Deployed:
    env = "rw-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(env)
    done = modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent,
                     env_extra={"RT_WEB_PORT": str(free_port("0.0.0.0"))})
    return Deployed(env, done.stdout)


def test_deploy_prints_each_endpoints_url_and_get_web_url_returns_it(deployed: Deployed) -> None:
    urls = [deployed.url(name) for name in ENDPOINTS]
    assert len(set(urls)) == len(ENDPOINTS)
    for url in urls:
        assert url.startswith("http://127.0.0.1:") and url in deployed.output


def test_an_asgi_app_answers_with_its_status_headers_and_body(deployed: Deployed) -> None:
    url = deployed.url("echo")
    got = request(url + "/hi?x=1")
    assert (got.status, got.body) == (200, b"GET /hi ?x=1 ")
    assert got.headers["x-echo"] == "yes" and got.headers.get_all("set-cookie") == ["a=1", "b=2"]
    posted = request(url + "/up", data=b"payload")
    assert (posted.status, posted.body) == (201, b"POST /up ? payload")
    streamed = request(url + "/stream")
    assert streamed.body == b"one two three" and streamed.headers["transfer-encoding"] == "chunked"
    assert request(url + "/boom").status == 500
    with pytest.raises(http.client.IncompleteRead):  # failed after it started: cut short
        request(url + "/halfway")


def test_a_request_body_is_streamed_to_the_app(deployed: Deployed) -> None:
    address = urlparse(deployed.url("echo"))
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    try:
        conn.request("POST", "/chunks", body=iter([b"a" * 70000, b"b", b"c"]), encode_chunked=True)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, b"POST /chunks ? " + b"a" * 70000 + b"bc")
    finally:
        conn.close()


def test_a_client_that_goes_away_cancels_the_call(deployed: Deployed) -> None:
    address = urlparse(deployed.url("echo"))
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    conn.request("GET", "/forever")
    assert conn.getresponse().read(5) == b"tick\n"
    conn.close()
    deadline = time.monotonic() + 30
    while "the client went away" not in modal_cli("app", "logs", "rt-web", "--env", deployed.env).stdout:
        assert time.monotonic() < deadline, "the call was not cancelled"
        time.sleep(0.5)


def test_wsgi_and_fastapi_endpoints(deployed: Deployed) -> None:
    wsgi = request(deployed.url("hello") + "/w", data=b"abc")
    assert (wsgi.status, wsgi.headers["x-wsgi"], wsgi.body) == (202, "1", b"wsgi POST /w abc")
    added = request(deployed.url("add"), data=json.dumps({"a": 2, "b": 3}).encode(),
                    headers={"Content-Type": "application/json"})
    assert (added.status, json.loads(added.body)) == (200, {"sum": 5})


def block_unauthenticated(env: str, choice: int) -> None:
    raw_rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(
        current_name=env, block_unauthenticated_resources=choice))  # type: ignore[arg-type]


def test_proxy_auth_needs_the_local_modals_token(deployed: Deployed) -> None:
    url = deployed.url("secret_word")
    assert request(url).status == 401
    token = {"Modal-Key": os.environ["MODAL_TOKEN_ID"], "Modal-Secret": os.environ["MODAL_TOKEN_SECRET"]}
    assert request(url, headers=token).body == b'"swordfish"'
    hello = deployed.url("hello")  # no proxy auth of its own, but its environment blocks
    block_unauthenticated(deployed.env, api_pb2.ENVIRONMENT_BLOCK_UNAUTHENTICATED_RESOURCES_BLOCK)
    try:
        assert request(hello).status == 401 and request(hello, headers=token).status == 202
    finally:
        block_unauthenticated(deployed.env, api_pb2.ENVIRONMENT_BLOCK_UNAUTHENTICATED_RESOURCES_INHERIT)
    assert request(hello).status == 202


def test_a_web_server_is_reached_through_modals_proxy(deployed: Deployed) -> None:
    got = request(deployed.url("files") + "/hello.txt")
    assert (got.status, got.body) == (200, b"served by http.server\n")


def first_url_after(lines: Iterator[str], marker: str) -> str:
    """The first URL printed after the line with `marker` (`modal serve` prints a function's
    URL below it), before the app is served."""
    seen = False
    for line in lines:
        assert "Serving..." not in line, f"no URL after {marker!r}"
        seen = seen or marker in line
        if seen and "http://" in line:
            return line[line.index("http://"):].split()[0]
    raise AssertionError(f"no URL after {marker!r}")


def test_modal_serve_prints_a_url_that_serves(deployed: Deployed, tmp_path: Path) -> None:
    # Served from a folder of its own: `modal serve` reloads on any change in the folder it
    # watches, and other tests (other workers) deploying the apps beside it write there.
    app = tmp_path / APP.name
    shutil.copy(APP, app)
    serve = subprocess.Popen(
        [sys.executable, "-m", "modal", "serve", str(app), "--env", deployed.env],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "RT_WEB_PORT": str(free_port("0.0.0.0"))},
    )
    try:
        assert serve.stdout is not None
        address = first_url_after(iter(serve.stdout.readline, ""), "Function echo")
        assert address != deployed.url("echo")  # the ephemeral app's own endpoint
        assert request(address + "/served").body == b"GET /served ? "
    finally:
        stop(serve)


def stop(serve: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user stops `modal serve`, then a kill if it has not stopped in 30 s.
    Known defect: in the whole suite on CI (two workers), `modal serve` twice did not stop
    on Ctrl-C, and never did when this file ran alone; what this test checks is the URL."""
    serve.send_signal(signal.SIGINT)
    try:
        serve.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        serve.kill()
        serve.communicate()


def test_stopping_the_app_stops_its_endpoints(deployed: Deployed) -> None:
    url = deployed.url("echo")
    modal_cli("app", "stop", "rt-web", "--yes", "--env", deployed.env)
    with pytest.raises(urllib.error.URLError):
        request(url)
