"""Helpers for plan/apply tests against the session's local Modal (through the real client)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harvest_iac.loader import LoadedEnvironment, load_file
from harvest_iac.plan import Plan
from harvest_iac.targets import TargetChoice

FIXED_NOW = datetime(2026, 11, 27, 22, 10, tzinfo=timezone.utc)
SECRET_VALUE = "sk-live-DO-NOT-PRINT-4f9a1c"
GITHUB_VALUE = "ghp-DO-NOT-PRINT-77b2e0"
SECRETS_ENV = {"OPENAI_API_KEY": SECRET_VALUE, "HARVEST_GITHUB_TOKEN": GITHUB_VALUE}

SMALL = """\
harvest: 1
environment: {env}
app: agents

images:
  base:
    from: debian_slim
    python: "3.11"
    pip: [requests]

volumes:
  agent-state:
    version: 2
  scratch:
    version: 1
    protect: false

secrets:
  openai:
    from_env: [OPENAI_API_KEY]
  github:
    from_env: {{GITHUB_TOKEN: HARVEST_GITHUB_TOKEN}}

sandboxes:
  agent:
    image: base
    volumes: {{/mnt/shared: agent-state}}
    secrets: [openai]
    timeout: 1h
    cpu: 0.5
    memory: 1GiB

crons:
  refresh-environment:
    schedule: "*/30 * * * *"
    retries: 3
    timeout: 10m
    image: base
    volumes: {{/mnt/shared: agent-state}}
    secrets: [github]
    task: reload-volumes
"""


def write_env(tmp_path: Path, env: str, body: str = SMALL, name: str = "env.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).format(env=env))
    return path


def load(path: Path) -> LoadedEnvironment:
    return load_file(path)


def plan_for(path: Path, environ: dict[str, str] | None = None) -> Plan:
    from harvest_iac.modal_backend import Session
    from harvest_iac.planner import plan_one, prepare

    env = {**os.environ, **SECRETS_ENV, **(environ or {})}
    prep = prepare(load(path), env)
    with Session(TargetChoice("modal"), path.parent) as session:
        return plan_one(prep, session, target="modal", environ=env, now=FIXED_NOW)


def harvest(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            input: str | None = None, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The harvest CLI as a subprocess (a new process, as a user runs it)."""
    full = {**os.environ, **SECRETS_ENV, **(env or {})}
    for name in ("HARVEST_TARGET", *unset):
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "harvest_iac", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, input=input, timeout=300)


def addresses(plan: Plan) -> dict[str, str]:
    return {c.address: c.action.value for c in plan.actionable}


def assert_no_secret(*texts: Any) -> None:
    for text in texts:
        s = text if isinstance(text, str) else str(text)
        assert SECRET_VALUE not in s and GITHUB_VALUE not in s, "a secret value leaked"


def one_error_line(stderr: str) -> str:
    """The single `Error:` line a failed command ends with (and nothing like a traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def write_state_file(env: str, app: str, data: bytes) -> None:
    """Put `data` where harvest keeps the state record of `app` in `env`, as a hand edit would."""
    from harvest_iac.modal_backend import Connection, Session, write_volume_file
    from harvest_iac.state import STATE_VOLUME, state_path

    async def write(conn: Connection) -> None:
        await write_volume_file(conn, env, STATE_VOLUME, state_path(app), data)

    Session(TargetChoice("modal"), Path.cwd()).with_connection(write)
def in_terminal(*args: str, answer: str, when: bytes, cwd: Path, env: dict[str, str] | None = None
                ) -> tuple[int, str]:
    """The harvest CLI in a pseudo-terminal: `answer` is typed once the output shows `when`.
    Returns the exit code and the output, colours stripped."""
    import os
    import pty
    import re
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "harvest_iac", *args], cwd=cwd, stdin=follower,
                            stdout=follower, stderr=follower, env={**os.environ, **SECRETS_ENV, **(env or {})})
    os.close(follower)
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and when in out:
            os.write(leader, answer.encode() + b"\n")
            answered = True
    os.close(leader)
    return proc.wait(timeout=60), re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace"))
