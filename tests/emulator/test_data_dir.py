"""The local Modal's data folder holds secret values and the token: only its owner may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harvest_iac.emulator.server import LocalModal
from tests.emulator.test_restart_and_faults import run_client


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_paths(data_dir: Path) -> dict[Path, int]:
    db = data_dir / "state.sqlite3"
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
             data_dir / "modal.toml", *(data_dir / "blobs").iterdir()]
    return {data_dir: 0o700, data_dir / "blobs": 0o700, **{f: 0o600 for f in files}}


def test_the_data_folder_is_private_when_made_and_made_private_again_on_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "project" / ".harvest" / "local"
    old_umask = os.umask(0o022)
    try:
        with LocalModal(data_dir) as lm:
            run_client(lm, """
                import io, modal
                modal.Secret.objects.create("db", {"PASSWORD": "hunter2"})
                vol = modal.Volume.from_name("files", create_if_missing=True, version=2)
                with vol.batch_upload() as batch:
                    batch.put_file(io.BytesIO(b"block bytes"), "f.bin")
            """)
            expected = _private_paths(data_dir)
            assert any((data_dir / "blobs").iterdir())  # a block was stored
            assert {p: _mode(p) for p in expected} == expected

        for path in filter(Path.exists, expected):  # as an older harvest left them
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        with LocalModal(data_dir):
            assert {p: _mode(p) for p in _private_paths(data_dir)} == expected
    finally:
        os.umask(old_umask)
