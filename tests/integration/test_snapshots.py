"""Snapshot lifetimes through apply: each image made with the snapshot's ttl, its age and expiry
in the plan, a warning when it would expire before it is re-made, images beyond `keep` deleted
from the local Modal, an expired image re-made, and a removed snapshot's images and name gone."""

from __future__ import annotations

from pathlib import Path

import modal
import pytest

from harvest_iac.naming import snapshot_image_name
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
images:
  base: {{from: debian_slim}}
snapshots:
  warm:
    image: base
    setup: ["echo {mark} > mark.txt"]
    max_age: 20h
    keep: 2
    ttl: {ttl}
sandboxes:
  agent: {{image: warm}}
"""


def _write(tmp_path: Path, env: str, mark: int, ttl: str = "2d", body: str = BODY) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(body.format(env=env, mark=mark, ttl=ttl))
    return path


def _run(verb: str, path: Path, *extra: str) -> tuple[int, str]:
    args = ["--auto-approve", *extra] if verb == "apply" else ["--detailed-exitcode", *extra]
    proc = harvest(verb, str(path), "--target", "modal", *args, cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout + proc.stderr



def _exists(image_id: str) -> bool:
    try:
        modal.Image.from_id(image_id).build()
    except modal.exception.NotFoundError:
        return False
    return True


def _made(text: str) -> str:
    return text.split("newest image ")[1].split()[0]


def test_snapshot_lifetimes_through_apply(tmp_path: Path, modal_environment: str,
                                         local_modal: object) -> None:
    env = modal_environment
    path = _write(tmp_path, env, mark=1)
    _run("apply", path)
    code, text = _run("plan", path)
    assert code == 0
    first = _made(text)
    assert f"Note: snapshot.warm: newest image {first} made " in text and "(in 1d23h)" in text

    made = [first]
    for mark in (2, 3):  # a recipe change re-makes it; keep: 2
        _write(tmp_path, env, mark=mark)
        code, text = _run("plan", path)
        assert code == 2 and "re-made: its recipe changed" in text
        _run("apply", path)
        made.append(_made(_run("plan", path)[1]))
    assert "1 older kept" in _run("plan", path)[1]
    assert [_exists(i) for i in made] == [False, True, True]  # the one beyond keep is deleted

    # a ttl change applies to the next images: the snapshot itself is kept
    _write(tmp_path, env, mark=3, ttl="3d")
    code, text = _run("plan", path)
    assert "~ ttl = 172800 -> 259200" in text and "harvest settings only; the snapshot is kept" in text
    _run("apply", path)
    assert _made(_run("plan", path)[1]) == made[-1]

    # the newest image expires (time passes in the local Modal): drift, then re-made
    store = local_modal.emulator.store  # type: ignore[attr-defined]
    store.run("UPDATE image_expiry SET expires_at = 1 WHERE image_id = ?", made[-1])
    code, text = _run("plan", path)
    assert code == 2 and f"image {made[-1]} no longer exists in Modal" in text
    _run("apply", path)
    code, text = _run("plan", path)
    assert code == 0 and _made(text) not in made

    # made with a ttl shorter than max_age: the plan warns
    _write(tmp_path, env, mark=4, ttl="1h")
    _run("apply", path)
    code, text = _run("plan", path)
    assert code == 0 and "Warning: snapshot.warm: its newest image expires" in text
    assert "before it is re-made" in text and "raise `ttl` or lower `max_age`" in text

    # removed from the YAML: its images and its published name are deleted
    kept = [_made(text)]
    _write(tmp_path, env, mark=4, body=BODY.split("snapshots:")[0] + "sandboxes:\n  agent: {{image: base}}\n")
    code, text = _run("plan", path)
    assert "# snapshot.warm will be destroyed" in text and "its images are deleted" in text
    _run("apply", path)
    assert not _exists(kept[0])
    with pytest.raises(modal.exception.NotFoundError):
        modal.Image.from_name(snapshot_image_name("warm"), environment_name=env).build()
