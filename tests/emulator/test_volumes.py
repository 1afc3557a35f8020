"""Volumes v1 and v2 in the local Modal, driven by the real `modal` CLI and SDK."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import modal
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc

BIG = 17 * 1024 * 1024 + 12345  # three 8 MiB blocks, the last one partial


def _names(env: str) -> list[str]:
    return [v.name for v in modal.Volume.objects.list(environment_name=env)]


def test_cli_create_list_rename_delete(modal_environment: str) -> None:
    env = modal_environment
    modal_cli("volume", "create", "data", "--env", env)
    dup = modal_cli("volume", "create", "data", "--env", env, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stdout + dup.stderr
    modal_cli("volume", "create", "data2", "--version", "2", "--env", env)
    listed = json.loads(modal_cli("volume", "list", "--env", env, "--json").stdout)
    assert [row["name"] for row in listed] == ["data2", "data"]

    modal_cli("volume", "rename", "data", "renamed", "--env", env, "--yes")
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Volume.rename("renamed", "data2", environment_name=env)
    modal_cli("volume", "delete", "renamed", "--env", env, "--yes")
    assert _names(env) == ["data2"]
    with pytest.raises(modal.exception.NotFoundError):
        modal.Volume.objects.delete("renamed", environment_name=env)


def test_sdk_objects_and_versions_in_metadata(modal_environment: str) -> None:
    env = modal_environment
    modal.Volume.objects.create("v1", version=1, environment_name=env)
    modal.Volume.objects.create("v2", version=2, environment_name=env)
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Volume.objects.create("v2", version=2, environment_name=env)
    modal.Volume.objects.create("v2", version=2, environment_name=env, allow_existing=True)
    vol = modal.Volume.from_name("auto", environment_name=env, create_if_missing=True, version=2)
    vol.hydrate()
    assert vol.object_id.startswith("vo-")
    again = modal.Volume.from_name("auto", environment_name=env, create_if_missing=True)
    assert again.hydrate().object_id == vol.object_id

    versions = {v.name: v._get_metadata().version for v in modal.Volume.objects.list(environment_name=env)}
    assert versions == {"v1": 1, "v2": 2, "auto": 2}
    info = modal.Volume.objects.list(environment_name=env)[0].info()
    assert info.name == "auto" and info.created_at is not None

    modal.Volume.rename("v1", "v1b", environment_name=env)
    modal.Volume.objects.delete("v2", environment_name=env)
    modal.Volume.objects.delete("v2", environment_name=env, allow_missing=True)
    assert sorted(_names(env)) == ["auto", "v1b"]


def test_server_refuses_another_version_and_bad_names(modal_environment: str) -> None:
    env = modal_environment
    modal.Volume.objects.create("pinned", version=1, environment_name=env)
    req = api_pb2.VolumeGetOrCreateRequest(
        deployment_name="pinned", environment_name=env,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
        version=api_pb2.VOLUME_FS_VERSION_V2,
    )
    with pytest.raises(GRPCError) as err:
        raw_rpc("VolumeGetOrCreate", req)
    assert "has version v1, not v2" in str(err.value.message)
    for bad in ("a/b", "x" * 65, "ap-" + "b" * 22):
        req = api_pb2.VolumeGetOrCreateRequest(
            deployment_name=bad, environment_name=env,
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
        )
        with pytest.raises(GRPCError) as err:
            raw_rpc("VolumeGetOrCreate", req)
        assert err.value.status == Status.INVALID_ARGUMENT


def test_lookup_of_a_missing_volume_is_not_found(modal_environment: str) -> None:
    with pytest.raises(modal.exception.NotFoundError):
        modal.Volume.from_name("nope", environment_name=modal_environment).hydrate()


def test_cli_put_get_ls_rm_with_multi_block_file(modal_environment: str, tmp_path: Path) -> None:
    env = modal_environment
    vol = modal.Volume.from_name("files", environment_name=env, create_if_missing=True, version=2).hydrate()
    big = os.urandom(BIG)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(big)
    (src / "sub" / "small.txt").write_text("hello\n")
    (src / "empty").write_bytes(b"")
    modal_cli("volume", "put", "files", str(src), "/data", "--env", env)
    with vol.batch_upload() as batch:
        batch.put_file(src / "sub" / "small.txt", "/top.txt")
    dup = modal_cli("volume", "put", "files", str(src / "empty"), "/top.txt", "--env", env, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stdout + dup.stderr
    assert b"".join(vol.read_file("top.txt")) == b"hello\n"

    root = json.loads(modal_cli("volume", "ls", "files", "/", "--json", "--env", env).stdout)
    assert {(r["filename"], r["type"]) for r in root} == {("data", "dir"), ("top.txt", "file")}
    data = json.loads(modal_cli("volume", "ls", "files", "data", "--json", "--env", env).stdout)
    assert {(r["filename"], r["type"], r["size"]) for r in data} == {
        ("data/big.bin", "file", BIG), ("data/empty", "file", 0), ("data/sub", "dir", 0),
    }

    out = tmp_path / "out"
    out.mkdir()
    modal_cli("volume", "get", "files", "data/big.bin", str(out / "big.bin"), "--env", env)
    assert (out / "big.bin").read_bytes() == big
    modal_cli("volume", "get", "files", "/data", str(out), "--env", env)
    assert (out / "data" / "sub" / "small.txt").read_text() == "hello\n"
    assert (out / "data" / "big.bin").read_bytes() == big

    not_empty = modal_cli("volume", "rm", "files", "data", "--env", env, check=False)
    assert not_empty.returncode != 0 and "recursive" in not_empty.stdout + not_empty.stderr
    modal_cli("volume", "rm", "files", "data", "-r", "--env", env)
    assert [e.path for e in vol.listdir("/", recursive=True)] == ["top.txt"]


@pytest.mark.parametrize("version", [2, 1])
def test_sdk_batch_upload_read_listdir_remove_commit_reload(modal_environment: str, version: int) -> None:
    """v1 uploads go through MountPutFile (+ blobs) and VolumePutFiles, v2 through blocks."""
    env = modal_environment
    vol = modal.Volume.from_name("sdk", environment_name=env, create_if_missing=True, version=version)
    big = os.urandom(BIG)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"state-1"), "/state/harvest.json")
        batch.put_file(io.BytesIO(big), "/blobs/big.bin")
    vol.commit()
    vol.reload()
    assert b"".join(vol.read_file("state/harvest.json")) == b"state-1"
    assert b"".join(vol.read_file("/blobs/big.bin")) == big
    assert sorted(e.path for e in vol.listdir("/")) == ["blobs", "state"]
    assert sorted(e.path for e in vol.listdir("/", recursive=True)) == [
        "blobs", "blobs/big.bin", "state", "state/harvest.json",
    ]
    assert [e.path for e in vol.iterdir("state")] == ["state/harvest.json"]
    with pytest.raises(FileExistsError):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"state-2"), "/state/harvest.json")
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"state-2"), "/state/harvest.json")
    assert b"".join(vol.read_file("state/harvest.json")) == b"state-2"

    vol.copy_files(["state/harvest.json"], "state/backup.json")
    assert b"".join(vol.read_file("state/backup.json")) == b"state-2"
    vol.remove_file("state/harvest.json")
    with pytest.raises(FileNotFoundError):
        b"".join(vol.read_file("state/harvest.json"))
    with pytest.raises(FileNotFoundError):
        vol.remove_file("state/harvest.json")
    vol.remove_file("blobs", recursive=True)
    assert [e.path for e in vol.listdir("/", recursive=True)] == ["state", "state/backup.json"]


def test_uploads_skip_blocks_the_server_already_has(modal_environment: str) -> None:
    """The same contents twice: the second put asks for no block upload."""
    env = modal_environment
    vol = modal.Volume.from_name("dedupe", environment_name=env, create_if_missing=True, version=2)
    payload = os.urandom(1024)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(payload), "a.bin")
    import hashlib

    digest = hashlib.sha256(payload).digest()
    block = api_pb2.VolumePutFiles2Request.Block(contents_sha256=digest)
    resp = raw_rpc("VolumePutFiles2", api_pb2.VolumePutFiles2Request(
        volume_id=vol.object_id,
        files=[api_pb2.VolumePutFiles2Request.File(path="b.bin", mode=0o644, size=1024, blocks=[block])],
    ))
    assert list(resp.missing_blocks) == []  # type: ignore[attr-defined]
    other = hashlib.sha256(b"not uploaded").digest()
    resp = raw_rpc("VolumePutFiles2", api_pb2.VolumePutFiles2Request(
        volume_id=vol.object_id,
        files=[api_pb2.VolumePutFiles2Request.File(
            path="c.bin", mode=0o644, size=12,
            blocks=[api_pb2.VolumePutFiles2Request.Block(contents_sha256=other)])],
    ))
    (missing,) = resp.missing_blocks  # type: ignore[attr-defined]
    assert urlsplit(missing.put_url).path == "/blocks/" + other.hex()
    assert b"".join(vol.read_file("b.bin")) == payload
    assert sorted(e.path for e in vol.listdir("/")) == ["a.bin", "b.bin"]


def test_volumes_are_scoped_per_environment(modal_environment: str) -> None:
    modal.Volume.objects.create("scoped", environment_name=modal_environment)
    assert "scoped" not in _names("main")
    modal.Environment.objects.delete(modal_environment)
    modal.Environment.objects.create(modal_environment)
    assert _names(modal_environment) == []


def test_block_downloads_carry_their_digest(local_modal: object, modal_environment: str) -> None:
    """Blocks are served with `Repr-Digest`, so the client notices a corrupted block."""
    import hashlib

    vol = modal.Volume.from_name("digest", environment_name=modal_environment,
                                 create_if_missing=True, version=2)
    payload = os.urandom(4096)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(payload), "f.bin")
    assert b"".join(vol.read_file("f.bin")) == payload
    store = local_modal.emulator.store  # type: ignore[attr-defined]
    store.blob_path(hashlib.sha256(payload).hexdigest()).write_bytes(b"x" * 4096)
    with pytest.raises(modal.exception.ExecutionError, match="corrupted"):
        b"".join(vol.read_file("f.bin"))


def test_every_creation_type_at_the_server(modal_environment: str) -> None:
    env = modal_environment
    t = api_pb2

    def call(kind: int, name: str = "typed") -> str:
        resp = raw_rpc("VolumeGetOrCreate", t.VolumeGetOrCreateRequest(
            deployment_name=name, environment_name=env, object_creation_type=kind,
            version=t.VOLUME_FS_VERSION_V2))
        return str(resp.volume_id)  # type: ignore[attr-defined]

    with pytest.raises(GRPCError) as err:
        call(t.OBJECT_CREATION_TYPE_UNSPECIFIED)
    assert err.value.status == Status.NOT_FOUND
    first = call(t.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS)
    with pytest.raises(GRPCError) as err:
        call(t.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS)
    assert err.value.status == Status.ALREADY_EXISTS
    assert call(t.OBJECT_CREATION_TYPE_CREATE_IF_MISSING) == first
    assert call(t.OBJECT_CREATION_TYPE_UNSPECIFIED) == first
    replaced = call(t.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS)
    assert replaced != first and call(t.OBJECT_CREATION_TYPE_UNSPECIFIED) == replaced
    anonymous = {call(t.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP, ""),
                 call(t.OBJECT_CREATION_TYPE_EPHEMERAL, "")}
    assert len(anonymous) == 2 and replaced not in anonymous
    assert [v.object_id for v in modal.Volume.objects.list(environment_name=env)] == [replaced]
