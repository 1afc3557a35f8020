"""`moved:` and `removed:` end to end, each run a new `harvest` process against the local Modal:
objects made first with the `modal` CLI and adopted; a rename keeps a volume's files, makes a
secret again from its source and deletes only the old name, redeploys a renamed cron; a kill in
the middle then a re-run converges; re-running changes nothing; nothing the file does not name is
deleted."""

from __future__ import annotations

from pathlib import Path

import modal
import pytest

from tests.conftest import modal_cli
from tests.integration.helpers import assert_no_secret, harvest, write_env

BODY = """\
harvest: 1
environment: {env}
app: agents

volumes:
  data: {{version: 2}}
  scratch: {{version: 1, protect: false}}

secrets:
  openai:
    from_env: [OPENAI_API_KEY]

crons:
  tick:
    every: 1h
    volumes: {{/mnt/data: data}}
    secrets: [openai]
    task: reload-volumes
"""

RENAMED = """\
harvest: 1
environment: {env}
app: agents

volumes:
  state: {{version: 2}}
  scratch: {{version: 1, protect: false}}

secrets:
  llm:
    from_env: [OPENAI_API_KEY]

crons:
  tock:
    every: 1h
    volumes: {{/mnt/data: state}}
    secrets: [llm]
    task: reload-volumes

moved:
  - {{from: volume.data, to: volume.state}}
  - {{from: secret.openai, to: secret.llm}}
  - {{from: cron.tick, to: cron.tock}}
"""


def _ok(proc: object) -> str:
    out = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode == 0, out  # type: ignore[attr-defined]
    assert_no_secret(out)
    return str(out)


def _apply(path: Path, *extra: str, **kw: object) -> object:
    return harvest("apply", str(path), "--target", "modal", "--auto-approve", *extra, cwd=path.parent,
                   **kw)  # type: ignore[arg-type]


def _plan(path: Path, *extra: str) -> tuple[int, str]:
    proc = harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", *extra, cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    assert_no_secret(proc.stdout, proc.stderr)
    return proc.returncode, proc.stdout


def _made_by_hand_then_adopted(tmp_path: Path, env: str) -> Path:
    (tmp_path / "hello.txt").write_text("kept across the rename\n")
    modal_cli("volume", "create", "data", "--version", "2", "--env", env)
    modal_cli("volume", "put", "data", str(tmp_path / "hello.txt"), "/hello.txt", "--env", env)
    modal_cli("secret", "create", "openai", "OPENAI_API_KEY=by-hand", "--env", env)
    modal_cli("volume", "create", "unrelated", "--env", env)
    path = write_env(tmp_path, env, BODY)
    _ok(_apply(path))
    return path


def _names(env: str) -> tuple[set[str], set[str]]:
    return ({v.name for v in modal.Volume.objects.list(environment_name=env)},
            {s.name for s in modal.Secret.objects.list(environment_name=env)})


def _function_names(env: str) -> set[str]:
    names = set()
    for name in ("tick", "tock"):
        try:
            modal.Function.from_name("agents", name, environment_name=env).hydrate()
        except modal.exception.NotFoundError:
            continue
        names.add(name)
    return names


@pytest.mark.parametrize("kill_at", [None, "after:volumes", "after:secrets", "after:app.agents deploy",
                                     "after:deletions"])
def test_renames_keep_data_and_converge_after_a_kill(tmp_path: Path, modal_environment: str,
                                                     kill_at: str | None) -> None:
    env = modal_environment
    path = _made_by_hand_then_adopted(tmp_path, env)
    volume_id = {v.name: v.object_id for v in modal.Volume.objects.list(environment_name=env)}["data"]
    write_env(tmp_path, env, RENAMED)
    code, text = _plan(path)
    assert code == 2
    for expected in ["# volume.state (moved from volume.data) will be updated in place",
                     "(renamed in place in Modal (VolumeRename): its files stay)",
                     '~ name = "data" -> "state"',
                     "# secret.llm (moved from secret.openai) will be updated in place",
                     "# cron.tock (moved from cron.tick) will be updated in place"]:
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert "will be created" not in text and "will be destroyed" not in text, text
    assert "0 to add" in text and "0 to destroy" in text
    if kill_at is not None:
        killed = _apply(path, env={"HARVEST_KILL_AT": kill_at})
        assert killed.returncode == -9, killed.stderr  # type: ignore[attr-defined]
        _ok(harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path))
    _ok(_apply(path))
    volumes, secrets = _names(env)
    assert {"state", "scratch", "unrelated"} <= volumes and "data" not in volumes
    assert secrets == {"llm"}
    moved = {v.name: v for v in modal.Volume.objects.list(environment_name=env)}["state"]
    assert moved.object_id == volume_id  # renamed in place, not made again
    assert b"".join(moved.read_file("/hello.txt")) == b"kept across the rename\n"
    assert _function_names(env) == {"tock"}
    info = modal.Function.from_name("agents", "tock", environment_name=env).info()
    assert info.schedule.startswith("Period(")
    code, text = _plan(path)
    assert code == 0 and "No changes." in text, text
    assert "No changes." in _ok(_apply(path))  # the entries are no-ops once applied


def test_a_rename_onto_a_name_taken_in_modal_is_refused(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _made_by_hand_then_adopted(tmp_path, env)
    modal_cli("volume", "create", "state", "--env", env)
    write_env(tmp_path, env, RENAMED)
    code, text = _plan(path)
    assert "BLOCKED: volume.state already exists in Modal and harvest does not manage it" in text
    refused = _apply(path)
    assert refused.returncode == 1  # type: ignore[attr-defined]
    assert "apply refused, nothing was changed" in refused.stderr  # type: ignore[attr-defined]
    assert _names(env) == ({"data", "scratch", "unrelated", "state", "harvest-state"}, {"openai"})


REMOVED = """\
harvest: 1
environment: {env}
app: agents

secrets:
  openai:
    from_env: [OPENAI_API_KEY]

removed:
  - {{address: volume.scratch, destroy: true}}
  - {{address: volume.data, destroy: {protected}}}
  - {{address: secret.legacy, destroy: false}}
  - {{address: app.agents, destroy: true}}
"""


def test_removed_deletes_what_it_names_and_forgets_the_rest(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _made_by_hand_then_adopted(tmp_path, env)
    modal_cli("secret", "create", "legacy", "TOKEN=by-hand", "--env", env)
    with_legacy = BODY.replace("secrets:\n", "secrets:\n  legacy:\n    from_env: {{TOKEN: LEGACY_TOKEN}}\n")
    write_env(tmp_path, env, with_legacy)
    _ok(_apply(path, env={"LEGACY_TOKEN": "t"}))
    # a protected volume is never deleted, whatever the file says
    write_env(tmp_path, env, REMOVED.replace("{protected}", "true"))
    code, text = _plan(path)
    assert "BLOCKED: volume.data is protected: `removed:` never deletes a protected volume" in text
    refused = _apply(path)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr  # type: ignore[attr-defined]
    assert _names(env) == ({"data", "scratch", "unrelated", "harvest-state"}, {"openai", "legacy"})
    write_env(tmp_path, env, REMOVED.replace("{protected}", "false"))
    code, text = _plan(path)
    for expected in ["# volume.scratch will be destroyed", "# app.agents will be destroyed",
                     "# volume.data will no longer be managed by harvest, but will not be destroyed",
                     "# secret.legacy will no longer be managed by harvest, but will not be destroyed",
                     "3 to destroy, 2 to forget."]:
        assert expected in text, f"{expected!r} not in:\n{text}"
    killed = _apply(path, env={"HARVEST_KILL_AT": "after:deletions"})
    assert killed.returncode == -9  # type: ignore[attr-defined]
    _ok(harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path))
    _ok(_apply(path))  # no --allow-destroy: the deletions are in the reviewed file
    assert _names(env) == ({"data", "unrelated", "harvest-state"}, {"openai", "legacy"})
    code, text = _plan(path)
    assert code == 0, text
    assert "Not managed by harvest (left alone): secret.legacy, volume.data, volume.unrelated" in text
    assert "No changes." in _ok(_apply(path))
    state = harvest("state", "list", str(path), "--target", "modal", cwd=tmp_path)
    assert "volume.data" not in state.stdout and "secret.openai" in state.stdout
