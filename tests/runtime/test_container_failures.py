"""A container that cannot start fails the calls waiting for it, with its error: an import
that raises in the container, and a start that takes longer than `startup_timeout`."""

from __future__ import annotations

from pathlib import Path

import modal
import pytest

from tests.conftest import modal_cli

APP = '''
import os
import time

import modal

app = modal.App("rt-broken-start")

if os.environ.get("MODAL_IS_REMOTE"):
    {inside_container}


@app.function(startup_timeout=2)
def f() -> int:
    return 1
'''


def deploy(tmp_path: Path, env: str, inside_container: str) -> modal.Function:
    (tmp_path / "broken.py").write_text(APP.format(inside_container=inside_container))
    modal_cli("deploy", str(tmp_path / "broken.py"), "--env", env, cwd=tmp_path)
    return modal.Function.from_name("rt-broken-start", "f", environment_name=env)


def test_an_import_error_in_the_container_reaches_the_caller(modal_environment: str, tmp_path: Path) -> None:
    f = deploy(tmp_path, modal_environment, 'raise RuntimeError("no database here")')
    with pytest.raises(RuntimeError, match="no database here"):
        f.remote()


def test_a_container_that_does_not_start_in_time_fails_the_call(modal_environment: str, tmp_path: Path) -> None:
    f = deploy(tmp_path, modal_environment, "time.sleep(600)")
    with pytest.raises(Exception, match="did not start within 2s"):
        f.remote()
