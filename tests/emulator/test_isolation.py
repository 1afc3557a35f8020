"""Sandboxes isolated by bubblewrap, driven by the real modal SDK: volumes at their mount
paths, the container's own /tmp and workdir, no process outliving the sandbox, no network when
blocked, nothing of the host or of the emulator's data visible or writable, and symlinks that
cannot lead the filesystem API out of the sandbox."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import modal
import pytest
from modal.exception import SandboxFilesystemNotFoundError

from tests.emulator.isolation import BWRAP, _gone, sleeper, started

isolated = pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here")


@pytest.fixture
def app(modal_environment: str) -> modal.App:
    return modal.App.lookup("isolated", create_if_missing=True, environment_name=modal_environment)


def _run(sb: modal.Sandbox, script: str) -> tuple[int, str]:
    p = sb.exec("sh", "-c", script)
    out = p.stdout.read() + p.stderr.read()
    return p.wait(), out


@isolated
def test_volume_is_at_its_mount_path_and_writes_reach_it(app: modal.App, modal_environment: str) -> None:
    vol = modal.Volume.from_name("iso-" + uuid.uuid4().hex[:6], create_if_missing=True,
                                 environment_name=modal_environment)
    sb = modal.Sandbox.create(app=app, volumes={"/mnt/shared": vol}, timeout=60)
    try:
        assert _run(sb, "echo from-inside > /mnt/shared/seed.txt") == (0, "")
    finally:
        sb.terminate()
    assert b"".join(vol.read_file("seed.txt")) == b"from-inside\n"


@isolated
def test_tmp_and_workdir_are_the_containers_own_and_in_the_snapshot(app: modal.App, tmp_path: Path) -> None:
    sb = modal.Sandbox.create(app=app, workdir="/work", timeout=60)
    try:
        code, out = _run(sb, "echo scratch > /tmp/scratch.txt && echo home > /root/home.txt"
                             " && python -c 'import os; print(os.getcwd())'")
        assert (code, out) == (0, "/work\n")
        image = sb.snapshot_filesystem()
    finally:
        sb.terminate()
    assert not Path("/tmp/scratch.txt").exists()
    child = modal.Sandbox.create("cat", "/tmp/scratch.txt", "/root/home.txt", app=app, image=image, timeout=60)
    child.wait()
    assert child.stdout.read() == "scratch\nhome\n"


@isolated
def test_a_background_process_dies_with_terminate(app: modal.App) -> None:
    tag = sleeper()
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        assert _run(sb, f"sleep {tag} > /dev/null 2>&1 &")[0] == 0
        assert started(tag)  # it outlives the exec that started it, as on Modal
    finally:
        sb.terminate()
    assert _gone(tag)


@isolated
def test_block_network_blocks_a_connect_to_a_host_port(app: modal.App) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        connect = f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {port})))"
        blocked = modal.Sandbox.create(app=app, block_network=True, timeout=60)
        open_ = modal.Sandbox.create(app=app, timeout=60)
        try:
            assert blocked.exec("python", "-c", connect).stdout.read() == "111\n"  # ECONNREFUSED
            assert open_.exec("python", "-c", connect).stdout.read() == "0\n"
        finally:
            blocked.terminate()
            open_.terminate()


@isolated
def test_the_emulators_data_and_the_host_are_out_of_reach(app: modal.App, local_modal: object) -> None:
    database = Path(local_modal.data_dir) / "state.sqlite3"  # type: ignore[attr-defined]
    assert database.read_bytes().startswith(b"SQLite format 3")
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        code, out = _run(sb, f"cat {database}")
        assert code != 0 and "SQLite" not in out
        assert _run(sb, f"ls {database.parent}")[0] != 0
        assert _run(sb, "touch /usr/bin/harvest-probe")[0] != 0
        assert _run(sb, "echo 1 > /proc/sys/vm/swappiness")[0] != 0
        assert _run(sb, "hostname") == (0, "modal\n")
    finally:
        sb.terminate()


def test_a_symlink_cannot_lead_the_filesystem_api_out(app: modal.App, tmp_path: Path, isolation: str) -> None:
    outside = tmp_path / "host-only.txt"
    outside.write_text("host secret\n")
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        assert _run(sb, "ln -s / hostroot && ln -s ../../.. up")[0] == 0
        for escape in (f"/hostroot{outside}", f"/up{outside}", f"/../..{outside}"):
            with pytest.raises(SandboxFilesystemNotFoundError):
                sb.filesystem.read_text(escape)
        sb.filesystem.write_text("inside\n", "/hostroot/tmp/mine.txt")
        assert sb.filesystem.read_text("/tmp/mine.txt") == "inside\n"
    finally:
        sb.terminate()
    assert outside.read_text() == "host secret\n"


@isolated
def test_rm_rf_root_inside_leaves_the_host_intact(app: modal.App, local_modal: object, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("alive\n")
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        # The layout first, with harmless commands: nothing of the host is writable inside.
        assert _run(sb, "hostname") == (0, "modal\n")
        assert _run(sb, f"test -e {canary}")[0] != 0
        assert _run(sb, f"test -e {local_modal.data_dir}")[0] != 0  # type: ignore[attr-defined]
        for folder in ("/usr", "/etc", "/usr/bin", sb.exec("python", "-c",
                       "import sys; print(sys.base_prefix)").stdout.read().strip()):
            code, out = _run(sb, f"touch {folder}/harvest-probe")
            assert code != 0 and "Read-only file system" in out, folder
        _run(sb, "rm -rf --no-preserve-root /")
    finally:
        sb.terminate()
    assert canary.read_text() == "alive\n"
    assert Path("/usr/bin/sh").exists() and Path("/etc/passwd").exists()
    after = modal.Sandbox.create("echo", "still here", app=app, timeout=60)
    after.wait()
    assert after.stdout.read() == "still here\n"
