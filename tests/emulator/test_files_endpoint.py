"""The file endpoint of the local Modal: only signed, short-lived URLs the API handed out
work; uploads are bounded; file bytes nothing references are garbage-collected."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import modal
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.auth import issue_container_token
from harvest_iac.emulator.server import LocalModal
from tests.conftest import modal_cli, raw_rpc
from tests.emulator.test_restart_and_faults import run_client

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, data: bytes | Iterable[bytes] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _unsigned(url: str) -> str:
    return url.split("?", 1)[0]


def _new_blob(size: int, env: dict[str, str] | None = None) -> tuple[str, str]:
    resp = raw_rpc("BlobCreate", api_pb2.BlobCreateRequest(content_length=size), env=env)
    return resp.blob_id, resp.upload_url  # type: ignore[attr-defined]


def test_file_urls_work_only_as_signed_and_only_for_what_they_were_signed_for(
    local_modal: object, modal_environment: str
) -> None:
    data = b"blob bytes"
    blob_id, upload_url = _new_blob(len(data))
    assert _http("PUT", _unsigned(upload_url), data)[0] == 403
    tampered = upload_url.replace("max_bytes=10", "max_bytes=99999")
    assert _http("PUT", tampered, data)[0] == 403
    _, other_url = _new_blob(len(data))
    assert _http("PUT", _unsigned(other_url) + "?" + urlsplit(upload_url).query, data)[0] == 403
    assert _http("GET", upload_url)[0] == 403  # signed for PUT only
    status, _, headers = _http("PUT", upload_url, data)
    assert (status, headers["ETag"]) == (200, f'"{hashlib.md5(data).hexdigest()}"')
    download = raw_rpc("BlobGet", api_pb2.BlobGetRequest(blob_id=blob_id)).download_url  # type: ignore[attr-defined]
    assert _http("GET", _unsigned(download))[0] == 403
    assert _http("GET", download)[:2] == (200, data)

    vol = modal.Volume.from_name("signed", environment_name=modal_environment,
                                 create_if_missing=True, version=2)
    payload = os.urandom(2048)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(payload), "f.bin")
    (block_url,) = raw_rpc("VolumeGetFile2", api_pb2.VolumeGetFile2Request(
        volume_id=vol.object_id, path="f.bin")).get_urls  # type: ignore[attr-defined]
    assert _http("GET", _unsigned(block_url))[0] == 403
    assert _http("GET", block_url)[:2] == (200, payload)
    assert b"".join(vol.read_file("f.bin")) == payload

    emu = local_modal.emulator  # type: ignore[attr-defined]
    path = urlsplit(block_url).path
    expired = emu.http_url + emu.authority.sign("GET", path, lifetime_s=-1)
    status, body, _ = _http("GET", expired)
    assert status == 403 and b"expired" in body


def test_stats_need_the_workspace_token(local_modal: object) -> None:
    emu = local_modal.emulator  # type: ignore[attr-defined]
    url = emu.http_url + "/_stats"
    assert _http("GET", url)[0] == 401
    container = issue_container_token(emu.token_secret, "ta-stats")
    assert _http("GET", url, headers={"x-harvest-task-token": container})[0] == 401
    assert _http("GET", url, headers={"x-modal-token-id": emu.token_id,
                                      "x-modal-token-secret": "as-wrong"})[0] == 401
    status, body, _ = _http("GET", url, headers={"x-modal-token-id": emu.token_id,
                                                 "x-modal-token-secret": emu.token_secret})
    assert status == 200 and b'"calls"' in body


def test_uploads_larger_than_declared_or_than_a_block_are_refused(local_modal: object) -> None:
    _, upload_url = _new_blob(10)
    assert _http("PUT", upload_url, b"x" * 11)[0] == 413
    assert _http("PUT", upload_url, iter([b"x" * 6, b"x" * 5]),
                 headers={"Transfer-Encoding": "chunked"})[0] == 413  # no Content-Length
    assert _http("PUT", upload_url, b"x" * 10)[0] == 200

    too_big = b"x" * (8 * 1024 * 1024 + 1)
    digest = hashlib.sha256(too_big).digest()
    resp = raw_rpc("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name="bounded", object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
        version=api_pb2.VOLUME_FS_VERSION_V2))
    missing = raw_rpc("VolumePutFiles2", api_pb2.VolumePutFiles2Request(
        volume_id=resp.volume_id,  # type: ignore[attr-defined]
        files=[api_pb2.VolumePutFiles2Request.File(
            path="big.bin", mode=0o644, size=len(too_big),
            blocks=[api_pb2.VolumePutFiles2Request.Block(contents_sha256=digest)])],
    )).missing_blocks  # type: ignore[attr-defined]
    assert _http("PUT", missing[0].put_url, too_big)[0] == 413

    with pytest.raises(GRPCError) as err:
        _new_blob(2 * 1024**3)
    assert err.value.status == Status.INVALID_ARGUMENT


def _age_files(data_dir: Path, seconds: float) -> None:
    """Make every stored file look `seconds` older (as if time had passed)."""
    for path in (data_dir / "blobs").iterdir():
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def _age_blob_ids(data_dir: Path, seconds: float) -> None:
    with sqlite3.connect(data_dir / "state.sqlite3") as db:
        db.execute("UPDATE blobs SET created_at = created_at - ?", (seconds,))
    db.close()


def _stored(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").iterdir()}


def test_unreferenced_file_bytes_are_collected_on_start_and_periodically(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    kept, dropped, orphan = os.urandom(3000), os.urandom(3000), os.urandom(3000)
    digests = {name: hashlib.sha256(b).hexdigest() for name, b in
               (("kept", kept), ("dropped", dropped), ("orphan", orphan))}
    (tmp_path / "kept.bin").write_bytes(kept)
    (tmp_path / "dropped.bin").write_bytes(dropped)
    with LocalModal(data_dir) as lm:
        run_client(lm, f"""
            import modal
            for name in ("kept", "dropped"):
                vol = modal.Volume.from_name(name, create_if_missing=True, version=2)
                with vol.batch_upload() as batch:
                    batch.put_file({str(tmp_path)!r} + f"/{{name}}.bin", "f.bin")
            modal.Volume.objects.delete("dropped")
        """)
        env = lm.client_env()
        _, url = _new_blob(len(orphan), env)
        assert _http("PUT", url, orphan)[0] == 200  # uploaded, never used
    assert set(digests.values()) <= _stored(data_dir)
    _age_files(data_dir, 2 * 3600)
    _age_blob_ids(data_dir, 2 * 3600)
    fresh = os.urandom(100)
    with LocalModal(data_dir) as lm:
        _, url = _new_blob(len(fresh), lm.client_env())
        assert _http("PUT", url, fresh)[0] == 200  # young: kept, whatever references it
    stored = _stored(data_dir)
    assert digests["kept"] in stored and hashlib.sha256(fresh).hexdigest() in stored
    assert digests["dropped"] not in stored and digests["orphan"] not in stored

    with LocalModal(data_dir, gc_interval_s=0.1) as lm:
        assert run_client(lm, """
            import modal
            print(b"".join(modal.Volume.from_name("kept").read_file("f.bin")).hex())
        """).strip() == kept.hex()
        run_client(lm, 'import modal; modal.Volume.objects.delete("kept")')
        _age_files(data_dir, 2 * 3600)
        deadline = time.monotonic() + 60
        while digests["kept"] in _stored(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert digests["kept"] not in _stored(data_dir)


BIG_RESULT_APP = '''
import modal

app = modal.App("gc-results")


@app.function()
def big(n: int) -> bytes:
    return b"r" * n
'''


def test_a_spawned_calls_result_outlives_the_hour_of_its_blob(tmp_path: Path) -> None:
    """A spawned call's result over 8 KiB goes through a blob; the caller may read it long
    after the blob's hour, so garbage collection keeps it while the call is held."""
    data_dir = tmp_path / "state"
    (tmp_path / "gc_app.py").write_text(BIG_RESULT_APP)
    with LocalModal(data_dir, gc_interval_s=0.2) as lm:
        modal_cli("deploy", str(tmp_path / "gc_app.py"), env_extra=lm.client_env(), cwd=tmp_path)
        call_id = run_client(lm, """
            import modal
            call = modal.Function.from_name("gc-results", "big").spawn(100_000)
            assert len(call.get()) == 100_000
            print(call.object_id)
        """).strip()
        marker, _ = _new_blob(10, lm.client_env())  # never used: collected
        _age_blob_ids(data_dir, 2 * 3600)
        _age_files(data_dir, 2 * 3600)
        deadline = time.monotonic() + 60
        while marker in _blob_ids(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker not in _blob_ids(data_dir)
        assert run_client(lm, f"""
            import modal
            print(len(modal.FunctionCall.from_id({call_id!r}).get()))
        """).strip() == "100000"


def _blob_ids(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "state.sqlite3") as db:
        ids = {row[0] for row in db.execute("SELECT id FROM blobs")}
    db.close()
    return ids
