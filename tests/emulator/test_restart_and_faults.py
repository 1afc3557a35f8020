"""State survives a restart of the local Modal; retried RPCs never double an effect.

Each test runs its own LocalModal on a temporary data dir and drives it with the real
client in a subprocess (the in-process SDK is bound to the session's server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harvest_iac.emulator.server import Faults, LocalModal
from tests.conftest import run_client

BIG = 17 * 1024 * 1024 + 7


def test_everything_written_is_read_back_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(BIG))
    with LocalModal(data_dir) as first:
        run_client(first, f"""
            import modal
            vol = modal.Volume.from_name("keep", create_if_missing=True, version=2)
            with vol.batch_upload() as batch:
                batch.put_file({str(payload)!r}, "/dir/big.bin")
            modal.Secret.objects.create("creds", {{"USER": "u", "PASSWORD": "p"}})
            d = modal.Dict.from_name("kv", create_if_missing=True)
            d["lock"] = {{"owner": "ci", "deadline": 123}}
            q = modal.Queue.from_name("jobs", create_if_missing=True)
            q.put_many(["a", "b"])
            modal.Environment.objects.create("staging")
            modal.Volume.objects.create("v1-vol", version=1, environment_name="staging")
        """)

    with LocalModal(data_dir) as second:
        out = run_client(second, f"""
            import hashlib, json, modal
            vol = modal.Volume.from_name("keep")
            data = b"".join(vol.read_file("dir/big.bin"))
            modal.Secret.from_name("creds", required_keys=["USER", "PASSWORD"]).hydrate()
            print(json.dumps({{
                "same": data == open({str(payload)!r}, "rb").read(),
                "version": modal.Volume.objects.list()[0]._get_metadata().version,
                "lock": modal.Dict.from_name("kv")["lock"],
                "jobs": modal.Queue.from_name("jobs").get_many(5),
                "staging": [v.name for v in modal.Volume.objects.list(environment_name="staging")],
                "secrets": [s.name for s in modal.Secret.objects.list()],
            }}))
        """)
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen == {
            "same": True, "version": 2, "lock": {"owner": "ci", "deadline": 123},
            "jobs": ["a", "b"], "staging": ["v1-vol"], "secrets": ["creds"],
        }


def test_retried_rpcs_land_exactly_once_under_injected_faults(tmp_path: Path) -> None:
    """A third of all RPCs fail (half of them after the effect landed); the client retries
    with the same idempotency key. Every put lands once, every put-if-absent answers
    `created`, every get takes one item. The seed makes the fault schedule reproducible."""
    faults = Faults(error_rate=0.3, seed=1234)
    with LocalModal(tmp_path, faults=faults) as lm:
        out = run_client(lm, """
            import json, modal
            q = modal.Queue.from_name("q", create_if_missing=True)
            d = modal.Dict.from_name("d", create_if_missing=True)
            created = [d.put(f"k{i}", i, skip_if_exists=True) for i in range(15)]
            for i in range(15):
                q.put(i)
            got = [q.get(timeout=5) for _ in range(15)]
            print(json.dumps({"created": created, "got": got}))
        """)
        lm.faults.error_rate = 0.0
        after = run_client(lm, """
            import json, modal
            q = modal.Queue.from_name("q")
            d = modal.Dict.from_name("d")
            print(json.dumps({"qlen": q.len(), "dlen": d.len(), "d": dict(d.items())}))
        """)
        stats = lm.stats()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"created": [True] * 15, "got": list(range(15))}
    assert json.loads(after.strip().splitlines()[-1]) == {
        "qlen": 0, "dlen": 15, "d": {f"k{i}": i for i in range(15)},
    }
    assert stats["injected_errors"] > 5
    assert stats["idempotent_replays"] > 0
