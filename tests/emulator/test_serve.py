"""`harvest emulator serve`: a foreground local Modal the plain `modal` CLI talks to."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
            if all(k in exports for k in (*CLIENT_KEYS, "files")):
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


def test_serve_prints_exports_the_modal_cli_uses(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    with serve(data_dir) as (proc, exports):
        files_url = exports.pop("files")
        assert sorted(exports) == sorted(CLIENT_KEYS), proc.stderr and proc.stderr.read()
        assert exports["MODAL_SERVER_URL"].startswith("http://127.0.0.1:")
        modal_cli("volume", "create", "served", env_extra=exports)
        assert '"served"' in modal_cli("volume", "list", "--json", env_extra=exports).stdout
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(files_url + "/_stats", timeout=10) as resp:
            assert json.load(resp)["calls"]["VolumeList"] == 1

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
        assert again["MODAL_TOKEN_SECRET"] == exports["MODAL_TOKEN_SECRET"]
        assert '"served"' in modal_cli("volume", "list", "--json", env_extra=again).stdout


def test_serve_error_rate_from_the_environment_reaches_the_client(tmp_path: Path) -> None:
    with serve(tmp_path, env_extra={"HARVEST_EMULATOR_ERROR_RATE": "1"}) as (_, exports):
        failed = modal_cli("volume", "list", check=False, env_extra=exports)
        assert failed.returncode != 0 and "injected fault" in failed.stdout + failed.stderr
