"""Images that ship the team's own code (`files:`, `python_source:`): deployed with the files
(the local Modal holds them in the function's mounts), no changes in a new process; a cron's
script edited, a file added, a module edited: each planned as the image's change, naming the
file, a redeploy, and the re-making of the snapshot built on the image; a missing local path
refused at its position."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modal_proto import api_pb2

from harvest_iac.emulator.services.mounts import mount_files
from tests.conftest import raw_rpc
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
images:
  jobs:
    from: debian_slim
    files: {{/root/jobs: jobs, /etc/agent.json: conf/agent.json}}
    python_source: [agentlib]
crons:
  nightly:
    every: 1h
    image: jobs
    command: ["python", "/root/jobs/refresh.py"]
snapshots:
  warm: {{image: jobs}}
"""


def _run(verb: str, tmp_path: Path) -> tuple[int, str]:
    args = ["--auto-approve"] if verb == "apply" else ["--detailed-exitcode"]
    proc = harvest(verb, "env.yaml", "--target", "modal", *args, cwd=tmp_path)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def _shipped(env: str, emulator: object) -> dict[str, str]:
    """The files the deployed cron's containers get: path -> sha256, from its mounts."""
    got = raw_rpc("FunctionGet", api_pb2.FunctionGetRequest(app_name="agents", object_tag="nightly",
                                                            environment_name=env))
    function = got.function.ranked_functions[0].function  # type: ignore[attr-defined]
    return {f["filename"]: f["sha256_hex"] for mount in function.mount_ids
            for f in mount_files(emulator, mount)}  # type: ignore[arg-type]


def test_local_files_deploy_and_edits_redeploy(tmp_path: Path, modal_environment: str,
                                               local_modal: object) -> None:
    env = modal_environment
    (tmp_path / "env.yaml").write_text(BODY.format(env=env))
    _write(tmp_path, {"jobs/refresh.py": "print('refresh v1')\n", "conf/agent.json": "{}\n",
                      "agentlib/__init__.py": "VERSION = 1\n", "agentlib/.hidden.py": "x = 1\n"})
    _run("apply", tmp_path)
    assert _run("plan", tmp_path)[0] == 0
    shipped = _shipped(env, local_modal.emulator)  # type: ignore[attr-defined]
    digest = hashlib.sha256(b"print('refresh v1')\n").hexdigest()
    assert shipped["/root/jobs/refresh.py"] == digest and "/etc/agent.json" in shipped
    assert "/root/agentlib/__init__.py" in shipped

    # the cron's script edited: the image changes, naming the file, and the app is redeployed
    _write(tmp_path, {"jobs/refresh.py": "print('refresh v2')\n"})
    code, text = _run("plan", tmp_path)
    assert code == 2
    assert "# image.jobs will be updated in place" in text
    assert f'~ local_files./root/jobs/refresh.py = "sha256:{digest[:12]}..." -> "sha256:' in text
    assert "# app.agents will be updated in place" in text and "~ code_hash" in text
    assert "# snapshot.warm will be updated in place" in text
    assert "re-made: what its image ships changed: /root/jobs/refresh.py" in text
    assert f'~ image_contents./root/jobs/refresh.py = "sha256:{digest[:12]}..." -> "sha256:' in text
    _run("apply", tmp_path)
    assert _run("plan", tmp_path)[0] == 0
    assert _shipped(env, local_modal.emulator)["/root/jobs/refresh.py"] == hashlib.sha256(  # type: ignore[attr-defined]
        b"print('refresh v2')\n").hexdigest()

    # a file added to the folder, a module of the package edited
    _write(tmp_path, {"jobs/extra.py": "pass\n", "agentlib/__init__.py": "VERSION = 2\n"})
    code, text = _run("plan", tmp_path)
    assert code == 2
    assert '+ local_files./root/jobs/extra.py = "sha256:' in text
    assert "~ local_files./root/agentlib/__init__.py" in text and "hidden" not in text
    _run("apply", tmp_path)
    assert _run("plan", tmp_path)[0] == 0


def test_a_missing_local_path_is_refused_at_its_position(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text(BODY.format(env="never-made"))
    _write(tmp_path, {"conf/agent.json": "{}\n", "agentlib/__init__.py": ""})
    proc = harvest("validate", "env.yaml", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == (f"env.yaml:7:25: images.jobs.files[/root/jobs]: 'jobs' is not a file or folder "
                           f"(looked for {tmp_path / 'jobs'}); paths are relative to this file\n")
