"""Sandbox profiles with hardware, placement and network policy: applied, then no changes in a
new process; each field changed planned as `~` field by field; the module redeployed by hand
with another allowlist is drift; and a sandbox made by the deployed profile's code carries
every option into the local Modal's record of it."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

from modal_proto import api_pb2

from tests.conftest import modal_cli
from tests.integration.helpers import harvest

BODY = """\
harvest: 1
environment: {env}
app: agents
images:
  base: {{from: debian_slim}}
sandboxes:
  agent:
    image: base
    timeout: 10m
{gpu}    region: [us-east]
    cloud: aws
    outbound_domain_allowlist: [api.openai.com, {domain}]
    outbound_cidr_allowlist: [10.0.0.0/8]
    inbound_cidr_allowlist: [192.0.2.0/24]
    encrypted_ports: [8443]
    workdir: /work/agent
    env: {{MODE: {mode}}}
    include_oidc_identity_token: true
    tags: {{team: agents, tier: {tier}}}
"""


def _write(tmp_path: Path, env: str, *, gpu: str | None = "T4", domain: str = "pypi.org",
           mode: str = "fast", tier: str = "small") -> Path:
    path = tmp_path / "env.yaml"
    gpu_line = f"    gpu: {gpu}\n" if gpu else ""
    path.write_text(BODY.format(env=env, gpu=gpu_line, domain=domain, mode=mode, tier=tier))
    return path


def _run(verb: str, path: Path) -> tuple[int, str]:
    args = ["--auto-approve"] if verb == "apply" else ["--detailed-exitcode"]
    proc = harvest(verb, str(path), "--target", "modal", *args, cwd=path.parent)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout


def test_profile_fields_apply_change_and_drift(tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = _write(tmp_path, env)
    _run("apply", path)
    assert _run("plan", path)[0] == 0
    _write(tmp_path, env, gpu="A100-80GB:2", domain="files.pythonhosted.org", mode="slow", tier="large")
    code, text = _run("plan", path)
    assert code == 2
    for line in ['~ gpu = "T4" -> "A100-80GB:2"',
                 '~ outbound_domain_allowlist = ["api.openai.com", "pypi.org"] -> '
                 '["api.openai.com", "files.pythonhosted.org"]',
                 '~ env.MODE = "fast" -> "slow"', '~ tags.tier = "small" -> "large"',
                 "# app.agents will be updated in place"]:
        assert line in text, f"{line!r} not in\n{text}"
    assert "region" not in text and "workdir" not in text  # unchanged fields are not listed
    assert "at 0.125 CPU and 128 MiB and 2 x A100-80GB" in text  # the GPUs are priced: $5.02 an hour
    assert "cost: $5.02 per sandbox-hour" in text
    _run("apply", path)
    assert _run("plan", path)[0] == 0

    # by hand: the deployed module redeployed with another allowlist
    module = tmp_path / ".harvest" / "build" / env / "agents.py"
    hand = tmp_path / "hand" / "agents.py"
    hand.parent.mkdir()
    hand.write_text(module.read_text().replace("'files.pythonhosted.org'", "'evil.example.com'"))
    modal_cli("deploy", str(hand), "--env", env)
    code, text = _run("plan", path)
    assert code == 2 and "# app.agents was deployed outside of harvest" in text
    _run("apply", path)
    assert _run("plan", path)[0] == 0


def test_a_profile_sandbox_carries_every_option(tmp_path: Path, modal_environment: str,
                                                local_modal: object) -> None:
    """Every option but the GPU: the client sends GPU sandboxes through the older V1 API, which
    the local Modal does not implement."""
    env = modal_environment
    path = _write(tmp_path, env, gpu=None)
    _run("apply", path)
    spec = importlib.util.spec_from_file_location(f"agents_{uuid.uuid4().hex}",
                                                  tmp_path / ".harvest" / "build" / env / "agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.sandbox_agent.local("import os; print(os.environ['MODE'], os.getcwd())")
    assert result["exit_code"] == 0, result
    mode, cwd = result["stdout"].split()
    assert mode == "fast" and cwd.endswith("/work/agent")
    store = local_modal.emulator.store  # type: ignore[attr-defined]
    env_id = store.one("SELECT id FROM environments WHERE name = ?", env)["id"]
    row = store.one("SELECT definition, tags FROM sandboxes WHERE environment_id = ?", env_id)
    d = api_pb2.Sandbox.FromString(row["definition"])
    assert list(d.scheduler_placement.regions) == ["us-east"] and d.cloud_provider_str == "aws"
    assert d.network_access.network_access_type == api_pb2.NetworkAccess.NetworkAccessType.ALLOWLIST
    assert list(d.network_access.allowed_domains) == ["api.openai.com", "pypi.org"]
    assert list(d.network_access.allowed_cidrs) == ["10.0.0.0/8"]
    assert list(d.inbound_cidr_allowlist) == ["192.0.2.0/24"]
    assert [p.port for p in d.open_ports.ports] == [8443] and not d.open_ports.ports[0].unencrypted
    assert d.workdir == "/work/agent" and d.include_oidc_identity_token
    assert row["tags"] == '{"team":"agents","tier":"small"}'
