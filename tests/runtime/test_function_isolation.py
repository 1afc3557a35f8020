"""Function containers on the local Modal run their image: isolated by bubblewrap (the image's
pip packages, env and workdir; volumes at their mount paths; the code at /root; no view of the
local Modal's data folder; their own PID namespace; no network with `block_network`, the
local Modal still reached), and as host processes without it (pip layers built on the host,
seen by the container's Python, the host's environment untouched)."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import modal
import pytest

from tests.conftest import modal_cli
from tests.emulator.isolation import BWRAP, _gone
from tests.wheels import build_wheel

APP = """\
import os
import socket
import subprocess

import modal

app = modal.App("{app}")
image = modal.Image.debian_slim().pip_install("{package}").env({{"GREETING": "hi"}}).workdir("/srv")
vol = modal.Volume.from_name("{volume}", create_if_missing=True)


@app.function(image=image, volumes={{"/data": vol}}, max_inputs=1)
def inside(data_dir: str, tag: str) -> dict:
    import {package}

    subprocess.Popen(["sleep", tag], start_new_session=True)  # left behind, in a session of its own
    folder = os.path.join(os.environ.get("HARVEST_CONTAINER_ROOT", "/"), "data")
    with open(os.path.join(folder, "seed.txt")) as f:
        seed = f.read()
    return {{"value": {package}.VALUE, "greeting": os.environ.get("GREETING"), "cwd": os.getcwd(),
            "seed": seed, "sees_data_dir": os.path.exists(os.path.join(data_dir, "state.sqlite3")),
            "code": os.path.exists("/root/{app_file}")}}


@app.function(block_network=True)
def offline(port: int) -> str:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return type(exc).__name__
    return "connected"
"""


def _deploy(tmp_path: Path, wheelhouse: Path, env: str) -> tuple[str, str]:
    """Deploy an app whose image pip-installs a package of its own: (app name, package)."""
    package = "iso_" + uuid.uuid4().hex[:8]
    build_wheel(wheelhouse, package, value="17")
    app = "rt-iso-" + uuid.uuid4().hex[:6]
    source = tmp_path / "iso_app.py"
    source.write_text(APP.format(app=app, package=package, volume="iso-data", app_file=source.name))
    vol = modal.Volume.from_name("iso-data", environment_name=env, create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(_file(tmp_path / "seed.txt", "seeded\n"), "/seed.txt")
    modal_cli("deploy", str(source), "--env", env, cwd=tmp_path)
    return app, package


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def host_mode(local_modal: object) -> Iterator[None]:
    """Function containers and image builds as host processes (no bubblewrap) for one test."""
    from harvest_iac.emulator.runtime.launcher import choose_launcher

    emu = local_modal.emulator  # type: ignore[attr-defined]
    saved = emu.launcher
    emu.launcher = choose_launcher({"HARVEST_ISOLATION": "host"})
    yield
    emu.launcher = saved


@pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here")
def test_an_isolated_function_container_runs_its_image_and_sees_nothing_else(
    tmp_path: Path, wheelhouse: Path, modal_environment: str, local_modal: object
) -> None:
    app, package = _deploy(tmp_path, wheelhouse, modal_environment)
    tag = f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"
    data_dir = str(local_modal.data_dir.resolve())  # type: ignore[attr-defined]
    got = modal.Function.from_name(app, "inside", environment_name=modal_environment).remote(data_dir, tag)
    assert got == {"value": 17, "greeting": "hi", "cwd": "/srv", "seed": "seeded\n",
                   "sees_data_dir": False, "code": True}
    assert importlib.util.find_spec(package) is None  # in the image, not on the host
    assert _gone(tag)  # the container ended after its one input; nothing of it lives on
    port = int(local_modal.client_env()["MODAL_SERVER_URL"].rsplit(":", 1)[1])  # type: ignore[attr-defined]
    offline = modal.Function.from_name(app, "offline", environment_name=modal_environment)
    assert offline.remote(port) == "ConnectionRefusedError"  # no network, yet it got its input


def test_host_mode_builds_pip_layers_that_the_containers_import(
    tmp_path: Path, wheelhouse: Path, modal_environment: str, host_mode: None
) -> None:
    app, package = _deploy(tmp_path, wheelhouse, modal_environment)
    got = modal.Function.from_name(app, "inside", environment_name=modal_environment).remote("/nonexistent", "1")
    assert (got["value"], got["greeting"], got["seed"]) == (17, "hi", "seeded\n")
    assert importlib.util.find_spec(package) is None  # the host's environment is untouched
    image = modal.Image.debian_slim().run_commands("echo changed > /etc/harvest-host-test")
    with pytest.raises(modal.exception.ImageBuildError, match="need bubblewrap"):
        image.build(modal.App.lookup("iso-refused", create_if_missing=True,
                                     environment_name=modal_environment))
