"""`harvest emulator serve`: a foreground local Modal the plain `modal` CLI talks to."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import modal_cli

CLIENT_KEYS = ("MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH")


def _read_exports(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, str]:
    """The `export K=V` lines serve prints, read until all four are there."""
    exports: dict[str, str] = {}
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                exports[key] = shlex.split(value)[0]
            if line.startswith("# File bytes"):
                exports["files"] = line.rsplit(" ", 1)[1].strip()
            if line.startswith("# The local Modal is running"):
                exports["banner"] = line.strip()
            if all(k in exports for k in (*CLIENT_KEYS, "files", "banner")):
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return exports


@contextmanager
def serve(data_dir: Path, *args: str, env_extra: dict[str, str] | None = None) -> Iterator[
        tuple[subprocess.Popen[str], dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_KEYS}
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest_iac", "emulator", "serve", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        yield proc, _read_exports(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stats(files_url: str, exports: dict[str, str]) -> dict[str, Any]:
    """GET /_stats with the workspace token."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(files_url + "/_stats", headers={
        "x-modal-token-id": exports["MODAL_TOKEN_ID"],
        "x-modal-token-secret": exports["MODAL_TOKEN_SECRET"],
    })
    with no_proxy.open(request, timeout=10) as resp:
        return dict(json.load(resp))


def test_serve_prints_exports_the_modal_cli_uses(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    with serve(data_dir) as (proc, exports):
        files_url = exports.pop("files")
        exports.pop("banner")
        assert sorted(exports) == sorted(CLIENT_KEYS), proc.stderr and proc.stderr.read()
        assert exports["MODAL_SERVER_URL"].startswith("http://127.0.0.1:")
        modal_cli("volume", "create", "served", env_extra=exports)
        assert '"served"' in modal_cli("volume", "list", "--json", env_extra=exports).stdout
        assert _stats(files_url, exports)["calls"]["VolumeList"] == 1

        wrong = modal_cli("volume", "list", check=False,
                          env_extra={**exports, "MODAL_TOKEN_SECRET": "as-not-the-token"})
        assert wrong.returncode != 0 and "Invalid token" in wrong.stdout + wrong.stderr

        port = exports["MODAL_SERVER_URL"].rsplit(":", 1)[1]
        busy = subprocess.run(
            [sys.executable, "-m", "harvest_iac", "emulator", "serve", "--data-dir",
             str(tmp_path / "other"), "--port", port],
            capture_output=True, text=True, timeout=60,
        )
        assert busy.returncode == 1 and "cannot listen" in busy.stderr
        assert "Traceback" not in busy.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

    # The same data dir again: same token, the volume is still there.
    with serve(data_dir) as (_, again):
        again.pop("files")
        again.pop("banner")
        assert again["MODAL_TOKEN_SECRET"] == exports["MODAL_TOKEN_SECRET"]
        assert '"served"' in modal_cli("volume", "list", "--json", env_extra=again).stdout


def test_serve_error_rate_from_the_environment_reaches_the_client(tmp_path: Path) -> None:
    with serve(tmp_path, env_extra={"HARVEST_EMULATOR_ERROR_RATE": "1"}) as (_, exports):
        failed = modal_cli("volume", "list", check=False, env_extra=exports)
        assert failed.returncode != 0 and "injected fault" in failed.stdout + failed.stderr


def _stderr_after_stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None
    return proc.stderr.read()


def test_serve_beyond_loopback_warns_and_shows_where_it_listens(tmp_path: Path) -> None:
    with serve(tmp_path / "all", "--host", "0.0.0.0") as (proc, exports):
        port = exports["MODAL_SERVER_URL"].rsplit(":", 1)[1]
        files_port = exports["files"].rsplit(":", 1)[1]
        assert f"running on 0.0.0.0:{port} (files on 0.0.0.0:{files_port})" in exports["banner"]
        modal_cli("volume", "list", env_extra={k: exports[k] for k in CLIENT_KEYS})
        warnings = [line for line in _stderr_after_stop(proc).splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0] and "anyone who can reach it" in warnings[0]
    assert "can run code" in warnings[0]

    with serve(tmp_path / "local") as (proc, exports):
        port = exports["MODAL_SERVER_URL"].rsplit(":", 1)[1]
        assert f"running on 127.0.0.1:{port}" in exports["banner"]
        assert "warning" not in _stderr_after_stop(proc)


def test_verbose_logs_each_call_with_status_and_duration_never_headers(tmp_path: Path) -> None:
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(4096))
    with serve(tmp_path / "state", "-v") as (proc, exports):
        env = {k: exports[k] for k in CLIENT_KEYS}
        modal_cli("volume", "create", "logged", "--version", "2", env_extra=env)
        modal_cli("volume", "put", "logged", str(payload), "/data.bin", env_extra=env)
        assert "data.bin" in modal_cli("volume", "ls", "logged", env_extra=env).stdout
        missing = modal_cli("volume", "get", "logged", "/missing.bin", str(tmp_path / "out"),
                            check=False, env_extra=env)
        assert missing.returncode != 0
        again = modal_cli("volume", "create", "logged", "--version", "2", check=False, env_extra=env)
        assert again.returncode != 0
        log = _stderr_after_stop(proc)
    calls = re.findall(r"rpc (\w+) (\w+) \d+\.\d ms$", log, flags=re.MULTILINE)
    assert ("VolumeGetOrCreate", "OK") in calls
    assert ("VolumeListFiles2", "OK") in calls  # a streaming call
    assert ("VolumeListFiles2", "NOT_FOUND") in calls  # a failing streaming call
    assert ("VolumeGetOrCreate", "ALREADY_EXISTS") in calls  # a failing unary call
    assert re.search(r"http PUT /blocks/\{sha256\} 200 \d+\.\d ms$", log, flags=re.MULTILINE)
    assert exports["MODAL_TOKEN_SECRET"] not in log
    assert exports["MODAL_TOKEN_ID"] not in log
    assert "sig=" not in log
