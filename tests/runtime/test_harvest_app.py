"""harvest's own generated app, run the way Modal runs it, after `harvest apply` to the local
Modal: `sandbox-<profile>` executes agent code in a sandbox of the profile's snapshot, with
its volume and secret; the refresh cron remakes stale snapshots only under harvest's lock;
a `command:` cron that fails twice succeeds on its third attempt after the declared backoff."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import modal
import pytest
from modal_proto import api_pb2

from harvest_iac.lease import lease_advance, lease_free, lease_held, lease_read, lease_state
from harvest_iac.state import LOCK_DICT, STATE_VOLUME, state_path
from tests.conftest import modal_cli, raw_rpc
from tests.integration.helpers import SECRET_VALUE, assert_no_secret, harvest

APP = "agents"
SPEC = """\
harvest: 1
environment: {env}
app: agents

images:
  base:
    from: debian_slim
    python: "3.11"

volumes:
  agent-state:
    version: 2

secrets:
  openai:
    from_env: [OPENAI_API_KEY]

snapshots:
  warm:
    image: base
    setup: ["mkdir -p .cache && echo warmed > .cache/warmed-at"]
    volumes: {{/mnt/shared: agent-state}}
    max_age: 1h
    keep: 3

sandboxes:
  agent:
    image: warm
    volumes: {{/mnt/shared: agent-state}}
    secrets: [openai]
    timeout: 10m

crons:
  refresh-environment:
    schedule: "*/30 * * * *"
    timeout: 10m
    image: base
    task: refresh-snapshots
  flaky-job:
    schedule: "0 3 * * *"
    retries: {{max: 2, backoff: 2, initial_delay: 1s}}
    timeout: 5m
    command: ["python", "-c", "{attempt}"]
"""
# The command counts its attempts in a Dict and fails the first two.
ATTEMPT = ("import modal, sys, time; d = modal.Dict.from_name('job-attempts', create_if_missing=True); "
           "n = d.get('n', 0) + 1; d['n'] = n; d[f't{n}'] = time.time(); sys.exit(0 if n >= 3 else 1)")
AGENT_CODE = """
import os, sys
root = os.environ.get("HARVEST_SANDBOX_ROOT", "/")
print("snapshot:", open(".cache/warmed-at").read().strip())
print("volume:", open(os.path.join(root, "mnt/shared/hello.txt")).read().strip())
print("secret set:", os.environ["OPENAI_API_KEY"] == {secret!r})
print("to stderr", file=sys.stderr)
sys.exit(3)
"""


@pytest.fixture(scope="module")
def env(local_modal: object, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = "rh-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(name)
    folder = tmp_path_factory.mktemp("harvest-app")
    spec = folder / "env.yaml"
    spec.write_text(SPEC.format(env=name, attempt=ATTEMPT))
    applied = harvest("apply", str(spec), "--target", "modal", "--auto-approve", cwd=folder)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return name


def trigger(env: str, cron: str) -> str:
    ran = harvest("emulator", "trigger", APP, cron, "--env", env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert_no_secret(ran.stdout, ran.stderr)
    return ran.stdout


def test_a_sandbox_profile_runs_agent_code(env: str, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi from the volume\n")
    modal_cli("volume", "put", "agent-state", str(tmp_path / "hello.txt"), "/hello.txt", "--env", env)
    sandbox = modal.Function.from_name(APP, "sandbox-agent", environment_name=env)
    result = sandbox.remote(AGENT_CODE.format(secret=SECRET_VALUE))
    assert result == {
        "stdout": "snapshot: warmed\nvolume: hi from the volume\nsecret set: True\n",
        "stderr": "to stderr\n",
        "exit_code": 3,
    }


def _record(env: str) -> dict:  # type: ignore[type-arg]
    volume = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
    return dict(json.loads(b"".join(volume.read_file(state_path(APP)))))


def _age_snapshots(env: str) -> list[str]:
    """Make the recorded snapshot a day old (as if the cron had not run since); its image ids."""
    record = _record(env)
    made = record["resources"]["snapshot.warm"]["snapshots"]
    made[-1]["created_at"] -= 24 * 3600
    volume = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
    with volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(json.dumps(record).encode()), state_path(APP))
    return [s["image_id"] for s in made]


def test_the_refresh_cron_remakes_stale_snapshots_under_the_lock(env: str) -> None:
    before = _age_snapshots(env)
    locks = modal.Dict.from_name(LOCK_DICT, environment_name=env, create_if_missing=True)
    generation, _ = lease_read(locks, APP)
    assert lease_advance(locks, APP, generation, lease_held("someone else", "", 600))
    trigger(env, "refresh-environment")
    assert [s["image_id"] for s in _record(env)["resources"]["snapshot.warm"]["snapshots"]] == before

    generation, _ = lease_read(locks, APP)
    assert lease_advance(locks, APP, generation, lease_free("the test"))
    trigger(env, "refresh-environment")
    after = [s["image_id"] for s in _record(env)["resources"]["snapshot.warm"]["snapshots"]]
    assert after[:-1] == before and after[-1] not in before  # a new snapshot, recorded
    generation, value = lease_read(locks, APP)
    assert generation > 0 and lease_state(value, time.time()) == "free"  # and the lock released
    published = raw_rpc("ImageGetByTag", api_pb2.ImageGetByTagRequest(
        tag="harvest-snapshot-warm", environment_name=env))
    assert published.image_id == after[-1]  # type: ignore[attr-defined]


def test_a_command_cron_succeeds_on_its_third_attempt_after_the_backoff(env: str) -> None:
    assert "success" in trigger(env, "flaky-job")
    attempts = modal.Dict.from_name("job-attempts", environment_name=env)
    assert attempts["n"] == 3
    assert attempts["t2"] - attempts["t1"] >= 1.0  # initial_delay 1s
    assert attempts["t3"] - attempts["t2"] >= 2.0  # backoff 2
