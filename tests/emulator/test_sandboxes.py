"""Sandboxes of the local Modal, driven by the real modal SDK: create, exec with streamed
stdout/stderr and exit codes, stdin, wait/terminate/poll, timeouts, list, from_name,
filesystem snapshots, volumes, and no process outliving its sandbox or the emulator."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import modal
import pytest
from modal.exception import NotFoundError, SandboxTerminatedError, SandboxTimeoutError

from tests.conftest import modal_cli, raw_rpc
from tests.emulator.isolation import BWRAP, _gone, sleeper, started


@pytest.fixture
def app(modal_environment: str) -> modal.App:
    """An app in the test's own environment, as users get one for sandboxes."""
    return modal.App.lookup("sandboxes", create_if_missing=True, environment_name=modal_environment)




def _data_files(local_modal: object) -> list[Path]:
    data_dir = local_modal.data_dir  # type: ignore[attr-defined]
    return [p for p in Path(data_dir).rglob("*") if p.is_file()]


def test_exec_streams_stdout_stderr_and_exit_codes(
    app: modal.App, local_modal: object, caplog: pytest.LogCaptureFixture, isolation: str
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_value = "sv-" + uuid.uuid4().hex
    sb = modal.Sandbox.create(
        app=app,
        image=modal.Image.debian_slim(),
        secrets=[modal.Secret.from_dict({"SANDBOX_SECRET": secret_value})],
        timeout=60,
    )
    try:
        ok = sb.exec("echo", "hello", "world")
        assert ok.stdout.read() == "hello world\n"
        assert ok.stderr.read() == ""
        assert ok.wait() == 0 and ok.returncode == 0

        script = (
            "import os, sys\n"
            "print('secret=' + os.environ['SANDBOX_SECRET'])\n"
            "print('to stderr', file=sys.stderr)\n"
            "sys.exit(3)\n"
        )
        bad = sb.exec("python", "-c", script)
        assert bad.stdout.read() == f"secret={secret_value}\n"
        assert bad.stderr.read() == "to stderr\n"
        assert bad.wait() == 3

        lines = sb.exec("sh", "-c", "for i in 1 2 3; do echo line $i; done", bufsize=1)
        assert list(lines.stdout) == ["line 1\n", "line 2\n", "line 3\n"]

        missing = sb.exec("no-such-command-here")
        assert missing.wait() == 127
        assert "no-such-command-here" in missing.stderr.read()
    finally:
        sb.terminate()
    assert secret_value not in caplog.text
    for path in _data_files(local_modal):  # the inline secret's value was never stored
        assert secret_value.encode() not in path.read_bytes(), path


def test_named_secret_and_exec_env(app: modal.App, modal_environment: str) -> None:
    name = "sb-secret-" + uuid.uuid4().hex[:6]
    modal.Secret.objects.create(name, {"NAMED_TOKEN": "named-value"}, environment_name=modal_environment)
    secret = modal.Secret.from_name(name, environment_name=modal_environment)
    sb = modal.Sandbox.create(app=app, secrets=[secret], timeout=60)
    try:
        p = sb.exec("sh", "-c", 'echo "$NAMED_TOKEN $EXTRA"', env={"EXTRA": "from-exec"})
        assert p.stdout.read() == "named-value from-exec\n"
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_exec_reads_stdin(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        p = sb.exec("python", "-c", "import sys; print(sys.stdin.read().upper(), end='')")
        p.stdin.write(b"first line\n")
        p.stdin.write("second line\n")
        p.stdin.write_eof()
        p.stdin.drain()
        assert p.stdout.read() == "FIRST LINE\nSECOND LINE\n"
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_entrypoint_output_and_exit_code(app: modal.App) -> None:
    sb = modal.Sandbox.create("sh", "-c", "echo out; echo err >&2; exit 5", app=app, timeout=60)
    sb.wait()
    assert sb.returncode == 5
    assert sb.poll() == 5
    assert sb.stdout.read() == "out\n"
    assert sb.stderr.read() == "err\n"


def test_modal_container_exec_cli_and_ignored_resources(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, timeout=60, cpu=0.5, memory=512, block_network=True)
    try:
        # The client's `container exec` returns at the exit status without waiting for its
        # output printer (a race in the client, not the server): give it a moment to print.
        proc = modal_cli("container", "exec", sb._get_task_id(), "--", "sh", "-c",
                         "echo via cli; sleep 0.3")
        assert proc.stdout == "via cli\n"
    finally:
        sb.terminate()


def test_entrypoint_reads_stdin_and_tags(app: modal.App) -> None:
    sb = modal.Sandbox.create(
        "python", "-c", "import sys; print(sys.stdin.readline().strip()[::-1])",
        app=app, timeout=60, tags={"team": "a"},
    )
    sb.stdin.write(b"abc\n")
    sb.stdin.drain()
    sb.wait()
    assert sb.stdout.read() == "cba\n"
    assert sb.get_tags() == {"team": "a"}
    sb.set_tags({"team": "b", "x": "y"})
    assert modal.Sandbox.from_id(sb.object_id).get_tags() == {"team": "b", "x": "y"}


def test_idle_timeout_ends_an_idle_sandbox(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, timeout=60, idle_timeout=1)
    sb.wait()  # an idle timeout is not an error
    assert sb.returncode == 0
    assert sb.poll() == 0


def test_poll_terminate_and_wait(app: modal.App, isolation: str) -> None:
    tag = sleeper()
    sb = modal.Sandbox.create("sh", "-c", f"echo $$ > pid; exec sleep {tag}", app=app, timeout=60)
    probe = sb.exec("sh", "-c", "while [ ! -s pid ]; do sleep 0.02; done; cat pid")
    assert int(probe.stdout.read()) > 0
    assert started(tag)
    assert sb.poll() is None and sb.returncode is None
    sb.terminate()
    with pytest.raises(SandboxTerminatedError):
        sb.wait()
    assert sb.returncode == 137
    assert sb.poll() == 137
    assert _gone(tag)
    with pytest.raises(Exception):
        sb.exec("echo", "too late").wait()


def test_sandbox_timeout_kills_its_processes(app: modal.App, isolation: str) -> None:
    tag = sleeper()
    sb = modal.Sandbox.create("sh", "-c", f"sleep {tag} & echo started; wait", app=app, timeout=1)
    assert next(iter(sb.stdout)) == "started\n"
    assert started(tag)
    with pytest.raises(SandboxTimeoutError):
        sb.wait()
    assert sb.returncode == 124
    assert _gone(tag)


def test_exec_timeout_kills_the_command(app: modal.App) -> None:
    tag = sleeper()
    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        p = sb.exec("sh", "-c", f"echo started; exec sleep {tag}", timeout=1)
        assert next(iter(p.stdout)) == "started\n"
        assert p.wait() != 0
        assert _gone(tag)
        assert sb.poll() is None  # only the command ended, not the sandbox
    finally:
        sb.terminate()


def test_list_from_name_and_from_id(app: modal.App, modal_environment: str) -> None:
    first = modal.Sandbox.create(app=app, name="first", timeout=60)
    second = modal.Sandbox.create(app=app, name="second", timeout=60, tags={"role": "worker"})
    try:
        listed = {s.object_id for s in modal.Sandbox.list(app_id=app.app_id)}
        assert listed == {first.object_id, second.object_id}
        tagged = {s.object_id for s in modal.Sandbox.list(app_id=app.app_id, tags={"role": "worker"})}
        assert tagged == {second.object_id}

        found = modal.Sandbox.from_name("sandboxes", "second", environment_name=modal_environment)
        assert found.object_id == second.object_id
        assert found.exec("echo", "via from_name").stdout.read() == "via from_name\n"
        with pytest.raises(NotFoundError):
            modal.Sandbox.from_name("sandboxes", "nobody", environment_name=modal_environment)
        with pytest.raises(modal.exception.AlreadyExistsError):
            modal.Sandbox.create(app=app, name="first", timeout=60)

        again = modal.Sandbox.from_id(first.object_id)
        assert again.poll() is None
        first.terminate()
        assert {s.object_id for s in modal.Sandbox.list(app_id=app.app_id)} == {second.object_id}
        assert modal.Sandbox.from_id(first.object_id).returncode == 137
    finally:
        first.terminate()
        second.terminate()


def test_snapshot_filesystem_starts_a_new_sandbox_with_the_files(app: modal.App, isolation: str) -> None:
    sb = modal.Sandbox.create(app=app, workdir="/work", timeout=60)
    try:
        write = sb.exec("sh", "-c", "mkdir -p sub && echo snapshot-data > sub/file.txt && pwd")
        assert write.stdout.read().rstrip().endswith("/work")
        assert write.wait() == 0
        image = sb.snapshot_filesystem()
    finally:
        sb.terminate()
    assert image.object_id.startswith("im-")

    child = modal.Sandbox.create("cat", "work/sub/file.txt", app=app, image=image, timeout=60)
    child.wait()
    assert child.stdout.read() == "snapshot-data\n"
    assert child.returncode == 0

    by_id = modal.Image.from_id(image.object_id)
    grandchild = modal.Sandbox.create(app=app, image=by_id, workdir="/work", timeout=60)
    try:
        p = grandchild.exec("cat", "sub/file.txt")
        assert p.stdout.read() == "snapshot-data\n"
        # A new sandbox has its own copy: writing there leaves the snapshot unchanged.
        assert grandchild.exec("sh", "-c", "echo changed > sub/file.txt").wait() == 0
    finally:
        grandchild.terminate()
    third = modal.Sandbox.create("cat", "work/sub/file.txt", app=app, image=by_id, timeout=60)
    third.wait()
    assert third.stdout.read() == "snapshot-data\n"


def test_a_snapshot_keeps_only_what_the_sandbox_changed_on_its_image(
    app: modal.App, tmp_path: Path, local_modal: object
) -> None:
    tag = uuid.uuid4().hex[:8]
    files = tmp_path / "files"
    for name, text in {"keep.txt": "kept", "gone.txt": "gone", "edit.txt": "v1", "dir/a": "a"}.items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_text(text)
    (files / "link").symlink_to("keep.txt")
    image = modal.Image.debian_slim().add_local_dir(files, "/img", copy=True)
    sb = modal.Sandbox.create(app=app, image=image, timeout=60)
    try:
        change = (f"cd {sb.exec('sh', '-c', 'echo $HARVEST_SANDBOX_ROOT').stdout.read().strip()}/img && "
                  f"echo new > new-{tag}.txt && rm gone.txt && rm -r dir && echo v2 >> edit.txt && "
                  f"ln -sf new-{tag}.txt link")
        assert sb.exec("sh", "-c", change).wait() == 0
        snapshot = sb.snapshot_filesystem()
    finally:
        sb.terminate()
    child = modal.Sandbox.create("sh", "-c", "cd $HARVEST_SANDBOX_ROOT/img && ls && cat link edit.txt",
                                 app=app, image=snapshot, timeout=60)
    child.wait()
    assert child.stdout.read() == f"edit.txt\nkeep.txt\nlink\nnew-{tag}.txt\nnew\nv1v2\n"
    [layer] = Path(local_modal.data_dir, "snapshots").glob(f"*/img/new-{tag}.txt")  # type: ignore[attr-defined]
    assert sorted(p.name for p in layer.parent.iterdir()) == ["edit.txt", "link", layer.name]


def test_wait_until_ready_runs_the_readiness_probe(app: modal.App) -> None:
    sb = modal.Sandbox.create("sh", "-c", "sleep 0.2; touch ready; exec sleep 30", app=app, timeout=60,
                              readiness_probe=modal.Probe.with_exec("test", "-f", "ready"))
    never = modal.Sandbox.create("sleep", "30", app=app, timeout=60,
                                 readiness_probe=modal.Probe.with_exec("false"))
    try:
        sb.wait_until_ready(timeout=20)
        assert sb.exec("ls", "ready").stdout.read() == "ready\n"
        with pytest.raises(modal.exception.TimeoutError):
            never.wait_until_ready(timeout=1)
    finally:
        sb.terminate()
        never.terminate()


def test_a_server_in_a_sandbox_is_reached_through_its_tunnel(app: modal.App) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sb = modal.Sandbox.create("python", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                              app=app, timeout=60, unencrypted_ports=[port],
                              readiness_probe=modal.Probe.with_tcp(port))
    try:
        sb.wait_until_ready(timeout=20)
        host, tunnel_port = sb.tunnels()[port].tcp_socket
        with urllib.request.urlopen(f"http://{host}:{tunnel_port}/", timeout=10) as resp:
            assert resp.status == 200
    finally:
        sb.terminate()


def test_snapshot_directory_and_mount_image(app: modal.App) -> None:
    source = modal.Sandbox.create(app=app, timeout=60)
    target = modal.Sandbox.create(app=app, timeout=60)
    try:
        assert source.exec("sh", "-c", "mkdir -p proj && echo code > proj/main.py").wait() == 0
        image = source.snapshot_directory("/proj")
        assert target.exec("sh", "-c", "mkdir -p work && echo mine > work/own.txt").wait() == 0
        target.mount_image("/work", image)
        assert target.exec("ls", "work").stdout.read() == "main.py\n"
        target.unmount_image("/work")
        assert target.exec("ls", "work").stdout.read() == "own.txt\n"
    finally:
        source.terminate()
        target.terminate()


def test_filesystem_api_maps_paths_into_the_sandbox(app: modal.App, isolation: str) -> None:
    from modal.exception import SandboxFilesystemDirectoryNotEmptyError, SandboxFilesystemNotFoundError

    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        fs = sb.filesystem
        payload = os.urandom(3 * 1024 * 1024)  # more than one stdin chunk
        fs.write_bytes(payload, "/data/blob.bin")
        fs.write_text("hello fs\n", "/data/hello.txt")
        assert fs.read_bytes("/data/blob.bin") == payload
        assert fs.read_text("/data/hello.txt") == "hello fs\n"
        listed = {(f.name, f.path, f.is_file()) for f in fs.list_files("/data")}
        assert listed == {("blob.bin", "/data/blob.bin", True), ("hello.txt", "/data/hello.txt", True)}
        assert fs.stat("/data").is_dir() and fs.stat("/data/hello.txt").size == 9
        fs.make_directory("/data/a/b")
        assert sb.exec("cat", "data/hello.txt").stdout.read() == "hello fs\n"
        with pytest.raises(SandboxFilesystemNotFoundError):
            fs.read_text("/missing.txt")
        with pytest.raises(SandboxFilesystemDirectoryNotEmptyError):
            fs.remove("/data")
        fs.remove("/data", recursive=True)
        assert "data" not in {f.name for f in fs.list_files("/")}
    finally:
        sb.terminate()


def test_volumes_are_copied_in_and_committed_when_the_sandbox_ends(
    app: modal.App, modal_environment: str, isolation: str
) -> None:
    vol = modal.Volume.from_name("sb-vol-" + uuid.uuid4().hex[:6], create_if_missing=True,
                                 environment_name=modal_environment)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"from the volume\n"), "/data/hello.txt")
        batch.put_file(io.BytesIO(b"doomed\n"), "/data/old.txt")
    sb = modal.Sandbox.create(app=app, volumes={"/mnt/shared": vol}, timeout=60)
    try:
        p = sb.exec("sh", "-c", 'cd "$HARVEST_SANDBOX_ROOT/mnt/shared/data" && cat hello.txt'
                    " && echo written > new.txt && rm old.txt")
        assert p.stdout.read() == "from the volume\n"
        assert p.wait() == 0
        # Written by another client while the sandbox runs: the sandbox's commit keeps it.
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"meanwhile\n"), "/other.txt")
        assert "data/new.txt" not in {e.path for e in vol.listdir("/", recursive=True)}
    finally:
        sb.terminate()
    paths = {e.path for e in vol.listdir("/", recursive=True)}
    assert {"data/hello.txt", "data/new.txt", "other.txt"} <= paths
    assert "data/old.txt" not in paths
    assert b"".join(vol.read_file("data/new.txt")) == b"written\n"


def test_reload_volumes_shows_other_writers_and_keeps_own_changes(
    app: modal.App, modal_environment: str
) -> None:
    vol = modal.Volume.from_name("sb-reload-" + uuid.uuid4().hex[:6], create_if_missing=True,
                                 environment_name=modal_environment)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"v1\n"), "/shared.txt")
        batch.put_file(io.BytesIO(b"base\n"), "/mine.txt")
        batch.put_file(io.BytesIO(b"bye\n"), "/dropped.txt")
    sb = modal.Sandbox.create(app=app, volumes={"/vol": vol}, workdir="/vol", timeout=60)
    try:
        assert sb.exec("sh", "-c", "echo edited > mine.txt").wait() == 0
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"v2\n"), "/shared.txt")
            batch.put_file(io.BytesIO(b"new\n"), "/added.txt")
        vol.remove_file("/dropped.txt")
        sb.reload_volumes()
        out = sb.exec("sh", "-c", "ls; cat shared.txt mine.txt").stdout.read()
        assert out == "added.txt\nmine.txt\nshared.txt\nv2\nedited\n"
    finally:
        sb.terminate()
    assert b"".join(vol.read_file("mine.txt")) == b"edited\n"
    assert b"".join(vol.read_file("shared.txt")) == b"v2\n"


def test_create_is_idempotent_under_retries(app: modal.App) -> None:
    from modal_proto import api_pb2

    req = api_pb2.SandboxCreateV2Request(
        app_id=app.app_id,
        definition=api_pb2.Sandbox(entrypoint_args=["sleep", "30"], timeout_secs=60),
    )
    md = {"x-idempotency-key": uuid.uuid4().hex}
    a = raw_rpc("SandboxCreateV2", req, metadata=md)
    b = raw_rpc("SandboxCreateV2", req, metadata=md)
    assert a.sandbox_id == b.sandbox_id  # type: ignore[attr-defined]
    running = [s.object_id for s in modal.Sandbox.list(app_id=app.app_id)]
    assert running == [a.sandbox_id]  # type: ignore[attr-defined]
    modal.Sandbox.from_id(a.sandbox_id).terminate()  # type: ignore[attr-defined]


def test_sandbox_flow_survives_injected_faults(app: modal.App, local_modal: object) -> None:
    """With 10% of RPCs failing (half after their effect landed), the client's retries give
    the same results: one sandbox each, every exec once, every stdin byte once."""
    faults = local_modal.faults  # type: ignore[attr-defined]
    before = local_modal.stats()  # type: ignore[attr-defined]
    faults.error_rate = 0.1
    try:
        for i in range(3):
            sb = modal.Sandbox.create(app=app, timeout=60, workdir="/w")
            p = sb.exec("sh", "-c", f"cat; echo run {i} >> runs.txt")
            p.stdin.write(b"in\n")
            p.stdin.write_eof()
            p.stdin.drain()
            assert p.stdout.read() == "in\n"
            assert p.wait() == 0
            image = sb.snapshot_filesystem()
            sb.terminate()
            child = modal.Sandbox.create("cat", "w/runs.txt", app=app, image=image, timeout=60)
            child.wait()
            assert child.stdout.read() == f"run {i}\n"
    finally:
        faults.error_rate = 0.0
    after = local_modal.stats()  # type: ignore[attr-defined]
    assert after["injected_errors"] > before["injected_errors"]
    # A create applied twice would leave a second, never-terminated sandbox running.
    assert [s.object_id for s in modal.Sandbox.list(app_id=app.app_id)] == []


def test_router_refuses_a_forged_token(app: modal.App) -> None:
    import asyncio
    from urllib.parse import urlparse

    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError
    from modal_proto import task_command_router_grpc
    from modal_proto import task_command_router_pb2 as sr_pb2

    sb = modal.Sandbox.create(app=app, timeout=60)
    task_id = sb._get_task_id()
    url = urlparse(os.environ["MODAL_SERVER_URL"])

    async def call(token: str) -> Status:
        channel = Channel(url.hostname, url.port)
        try:
            stub = task_command_router_grpc.TaskCommandRouterStub(channel)
            req = sr_pb2.TaskExecStartRequest(task_id=task_id, exec_id="x", command_args=["true"])
            try:
                await stub.TaskExecStart(req, metadata={"authorization": f"Bearer {token}"})
            except GRPCError as err:
                return err.status
            return Status.OK
        finally:
            channel.close()

    try:
        assert asyncio.run(call("a.b.c")) == Status.UNAUTHENTICATED
    finally:
        sb.terminate()


def test_environment_delete_kills_its_sandboxes(local_modal: object) -> None:
    env = "sbdel-" + uuid.uuid4().hex[:6]
    modal.Environment.objects.create(env)
    app = modal.App.lookup("doomed", create_if_missing=True, environment_name=env)
    tag = sleeper()
    sb = modal.Sandbox.create("sh", "-c", f"echo started; exec sleep {tag}", app=app, timeout=60)
    assert next(iter(sb.stdout)) == "started\n"
    modal.Environment.objects.delete(env)
    assert _gone(tag)
    with pytest.raises(NotFoundError):
        modal.Sandbox.from_id(sb.object_id)


_STOP_SCRIPT = """
import os, sys
from pathlib import Path
from harvest_iac.emulator.server import LocalModal
data = Path(sys.argv[1])
lm = LocalModal(data).start()
os.environ.update(lm.client_env())
import modal
app = modal.App.lookup("stopping", create_if_missing=True)
sb = modal.Sandbox.create("sh", "-c", f"echo started; exec sleep {sys.argv[2]}", app=app, timeout=120)
assert next(iter(sb.stdout)).strip() == "started"
print(sb.object_id, flush=True)
lm.stop()
"""


@pytest.mark.parametrize("mode", ["bubblewrap", "host"])
def test_stopping_the_emulator_leaves_no_process_and_restart_reports_it(tmp_path: Path, mode: str) -> None:
    if mode == "bubblewrap" and not BWRAP:
        pytest.skip("bubblewrap does not work here")
    tag = sleeper()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_STOP_SCRIPT), str(tmp_path / "data"), tag],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MODAL_")},
             "HARVEST_ISOLATION": mode},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    sandbox_id = proc.stdout.strip()
    assert _gone(tag)
    assert (tmp_path / "data" / "sandboxes" / sandbox_id / "root").is_dir()

    from modal_proto import api_pb2

    from harvest_iac.emulator.server import Emulator

    emu = Emulator(tmp_path / "data")  # not started: only its state is read
    row = emu.store.one("SELECT status, exception FROM sandboxes WHERE id = ?", sandbox_id)
    emu.store.close()
    assert not (tmp_path / "data" / "sandboxes" / sandbox_id).exists()  # its leftovers are cleared
    assert row is not None
    assert row["status"] == api_pb2.GenericResult.GENERIC_STATUS_TERMINATED
    assert "restarted" in row["exception"]


def test_modal_container_list_shows_running_sandboxes(app: modal.App,
                                                      modal_environment: str) -> None:
    sb = modal.Sandbox.create("sleep", "30", app=app, timeout=60)
    env = ("--env", modal_environment)
    try:
        assert sb._get_task_id() in modal_cli("container", "list", "--json", *env).stdout
    finally:
        sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb._get_task_id() not in modal_cli("container", "list", "--json", *env).stdout
