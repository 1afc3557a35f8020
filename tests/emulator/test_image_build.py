"""Images built layer by layer on the local Modal, driven by the real modal SDK and CLI:
pip packages (from wheels the test builds) importable in the image's containers and not on
the host, env, workdir, commands, local files, a Dockerfile's steps, cached layers (shared
by environments and local Modals), forced rebuilds, failed steps reported as Modal reports
them, and the build log in `modal deploy`'s output."""

from __future__ import annotations

import importlib.util
import textwrap
import uuid
from pathlib import Path

import modal
import pytest
from modal.exception import ImageBuildError

from harvest_iac.emulator.runtime.images import LAYER_CACHE_ENV, LayerCache, pip_install_args
from harvest_iac.emulator.server import LocalModal
from tests.conftest import modal_cli, run_client
from tests.emulator.isolation import BWRAP
from tests.wheels import build_wheel

needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here: build steps are refused")


@pytest.fixture
def app(modal_environment: str) -> modal.App:
    return modal.App.lookup("images", create_if_missing=True, environment_name=modal_environment)


def _output(app: modal.App, image: modal.Image, script: str) -> str:
    sb = modal.Sandbox.create("sh", "-c", script, app=app, image=image, timeout=60)
    sb.wait()
    return sb.stdout.read() + sb.stderr.read()


def test_pip_env_workdir_commands_and_files_take_effect(
    app: modal.App, tmp_path: Path, isolation: str
) -> None:
    name = "tiny_" + uuid.uuid4().hex[:8]
    build_wheel(tmp_path / "wheels", name, value="7")
    (tmp_path / "config.txt").write_text("configured\n")
    packages = (
        modal.Image.debian_slim()
        .add_local_dir(tmp_path / "wheels", "/wheels", copy=True)
        .pip_install(name, extra_options="--no-index --find-links /wheels")
        .env({"GREETING": "hello"})
    )
    image = (
        packages.workdir("/srv")
        .run_commands("echo made-by-run > made.txt")
        .add_local_file(tmp_path / "config.txt", "/etc-app/config.txt", copy=True)
    )
    if isolation == "host":  # pip installs into the layer from the host; other commands are refused
        with pytest.raises(ImageBuildError, match="run_commands need bubblewrap"):
            image.build(app)
        out = _output(app, packages, f"python -c 'import {name}; print({name}.VALUE)'; echo $GREETING")
        assert out == "7\nhello\n"
        assert importlib.util.find_spec(name) is None
        return
    out = _output(app, image, f"python -c 'import {name}; print({name}.VALUE)'; echo $GREETING; pwd;"
                               " cat made.txt /etc-app/config.txt")
    assert out == "7\nhello\n/srv\nmade-by-run\nconfigured\n"
    assert importlib.util.find_spec(name) is None  # installed in the image, not on the host


def test_layers_are_cached_and_force_build_rebuilds(app: modal.App, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = uuid.uuid4().hex
    image = modal.Image.debian_slim().run_commands(f"echo {marker} >> /built.txt")
    image.build(app)
    again = modal.Image.debian_slim().run_commands(f"echo {marker} >> /built.txt")
    again.build(app)
    assert again.object_id == image.object_id
    forced = modal.Image.debian_slim().run_commands(f"echo {marker} >> /built.txt", force_build=True)
    forced.build(app)
    assert forced.object_id != image.object_id
    assert _output(app, forced, "cat /built.txt") == f"{marker}\n"
    monkeypatch.setenv("MODAL_FORCE_BUILD", "1")
    env_forced = modal.Image.debian_slim().run_commands(f"echo {marker} >> /built.txt")
    env_forced.build(app)
    assert env_forced.object_id not in (image.object_id, forced.object_id)


def test_a_failed_step_fails_the_build_naming_the_step_and_exit_code(app: modal.App) -> None:
    with pytest.raises(ImageBuildError) as err:
        modal.Image.debian_slim().run_commands("echo ok", "exit 3").build(app)
    assert "failed" in str(err.value) and "RUN exit 3" in str(err.value) and "code 3" in str(err.value)


@needs_bwrap
def test_pip_install_finds_packages_where_the_hosts_pip_does(
    app: modal.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "mirrored_" + uuid.uuid4().hex[:8]
    build_wheel(tmp_path / "mirror", name, value="11")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "mirror"))  # with PIP_NO_INDEX=1 (conftest)
    image = modal.Image.debian_slim().pip_install(name)
    assert _output(app, image, f"python -c 'import {name}; print({name}.VALUE)'") == "11\n"


def test_a_failing_pip_install_fails_the_build_with_pips_reason(app: modal.App, isolation: str) -> None:
    missing = "not_in_any_index_" + uuid.uuid4().hex[:8]
    with pytest.raises(ImageBuildError) as err:
        modal.Image.debian_slim().pip_install(missing).build(app)
    message = str(err.value)
    assert f"Step 1: RUN python -m pip install {missing}" in message
    assert f"exited with code 1: ERROR: No matching distribution found for {missing}" in message


@pytest.mark.parametrize(("command", "args"), [
    ("python -m pip install 'numpy<2' requests --find-links /wheels",
     ["numpy<2", "requests", "--find-links", "/wheels"]),
    ('python3 -m pip install "https://example.com/a.whl"', ["https://example.com/a.whl"]),
    ("/.uv/uv pip install --python $(command -v python) --compile-bytecode --prerelease allow "
     "--requirements /.uv/0/requirements.txt --no-cache a", ["--pre", "-r", "/.uv/0/requirements.txt",
                                                             "--no-cache-dir", "a"]),
    ("pip install a && rm -rf /", None),
    ("pip install $PACKAGE", None),
    ("pip install a > /tmp/log", None),
    ("apt-get install -y git", None),
])
def test_without_bubblewrap_only_a_plain_pip_install_runs_on_the_host(command: str, args: list[str] | None) -> None:
    assert pip_install_args(command) == args


def test_apt_install_needs_the_package_on_the_host(app: modal.App) -> None:
    assert _output(app, modal.Image.debian_slim().apt_install("bash"), "echo ok") == "ok\n"
    missing = "no-such-package-" + uuid.uuid4().hex[:6]
    with pytest.raises(ImageBuildError, match=missing):
        modal.Image.debian_slim().apt_install(missing).build(app)


def test_modal_deploy_streams_the_build_log(tmp_path: Path, modal_environment: str) -> None:
    marker = "log-" + uuid.uuid4().hex
    source = tmp_path / "built_app.py"
    source.write_text(textwrap.dedent(f"""
        import modal
        image = modal.Image.debian_slim().run_commands("echo {marker}")
        app = modal.App("built-app", image=image)

        @app.function()
        def f() -> None:
            pass
    """))
    first = modal_cli("deploy", str(source), "--env", modal_environment)
    assert marker in first.stdout + first.stderr


_CHAIN = """
import modal
first = modal.Image.debian_slim().run_commands("cat /proc/sys/kernel/random/uuid > /a.txt # {marker}")
second = first.env({{"STAGE": "two"}}).run_commands("cat /proc/sys/kernel/random/uuid > /b.txt")
"""
_SHOW_CHAIN = """
app = modal.App.lookup("images", create_if_missing=True)
sb = modal.Sandbox.create("sh", "-c", "cat /a.txt /b.txt; echo $STAGE", app=app, image=second, timeout=60)
sb.wait()
print(sb.stdout.read(), end="")
"""


@needs_bwrap
def test_a_recipe_chain_is_built_once_for_every_environment_and_local_modal_sharing_the_cache(
    app: modal.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _CHAIN.format(marker=uuid.uuid4().hex)
    chain: dict[str, modal.Image] = {}
    exec(code, chain)
    built = _output(app, chain["second"], "cat /a.txt /b.txt; echo $STAGE")
    assert len(set(built.split())) == 3 and built.endswith("\ntwo\n")  # two random ids, then the env

    other_env = "t-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(other_env)
    again: dict[str, modal.Image] = {}
    exec(code, again)
    other_app = modal.App.lookup("images", create_if_missing=True, environment_name=other_env)
    assert _output(other_app, again["second"], "cat /a.txt /b.txt; echo $STAGE") == built
    assert again["second"].object_id != chain["second"].object_id  # an image of each environment

    with LocalModal(tmp_path / "sharing") as sharing:  # the session's HARVEST_LAYER_CACHE
        assert run_client(sharing, code + _SHOW_CHAIN) == built
    monkeypatch.delenv(LAYER_CACHE_ENV)
    with LocalModal(tmp_path / "own") as own:  # its own cache, in its data folder: built again
        rebuilt = run_client(own, code + _SHOW_CHAIN)
    assert rebuilt != built and rebuilt.endswith("\ntwo\n")
    assert LayerCache.of(tmp_path / "own").root == (tmp_path / "own" / "layer-cache").resolve()
    assert any((tmp_path / "own" / "layer-cache").iterdir())


@needs_bwrap
def test_a_dockerfiles_steps_run_on_the_host_userland(tmp_path: Path, modal_environment: str) -> None:
    name = "dockerpkg_" + uuid.uuid4().hex[:8]
    build_wheel(tmp_path / "wheels", name, value="5")
    (tmp_path / "hello.txt").write_text("from the context\n")
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(f"""\
        # a comment
        FROM python:3.11-slim
        ENV GREETING=hi
        WORKDIR /srv
        COPY hello.txt ./hello.txt
        COPY wheels /wheels
        RUN pip install --no-index --find-links /wheels {name} && echo ran > ran.txt
        CMD ["python"]
    """))
    (tmp_path / "docker_app.py").write_text(textwrap.dedent("""
        import modal
        image = modal.Image.from_dockerfile("Dockerfile")
        app = modal.App("docker-app", image=image)

        @app.function()
        def f() -> None:
            pass
    """))
    deployed = modal_cli("deploy", "docker_app.py", "--env", modal_environment, cwd=tmp_path)
    log = deployed.stdout + deployed.stderr
    assert "local Modal: the host's userland stands in for python:3.11-slim" in log
    assert f"Step 6: RUN pip install --no-index --find-links /wheels {name}" in log

    image = modal.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path)
    app = modal.App.lookup("images", create_if_missing=True, environment_name=modal_environment)
    out = _output(app, image, f"echo $GREETING; pwd; cat hello.txt ran.txt; python -c 'import {name}; print({name}.VALUE)'")
    assert out == "hi\n/srv\nfrom the context\nran\n5\n"


def test_a_multi_stage_dockerfile_fails_the_build_saying_so(app: modal.App, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim AS build\nRUN true\nFROM python:3.11-slim\n")
    with pytest.raises(ImageBuildError, match="Step 2: FROM python:3.11-slim: multi-stage Dockerfiles"):
        modal.Image.from_dockerfile(tmp_path / "Dockerfile").build(app)


def test_add_python_is_the_hosts_python(app: modal.App) -> None:
    image = modal.Image.from_registry("ubuntu:22.04", add_python="3.11")
    assert _output(app, image, "python -c 'print(40 + 2)'; echo $TERMINFO_DIRS | cut -d: -f1") == "42\n/etc/terminfo\n"
