"""No container outlives the local Modal: stopping it stops them; one killed outright leaves
them behind, and the next one started on the same data directory ends them. Calls live in
memory: after a restart a call made before is gone; a web endpoint keeps its URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import modal_cli
from tests.emulator.test_serve import serve

APP = '''
import os
import modal

app = modal.App("rt-restart")


@app.function(timeout=10)
def pid() -> int:
    return os.getpid()


@app.function()
def nap() -> None:
    import time
    time.sleep(600)


@app.function()
@modal.asgi_app()
def site():
    async def page(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"still here"})
    return page
'''
CALL = """
import json, sys, modal
pid = modal.Function.from_name("rt-restart", "pid").remote()
call = modal.Function.from_name("rt-restart", "nap").spawn()
url = modal.Function.from_name("rt-restart", "site").get_web_url()
print(json.dumps({"pid": pid, "call": call.object_id, "url": url}))
"""
GET = """
import sys, modal
try:
    modal.FunctionCall.from_id(sys.argv[1]).get(timeout=1)
except modal.exception.OutputExpiredError:
    print("expired")
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def python(code: str, exports: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **exports})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_containers_end_with_the_local_modal_even_when_it_was_killed(tmp_path: Path) -> None:
    """As host processes (the pids are the host's); an isolated container dies with the
    process that started it."""
    data = tmp_path / "state"
    (tmp_path / "restart_app.py").write_text(APP)
    host = {"HARVEST_ISOLATION": "host"}
    with serve(data, env_extra=host) as (proc, exports):
        exports.pop("files")
        modal_cli("deploy", str(tmp_path / "restart_app.py"), env_extra=exports, cwd=tmp_path)
        started = json.loads(python(CALL, exports))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    assert alive(started["pid"])  # orphaned by the kill
    with serve(data, env_extra=host) as (proc, exports):
        exports.pop("files")
        wait_until(lambda: not alive(started["pid"]))
        assert not any((data / "containers").glob("ta-*"))
        assert python(GET, exports, started["call"]).strip() == "expired"  # calls live in memory
        again = json.loads(python(CALL, exports))
        assert again["url"] == started["url"]  # a web endpoint keeps its port
        with urllib.request.urlopen(again["url"], timeout=60) as page:
            assert page.read() == b"still here"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not alive(again["pid"])


def test_calls_complete_when_rpcs_fail(tmp_path: Path) -> None:
    """A fifth of the call path's RPCs fail, half of them after their effect landed (a container's input
    handed out, its answer lost): every call still returns its result (a lost input would
    time out after 10 s)."""
    from harvest_iac.emulator.server import LocalModal

    (tmp_path / "restart_app.py").write_text(APP)
    with LocalModal(tmp_path / "state") as lm:
        modal_cli("deploy", str(tmp_path / "restart_app.py"), env_extra=lm.client_env(), cwd=tmp_path)
        # Only the call path's RPCs fail, so the number of faults does not hang on how many
        # heartbeats or log polls happen to run: ~0.2 x 4 RPCs x 20 calls.
        lm.faults.methods = frozenset({"FunctionMap", "FunctionGetOutputs",
                                       "FunctionGetInputs", "FunctionPutOutputs"})
        lm.faults.error_rate = 0.2
        out = python(
            "import modal; f = modal.Function.from_name('rt-restart', 'pid')\n"
            "print(len({f.remote() for _ in range(20)}))", lm.client_env())
        injected = lm.stats()["injected_errors"]
    assert out.strip() == "1" and injected > 5
