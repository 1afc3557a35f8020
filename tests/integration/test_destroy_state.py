"""`harvest destroy`, `harvest state list` and `harvest state show` against the local Modal:
objects made first with the `modal` CLI and adopted; destroy deletes in reverse order only what
harvest manages, never a protected volume; a kill at any step then a re-run finishes; a second
run changes nothing; in a terminal it asks for the environment's name."""

from __future__ import annotations

import json
from pathlib import Path

import modal
import pytest

from harvest_iac.state import STATE_VOLUME, state_path
from tests.conftest import modal_cli
from tests.integration.helpers import assert_no_secret, harvest, in_terminal, write_env

BODY = """\
harvest: 1
environment: {env}
app: agents

images:
  base: {{from: debian_slim}}

volumes:
  data: {{version: 2}}
  scratch: {{version: 1, protect: false}}

secrets:
  openai:
    from_env: [OPENAI_API_KEY]

snapshots:
  warm:
    image: base
    setup: ["echo warm > warm.txt"]

crons:
  tick:
    every: 1h
    volumes: {{/mnt/data: data}}
    secrets: [openai]
    task: reload-volumes
"""


def _names(env: str) -> tuple[set[str], set[str]]:
    return ({v.name for v in modal.Volume.objects.list(environment_name=env)},
            {s.name for s in modal.Secret.objects.list(environment_name=env)})


def _applied(tmp_path: Path, env: str, body: str = BODY) -> Path:
    modal_cli("volume", "create", "data", "--version", "2", "--env", env)
    modal_cli("volume", "create", "unrelated", "--env", env)
    modal_cli("secret", "create", "openai", "OPENAI_API_KEY=by-hand", "--env", env)
    modal_cli("secret", "create", "hand", "TOKEN=by-hand", "--env", env)
    path = write_env(tmp_path, env, body)
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return path


def _destroy(path: Path, *extra: str, **kw: object) -> object:
    return harvest("destroy", str(path), "--target", "modal", *extra, cwd=path.parent, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kill_at", [None, "after:app.agents stop", "after:snapshots", "after:volumes"])
def test_destroy_deletes_only_what_harvest_manages_and_resumes_after_a_kill(
        tmp_path: Path, modal_environment: str, kill_at: str | None) -> None:
    env = modal_environment
    path = _applied(tmp_path, env)
    listed = harvest("state", "show", "snapshot.warm", str(path), "--target", "modal", cwd=tmp_path)
    image_id = json.loads(listed.stdout)["snapshots"][0]["image_id"]
    refused = _destroy(path)
    assert refused.returncode == 1 and "--auto-approve" in refused.stderr  # type: ignore[attr-defined]
    assert _names(env) == ({"data", "scratch", "unrelated", "harvest-state"}, {"openai", "hand"})
    if kill_at is not None:
        killed = _destroy(path, "--auto-approve", env={"HARVEST_KILL_AT": kill_at})
        assert killed.returncode == -9, killed.stderr  # type: ignore[attr-defined]
        assert harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path).returncode == 0
    done = _destroy(path, "--auto-approve")
    out = done.stdout + done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 0, out  # type: ignore[attr-defined]
    assert_no_secret(out)
    assert _names(env) == ({"data", "unrelated", "harvest-state"}, {"hand"})
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("agents", "tick", environment_name=env).hydrate()
    probe = modal.App.lookup("probe", create_if_missing=True, environment_name=env)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_id(image_id).build(probe)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_name("harvest-snapshot-warm", environment_name=env).build(probe)
    state = harvest("state", "list", str(path), "--target", "modal", cwd=tmp_path)
    assert "no state record" in state.stdout
    if kill_at is None:
        assert "  - app.agents will be stopped (with cron.tick, image.base)" in out, out
        assert "  = volume.data is kept: it is protected" in out
        assert "Kept (protected): volume.data." in out
    again = _destroy(path, "--auto-approve")
    assert again.returncode == 0 and "nothing to destroy" in again.stdout  # type: ignore[attr-defined]


SMALL_BODY = """\
harvest: 1
environment: {env}
app: agents

volumes:
  data: {{version: 2}}
  scratch: {{version: 1, protect: false}}

secrets:
  openai:
    from_env: [OPENAI_API_KEY]
"""


def test_in_a_terminal_destroy_asks_for_the_environment_name(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _applied(tmp_path, env, SMALL_BODY)
    code, out = in_terminal("destroy", str(path), "--target", "modal", answer="prod", cwd=tmp_path,
                            when=b"to destroy it")
    assert code == 1 and "destroy cancelled; nothing was changed" in out, out
    assert f"Type the environment's name ({env}) to destroy it" in out
    assert _names(env) == ({"data", "scratch", "unrelated", "harvest-state"}, {"openai", "hand"})
    code, out = in_terminal("destroy", str(path), "--target", "modal", answer=env, cwd=tmp_path,
                            when=b"to destroy it")
    assert code == 0 and "Destroy complete!" in out, out
    assert _names(env) == ({"data", "unrelated", "harvest-state"}, {"hand"})


def test_state_list_and_show_never_show_a_secret_hash(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _applied(tmp_path, env, SMALL_BODY)
    listed = harvest("state", "list", str(path), "--target", "modal", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{env}/agents (state record serial ") and lines[0].endswith("3 resources):")
    assert [line.split()[0] for line in lines[1:]] == ["secret.openai", "volume.data", "volume.scratch"]
    assert "version 2, protected" in lines[2] and "version 1, not protected" in lines[3]
    raw = json.loads(b"".join(modal.Volume.from_name(STATE_VOLUME, environment_name=env)
                              .read_file(state_path("agents"))))
    hashed = raw["resources"]["secret.openai"]["values_hash"]
    shown = harvest("state", "show", "secret.openai", str(path), "--target", "modal", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["values_hash"] == f"({hashed['method']} hash of the values; not shown)"
    assert data["spec"]["keys"] == ["OPENAI_API_KEY"]
    for part in (hashed["digest"], hashed.get("salt", "-"), "by-hand"):
        assert part not in shown.stdout + listed.stdout
    assert_no_secret(shown.stdout, listed.stdout)
    missing = harvest("state", "show", "volume.nope", str(path), "--target", "modal", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr == (
        f"Error: volume.nope is not managed by harvest in {env}/agents; `harvest state list` shows what is\n")
