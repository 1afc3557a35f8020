"""Cron resources (cpu, memory, gpu, region, max_containers): deployed and read back from the
function's definition (no changes in a new process), changed field by field, and drift when the
function is redeployed by hand with other resources."""

from __future__ import annotations

from pathlib import Path

import modal

from tests.conftest import modal_cli
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
crons:
  nightly:
    schedule: "0 3 * * *"
    task: reload-volumes
    cpu: {cpu}
    memory: 2GiB
    gpu: T4
    region: [us-east, us-west]
    max_containers: {most}
"""


def _write(tmp_path: Path, env: str, cpu: float = 1.0, most: int = 1) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(BODY.format(env=env, cpu=cpu, most=most))
    return path


def _run(verb: str, path: Path) -> tuple[int, str]:
    args = ["--auto-approve"] if verb == "apply" else ["--detailed-exitcode"]
    proc = harvest(verb, str(path), "--target", "modal", *args, cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout


def test_cron_resources_apply_change_and_drift(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _write(tmp_path, env)
    code, text = _run("plan", path)
    assert "at 1.0 CPU and 2048 MiB and 1 x T4" in text  # the GPU is in the cost ceiling
    _run("apply", path)
    info = modal.Function.from_name("agents", "nightly", environment_name=env).info()
    assert (info.cpu, info.memory_mib) == (1.0, 2048)
    assert _run("plan", path)[0] == 0  # gpu, region and max_containers read back as deployed
    _write(tmp_path, env, cpu=2.0, most=3)
    code, text = _run("plan", path)
    assert code == 2
    assert "~ cpu = 1.0 -> 2.0" in text and "~ max_containers = 1 -> 3" in text
    assert "gpu =" not in text and "region" not in text
    _run("apply", path)
    assert _run("plan", path)[0] == 0

    hand = tmp_path / "hand" / "agents.py"
    hand.parent.mkdir()
    module = (tmp_path / ".harvest" / "build" / env / "agents.py").read_text()
    hand.write_text(module.replace("max_containers=3", "max_containers=9").replace("gpu='T4'", "gpu='L4'"))
    modal_cli("deploy", str(hand), "--env", env)
    code, text = _run("plan", path)
    drift = text.split("harvest will perform")[0]
    assert "# cron.nightly was changed outside of harvest" in drift
    assert '~ gpu = "T4:1" -> "L4:1"' in drift and "~ max_containers = 3 -> 9" in drift
    assert "~ deployed.max_containers = 9 -> 3" in text
    _run("apply", path)
    assert _run("plan", path)[0] == 0
