"""The generated module deployed with the real `modal deploy` CLI against the local Modal, read
back with `Function.from_name(...).info()`, and its functions run: a sandbox profile runs code
and terminates its sandbox; the refresh-snapshots task makes, publishes and records a snapshot
under harvest's lock."""

from __future__ import annotations

import importlib.util
import io
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import modal
import pytest

from harvest_iac.apply import Lock
from harvest_iac.desired import cron_live_view
from harvest_iac.errors import LockError
from harvest_iac.lease import lease_read, lease_state
from harvest_iac.modal_backend import ModalOps
from harvest_iac.loader import load_file
from harvest_iac.naming import function_tag, snapshot_image_name
from harvest_iac.render import render_app, write_rendered
from harvest_iac.spec.models import EnvironmentSpec
from harvest_iac.state import LOCK_DICT, STATE_VOLUME, StateRecord, state_path
from tests.conftest import REPO, modal_cli
from tests.render.specs import kitchen_sink, spec_of


def dev_spec(env: str) -> EnvironmentSpec:
    """The repository's dev environment, moved into the test's own Modal environment."""
    return load_file(REPO / "environments" / "dev.yaml").spec.model_copy(update={"environment": env})


def create_inputs(spec: EnvironmentSpec, *, with_cli: bool = False) -> None:
    """What apply creates before the deploy: volumes, and secrets with their keys (with the
    `modal` CLI, or the SDK in-process, which is faster)."""
    env = spec.environment
    for name, vol in spec.volumes.items():
        if with_cli:
            modal_cli("volume", "create", name, "--version", str(vol.version), "--env", env)
        else:
            modal.Volume.objects.create(name, version=vol.version, environment_name=env)
    for name, sec in spec.secrets.items():
        values = {k: "not-a-real-value" for k in sec.keys or ["DOTENV_KEY"]}
        if with_cli:
            modal_cli("secret", "create", name, *[f"{k}={v}" for k, v in values.items()], "--env", env)
        else:
            modal.Secret.objects.create(name, values, environment_name=env)


def deploy(spec: EnvironmentSpec, tmp_path: Path) -> Path:
    path = write_rendered(render_app(spec), tmp_path / "build")
    out = modal_cli("deploy", str(path), "--env", spec.environment, cwd=path.parent)
    assert "App deployed" in out.stdout + out.stderr
    return path


def import_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"rendered_{time.monotonic_ns()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(spec: EnvironmentSpec) -> tuple[dict[str, str], dict[str, str]]:
    env = spec.environment
    volumes = {modal.Volume.from_name(n, environment_name=env).hydrate().object_id: n for n in spec.volumes}
    secrets = {modal.Secret.from_name(n, environment_name=env).hydrate().object_id: n for n in spec.secrets}
    return volumes, secrets


def info_view(spec: EnvironmentSpec, tag: str) -> dict[str, Any]:
    """What `modal.Function.from_name(...).info()` shows, ids mapped back to names."""
    info = modal.Function.from_name(spec.app, tag, environment_name=spec.environment).info()
    volume_names, secret_names = _names(spec)
    return {
        "schedule": info.schedule,
        "max_retries": info.max_retries,
        "timeout": info.timeout,
        "volumes": dict(sorted((p, volume_names[v.volume_id]) for p, v in info.volumes.items())),
        "secrets": sorted(secret_names[s] for s in info.secrets),
    }


def plan_view(spec: EnvironmentSpec, tag: str) -> dict[str, Any]:
    """The same function as the plan reads it (`modal_backend.read_live`)."""
    import asyncio

    from harvest_iac.diff import _function_view
    from harvest_iac.modal_backend import ReadRequest, read_live

    live = asyncio.run(read_live(ReadRequest(environment=spec.environment, app=spec.app,
                                             function_names=(tag,))))
    assert live.app is not None
    view = _function_view(live.app.functions[tag])
    return {k: view[k] for k in cron_live_view(spec.crons[tag])}  # the keys the plan compares


def test_dev_environment_deploys_as_the_plan_expects(modal_environment: str, tmp_path: Path) -> None:
    spec = dev_spec(modal_environment)
    create_inputs(spec, with_cli=True)
    deploy(spec, tmp_path)
    for name, cron in spec.crons.items():
        assert info_view(spec, function_tag("cron", name)) == cron_live_view(cron)
        assert plan_view(spec, function_tag("cron", name)) == cron_live_view(cron)
    for name in spec.sandboxes:
        info = modal.Function.from_name(spec.app, function_tag("sandbox", name),
                                        environment_name=modal_environment).info()
        assert info.schedule is None
    # Redeploying the same code changes no function definition.
    first = modal.Function.from_name(spec.app, "refresh-environment",
                                     environment_name=modal_environment).hydrate().object_id
    deploy(spec, tmp_path)
    assert modal.Function.from_name(spec.app, "refresh-environment",
                                    environment_name=modal_environment).hydrate().object_id == first


def _periodic_spec(env: str) -> EnvironmentSpec:
    return spec_of({
        "harvest": 1, "environment": env, "app": "periodic",
        "volumes": {"data": {}},
        "crons": {
            "every-half-hour": {"every": "30m", "task": "reload-volumes", "volumes": {"/data": "data"},
                                "retries": {"max": 2, "backoff": 1.5, "initial_delay": "2s"},
                                "timeout": "2m"},
        },
    })


def test_a_period_cron_deploys_as_the_plan_expects(modal_environment: str, tmp_path: Path) -> None:
    spec = _periodic_spec(modal_environment)
    create_inputs(spec)
    deploy(spec, tmp_path)
    expected = cron_live_view(spec.crons["every-half-hour"])
    assert plan_view(spec, "every-half-hour") == expected
    # Function.info() shows the period's seconds as the proto's float.
    assert info_view(spec, "every-half-hour") == {**expected, "schedule": "Period(seconds=1800.0)"}


def test_every_feature_deploys_and_reads_back_as_the_plan_expects(modal_environment: str,
                                                                  tmp_path: Path) -> None:
    spec = spec_of(kitchen_sink(environment=modal_environment))
    create_inputs(spec)
    build = tmp_path / "build"  # where `modal deploy` runs: the local files the images ship
    for name, text in {"jobs/run.py": "print('run')\n", "conf/it's.json": "{}\n",
                       "agentlib/__init__.py": "VERSION = 1\n"}.items():
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_text(text)
    deploy(spec, tmp_path)
    for name, cron in spec.crons.items():
        assert plan_view(spec, function_tag("cron", name)) == cron_live_view(cron)
    assert info_view(spec, "refresh-environment")["schedule"] == "Cron('*/30 * * * *', Europe/Paris)"


# -- running the deployed functions' code against the local Modal ----------------------
def _sandboxes_running(app_name: str, env: str) -> list[Any]:
    app = modal.App.lookup(app_name, environment_name=env)
    return [sb for sb in modal.Sandbox.list(app_id=app.app_id) if sb.poll() is None]


def test_a_sandbox_profile_runs_code_and_always_terminates(modal_environment: str, tmp_path: Path) -> None:
    spec = spec_of({
        "harvest": 1, "environment": modal_environment, "app": "agents",
        "images": {"plain": {"from": "debian_slim"}},
        "volumes": {"shared": {}},
        "secrets": {"token": {"from_env": ["AGENT_TOKEN"]}},
        "sandboxes": {"run-code": {"image": "plain", "volumes": {"/mnt/shared": "shared"},
                                   "secrets": ["token"], "timeout": "2m", "idle_timeout": "1m"}},
    })
    create_inputs(spec)
    module = import_module(deploy(spec, tmp_path))
    code = "import os, sys\nprint('out', os.environ['AGENT_TOKEN'] != '')\nsys.stderr.write('err\"\"\"\\n')\nsys.exit(4)"
    result = module.sandbox_run_code.local(code)
    assert result == {"stdout": "out True\n", "stderr": 'err"""\n', "exit_code": 4}
    assert module.sandbox_run_code.local("print(6 * 7)") == {"stdout": "42\n", "stderr": "", "exit_code": 0}
    assert _sandboxes_running("agents", modal_environment) == []


def _write_state(env: str, record: StateRecord) -> None:
    vol = modal.Volume.from_name(STATE_VOLUME, environment_name=env, create_if_missing=True, version=2)
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(record.to_json().encode()), state_path(record.app))


def _read_state(env: str, app: str) -> StateRecord:
    vol = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
    return StateRecord.from_json(b"".join(vol.read_file(state_path(app))).decode())


def test_refresh_snapshots_makes_publishes_and_records_under_the_lock(
    modal_environment: str, tmp_path: Path
) -> None:
    env = modal_environment
    data: dict[str, Any] = {
        "harvest": 1, "environment": env, "app": "snapper",
        "images": {"plain": {"from": "debian_slim"}},
        "volumes": {"shared": {}},
        "snapshots": {"warm": {"image": "plain", "setup": ["echo warmed > warm.txt"],
                               "volumes": {"/mnt/shared": "shared"}, "max_age": "1h", "keep": 2}},
        "sandboxes": {"agent": {"image": "warm"}},
        "crons": {"refresh": {"every": "30m", "task": "refresh-snapshots", "timeout": "5m"}},
    }
    spec = spec_of(data)
    create_inputs(spec)
    module = import_module(deploy(spec, tmp_path))
    _write_state(env, StateRecord.new(env, "snapper"))
    locks = modal.Dict.from_name(LOCK_DICT, environment_name=env, create_if_missing=True)

    # An apply holds the lock: the task leaves everything alone.
    an_apply = Lock(ModalOps(env), "snapper", timeout=0, echo=print)
    an_apply.acquire()
    assert module._refresh_snapshots("refresh", 300) == []
    assert "snapshot.warm" not in _read_state(env, "snapper").resources
    an_apply.release()

    assert module._refresh_snapshots("refresh", 300) == ["warm"]
    record = _read_state(env, "snapper")
    [made] = record.resources["snapshot.warm"].snapshots
    assert record.serial == 1
    published = modal.Image.from_name(snapshot_image_name("warm"), environment_name=env)
    sb = modal.Sandbox.create(app=modal.App.lookup("snapper", environment_name=env), image=published)
    try:
        assert sb.object_id and published.object_id == made.image_id
    finally:
        sb.terminate()
    assert lease_state(lease_read(locks, "snapper")[1], time.time()) == "free"  # released
    assert len(list(locks.keys())) == 1  # the old generations were cleaned up

    # Fresh: nothing to do. The sandbox profile runs on the published snapshot.
    assert module.cron_refresh.local() is None
    assert len(_read_state(env, "snapper").resources["snapshot.warm"].snapshots) == 1
    result = module.sandbox_agent.local("print(open('warm.txt').read().strip())")
    assert result == {"stdout": "warmed\n", "stderr": "", "exit_code": 0}

    # Stale (older than max_age): re-made; only the last `keep` are kept.
    for _ in range(2):
        old = _read_state(env, "snapper")
        entry = old.resources["snapshot.warm"]
        aged = tuple(type(s)(s.image_id, s.created_at - 7200) for s in entry.snapshots)
        _write_state(env, old.with_resource("snapshot.warm", type(entry)(spec=entry.spec, snapshots=aged)))
        assert module._refresh_snapshots("refresh", 300) == ["warm"]
    history = _read_state(env, "snapper").resources["snapshot.warm"].snapshots
    assert len(history) == 2 and history[0].image_id != history[1].image_id
    # the one beyond `keep` is deleted from Modal; the kept ones live for the snapshot's ttl
    assert made.image_id not in {h.image_id for h in history}
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_id(made.image_id).build()
    for kept in history:
        assert modal.Image.from_id(kept.image_id).build().object_id == kept.image_id
    assert history[-1].expires_at == pytest.approx(history[-1].created_at + 7 * 86400, abs=5)
    assert modal.Image.from_name(snapshot_image_name("warm"), environment_name=env).build().object_id \
        == history[-1].image_id
    assert _sandboxes_running("snapper", env) == []


def test_refresh_snapshots_needs_a_state_record(modal_environment: str, tmp_path: Path) -> None:
    spec = spec_of({
        "harvest": 1, "environment": modal_environment, "app": "no-state",
        "images": {"plain": {"from": "debian_slim"}},
        "snapshots": {"warm": {"image": "plain"}},
        "crons": {"refresh": {"every": "1h", "task": "refresh-snapshots"}},
    })
    module = import_module(deploy(spec, tmp_path))
    with pytest.raises(RuntimeError, match="run `harvest apply`"):
        module.cron_refresh.local()
    locks = modal.Dict.from_name(LOCK_DICT, environment_name=modal_environment, create_if_missing=True)
    assert lease_state(lease_read(locks, "no-state")[1], time.time()) == "free"  # released


def test_the_cron_and_apply_take_the_same_lock(modal_environment: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated module embeds harvest's lock protocol: a stale apply lock is taken over
    by the cron (and the apply then stops at its next renewal); the cron's lock makes apply
    wait; a stalled cron whose lock was taken over stops before writing the state record."""
    from harvest_iac import apply

    env = modal_environment
    spec = spec_of({"harvest": 1, "environment": env, "app": "shared-lock",
                    "images": {"plain": {"from": "debian_slim"}},
                    "crons": {"tick": {"every": "1h", "task": "reload-volumes"}}})
    module = import_module(deploy(spec, tmp_path))
    monkeypatch.setattr(apply, "LOCK_TTL_S", -1.0)
    stalled_apply = Lock(ModalOps(env), "shared-lock", timeout=0, echo=print)
    stalled_apply.acquire()  # its deadline has passed
    cron_lock = module._take_lock("the cron", 600)
    assert cron_lock is not None
    with pytest.raises(LockError, match="lost the lock.*the cron"):
        stalled_apply.refresh()
    monkeypatch.setattr(apply, "LOCK_TTL_S", 3600.0)
    with pytest.raises(LockError, match="held by the cron"):
        Lock(ModalOps(env), "shared-lock", timeout=0, echo=print).acquire()
    module._release_lock(cron_lock)
    taker = Lock(ModalOps(env), "shared-lock", timeout=0, echo=print)
    taker.acquire()
    with pytest.raises(RuntimeError, match="lost the lock"):
        module._renew_lock(cron_lock, 600)  # the cron's own generation is gone
    taker.release()
