"""Images against the local Modal, through the real client: get-or-create by recipe,
force_build with a streamed build log, from_id, publish / from_name, names list / delete,
and the snapshot-image interface the sandbox service uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import modal
import pytest

from tests.conftest import modal_cli


@pytest.fixture
def app(modal_environment: str) -> modal.App:
    return modal.App.lookup("image-builds", create_if_missing=True,
                            environment_name=modal_environment)


def test_app_lookup_create_if_missing_is_stable(modal_environment: str) -> None:
    first = modal.App.lookup("lookup-app", create_if_missing=True,
                             environment_name=modal_environment)
    again = modal.App.lookup("lookup-app", environment_name=modal_environment)
    assert first.app_id == again.app_id and first.app_id.startswith("ap-")
    with pytest.raises(modal.exception.NotFoundError):
        modal.App.lookup("no-such-app", environment_name=modal_environment)
    with pytest.raises(modal.exception.NotFoundError):
        modal.App.lookup("lookup-app", environment_name="main")  # scoped per environment


def _impl(obj: object) -> Any:
    """The client's own object behind its blocking wrapper (to read `_metadata`)."""
    from modal._utils.async_utils import synchronizer

    return synchronizer._translate_in(obj)


def _streams(lm: object) -> int:
    return int(lm.stats()["calls"].get("ImageJoinStreaming", 0))  # type: ignore[attr-defined]


def test_same_recipe_same_image_other_recipe_other_image(app: modal.App, local_modal: object) -> None:
    base = modal.Image.debian_slim(python_version="3.12")
    one = base.env({"RECIPE": "one"}).build(app)
    before = _streams(local_modal)
    two = modal.Image.debian_slim(python_version="3.12").env({"RECIPE": "one"}).build(app)
    assert _streams(local_modal) == before  # cached: answered "built" at once, no streaming
    other = base.env({"RECIPE": "other"}).build(app)
    assert one.object_id.startswith("im-")
    assert one.object_id == two.object_id
    assert other.object_id != one.object_id


def test_image_metadata_python_version_and_workdir(app: modal.App) -> None:
    image = modal.Image.debian_slim(python_version="3.11").workdir("/srv/app").build(app)
    meta = _impl(image)._metadata
    assert meta is not None
    assert meta.python_version_info.startswith("Python 3.11")
    assert meta.workdir == "/srv/app"
    again = modal.Image.from_id(image.object_id).build(app)
    assert again.object_id == image.object_id
    assert _impl(again)._metadata.workdir == "/srv/app"


def test_force_build_makes_a_new_image_streamed_with_a_log(
    app: modal.App, local_modal: object
) -> None:
    recipe = modal.Image.debian_slim().run_commands("echo forced-layer")
    cached = recipe.build(app)
    before = _streams(local_modal)
    forced = modal.Image.debian_slim().run_commands("echo forced-layer", force_build=True).build(app)
    assert forced.object_id != cached.object_id
    assert _streams(local_modal) == before + 1  # the build went through ImageJoinStreaming
    log = "".join(forced._logs())
    assert "echo forced-layer" in log
    # The newest build now answers the recipe.
    after = modal.Image.debian_slim().run_commands("echo forced-layer").build(app)
    assert after.object_id == forced.object_id


def test_from_id_unknown_is_not_found(app: modal.App) -> None:
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_id("im-" + "x" * 22).build(app)


def test_publish_from_name_and_names_cli(app: modal.App, modal_environment: str) -> None:
    env = modal_environment
    image = modal.Image.debian_slim().apt_install("curl").build(app)
    image.publish("tools:v1", environment_name=env)
    image.publish("tools", environment_name=env)  # :latest
    found = modal.Image.from_name("tools:v1", environment_name=env)
    assert found.build(app).object_id == image.object_id
    assert modal.Image.from_name(f"{env}/tools").build(app).object_id == image.object_id
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_name("tools:v2", environment_name=env).build(app)

    listed = json.loads(modal_cli("image", "names", "list", "--env", env, "--json").stdout)
    assert sorted(item["tag"] for item in listed) == ["tools:latest", "tools:v1"]
    assert {item["image_id"] for item in listed} == {image.object_id}
    assert "tools" not in modal_cli("image", "names", "list", "--env", "main", "--json").stdout

    newer = modal.Image.debian_slim().apt_install("curl", "git").build(app)
    newer.publish("tools", environment_name=env)
    revisions = json.loads(modal_cli("image", "names", "history", f"{env}/tools", "--json").stdout)
    assert [r["image_id"] for r in revisions] == [newer.object_id, image.object_id]
    assert modal.Image.from_name(f"{env}/tools").build(app).object_id == newer.object_id

    modal_cli("image", "names", "delete", "tools:v1", "--env", env, "--yes")
    listed = json.loads(modal_cli("image", "names", "list", "--env", env, "--json").stdout)
    assert [item["tag"] for item in listed] == ["tools:latest"]


def test_cli_image_build_force_build_streams_the_log(modal_environment: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\nRUN echo built-by-dockerfile\n")
    args = ("image", "build", "-t", "dock:v1", "--env", modal_environment, str(tmp_path))
    first = modal_cli(*args)
    assert "Image published as" in first.stdout
    forced = modal_cli(*args, "--force-build")
    assert "built-by-dockerfile" in forced.stdout + forced.stderr
    listed = json.loads(modal_cli("image", "names", "list", "--env", modal_environment,
                                  "--json").stdout)
    assert [item["tag"] for item in listed] == ["dock:v1"]


def test_snapshot_image_interface(local_modal: object, tmp_path: Path, app: modal.App) -> None:
    from harvest_iac.emulator.services.images import image_fs_dir, register_snapshot_image

    emu = local_modal.emulator  # type: ignore[attr-defined]
    fs = tmp_path / "fs"
    fs.mkdir()
    env_id = emu.environment_id("")
    snap_id = _on_loop(local_modal, lambda: register_snapshot_image(emu, env_id, fs))
    assert _on_loop(local_modal, lambda: image_fs_dir(emu, snap_id)) == fs.resolve()
    # The client sees an ordinary built image, and a layer on top inherits the directory.
    snap = modal.Image.from_id(snap_id)
    child = snap.run_commands("echo on-top").build(app)
    assert _on_loop(local_modal, lambda: image_fs_dir(emu, child.object_id)) == fs.resolve()
    plain = modal.Image.debian_slim().build(app)
    assert _on_loop(local_modal, lambda: image_fs_dir(emu, plain.object_id)) is None


def _on_loop(lm: object, fn: object) -> object:
    """Run `fn` on the emulator's event-loop thread (its SQLite connection lives there)."""
    import asyncio

    async def call() -> object:
        return fn()  # type: ignore[operator]

    loop = lm._loop  # type: ignore[attr-defined]
    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


def test_image_delete_forgets_a_snapshot_and_its_files(local_modal: object, app: modal.App,
                                                      modal_environment: str) -> None:
    """`modal.experimental.image_delete`: the image is gone (from_id, its published name) and so
    is its snapshot folder; a second delete is NOT_FOUND, as in Modal."""
    import modal.experimental
    from harvest_iac.emulator.services.images import image_fs_dir

    emu = local_modal.emulator  # type: ignore[attr-defined]
    sb = modal.Sandbox.create("sleep", "30", app=app, timeout=60)
    try:
        image = sb.snapshot_filesystem()
    finally:
        sb.terminate()
    folder = _on_loop(local_modal, lambda: image_fs_dir(emu, image.object_id))
    assert isinstance(folder, Path) and folder.is_dir()
    image.publish("warm", environment_name=modal_environment)
    modal.experimental.image_delete(image.object_id)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_id(image.object_id).build(app)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_name("warm", environment_name=modal_environment).build(app)
    assert not folder.exists()
    with pytest.raises(modal.exception.NotFoundError):
        modal.experimental.image_delete(image.object_id)
