"""Specs the render tests share: a file using every feature, and hostile strings."""

from __future__ import annotations

import shlex
from typing import Any

from harvest_iac.spec.models import EnvironmentSpec

#: Strings that break naive code generation: quotes, backslashes, newlines, triple quotes,
#: Jinja syntax, Python that would run if pasted as code, non-ASCII and control characters.
HOSTILE: tuple[str, ...] = (
    'echo "double" \'single\' done',
    "back\\slash \\n not-a-newline \\\\ \\'",
    "line one\nline two\r\n\ttabbed",
    '"""; import os; os.system("touch /tmp/harvest-pwned") ; """',
    "'''; __import__('os').system('touch /tmp/harvest-pwned') #",
    "{{ 7 * 7 }} {% if true %}jinja{% endif %} {# comment #} {%- raw %}",
    "'); open('/tmp/harvest-pwned', 'w'); ('",
    "\\x00 \x00 nul, \x1b[31m escape, caf\u00e9 \u2028 \U0001f680",
    "f'{__import__(\"os\").getcwd()}' %s %(x)s {0}",
)


#: Build steps carrying hostile strings that still succeed when run (images are built).
HOSTILE_RUN = [f"echo {shlex.quote(HOSTILE[3])}", f"echo {shlex.quote(HOSTILE[5])}"]


def kitchen_sink(environment: str = "staging", app: str = "kitchen-sink") -> dict[str, Any]:
    """An environment file (as data) that uses every feature the template renders."""
    return {
        "harvest": 1,
        "environment": environment,
        "app": app,
        "images": {
            "mamba": {"from": "micromamba", "python": "3.12", "apt": ["libgomp1"],
                      "force_build": True},
            "base": {"from": "debian_slim", "python": "3.11", "apt": ["git", "curl"],
                     "pip": ["requests==2.32.3", "numpy"], "run": ["echo built > /built.txt"],
                     "env": {"PYTHONUNBUFFERED": "1", "MODE": "it's \"quoted\""},
                     "workdir": "/work"},
            "tools": {"from": "base", "pip": ["rich"], "run": HOSTILE_RUN,
                      "env": {"HOSTILE": HOSTILE[2]}},
            "private": {"from": "registry", "ref": "ghcr.io/acme/agent:1.2", "registry_secret": "registry",
                        "python": "3.11"},
            "plain": {"from": "debian_slim"},
            "code": {"from": "base", "files": {"/root/jobs": "jobs/", "/etc/agent/it's.json": "conf/it's.json"},
                     "python_source": ["agentlib"]},
        },
        "volumes": {"agent-state": {"version": 2}, "scratch.v1": {"version": 1, "protect": False}},
        "secrets": {
            "openai": {"from_env": ["OPENAI_API_KEY"]},
            "github": {"from_env": {"GITHUB_TOKEN": "HARVEST_GITHUB_TOKEN", "GH_USER": "USER"}},
            "registry": {"from_dotenv": ".env.registry"},
        },
        "snapshots": {
            "warm": {"image": "tools", "setup": ["python -c 'import sys'", HOSTILE[1]],
                     "volumes": {"/mnt/shared": "agent-state"}, "max_age": "20h", "keep": 3},
        },
        "sandboxes": {
            "agent": {"image": "warm", "volumes": {"/mnt/shared": "agent-state"}, "secrets": ["openai"],
                      "timeout": "1h", "idle_timeout": "10m", "cpu": 0.5, "memory": "1GiB"},
            "locked-down": {"image": "plain", "block_network": True, "timeout": "24h"},
            "gpu-agent": {"image": "tools", "gpu": "a100-80gb:2", "region": ["us-east", "eu-west"],
                          "cloud": "aws", "outbound_domain_allowlist": ["api.openai.com", "*.github.com"],
                          "outbound_cidr_allowlist": ["10.0.0.0/8"], "inbound_cidr_allowlist": ["192.0.2.0/24"],
                          "encrypted_ports": [8000, 8443], "workdir": "/work/agent",
                          "env": {"MODE": HOSTILE[0], "PAYLOAD": HOSTILE[3]},
                          "include_oidc_identity_token": True, "tags": {"team": "agents", "tier": "gpu"}},
        },
        "crons": {
            "refresh-environment": {"schedule": "*/30 * * * *", "timezone": "Europe/Paris",
                                    "retries": {"max": 3, "backoff": 2.0, "initial_delay": "5s",
                                                "max_delay": "30s"},
                                    "timeout": "10m", "image": "base",
                                    "volumes": {"/mnt/shared": "agent-state"}, "secrets": ["github"],
                                    "task": "refresh-snapshots"},
            "refresh_environment": {"every": "30m", "task": "reload-volumes",
                                    "volumes": {"/mnt/shared": "agent-state", "/mnt/scratch": "scratch.v1"}},
            "report.nightly": {"every": "1h30m", "retries": 2, "image": "code",
                               "command": ["python", "-c", HOSTILE[4], *HOSTILE],
                               "cpu": 2.0, "memory": "4GiB", "gpu": "l4", "region": "us-east",
                               "max_containers": 1},
        },
    }


def spec_of(data: dict[str, Any]) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(data)
