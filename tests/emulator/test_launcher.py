"""Choosing how local containers run: bubblewrap when it works, else host processes with one
warning; HARVEST_ISOLATION decides instead."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from harvest_iac.emulator.runtime.containers import Container
from harvest_iac.emulator.runtime.launcher import ContainerSpec
from harvest_iac.emulator.runtime.processes import Proc
from harvest_iac.emulator.runtime.launcher import BwrapLauncher, HostLauncher, LauncherError, choose_launcher
from tests.emulator.isolation import BWRAP

_CHOOSE_TWICE = (
    "from harvest_iac.emulator.runtime.launcher import choose_launcher\n"
    "print(choose_launcher().name, choose_launcher().name)\n"
)


def test_without_bubblewrap_it_runs_on_the_host_with_one_warning(tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-c", _CHOOSE_TWICE], capture_output=True, text=True,
                          env={"PATH": str(tmp_path)}, timeout=60)  # no bwrap on this PATH
    assert done.returncode == 0, done.stderr
    assert done.stdout == "host host\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "NOT isolated" in lines[0] and "bubblewrap" in lines[0]


def test_the_environment_variable_decides() -> None:
    assert isinstance(choose_launcher({"HARVEST_ISOLATION": "host"}), HostLauncher)
    with pytest.raises(LauncherError, match="use host, bubblewrap or auto"):
        choose_launcher({"HARVEST_ISOLATION": "docker"})
    if BWRAP:
        assert isinstance(choose_launcher({"HARVEST_ISOLATION": "bubblewrap"}), BwrapLauncher)
        assert isinstance(choose_launcher({}), BwrapLauncher)


def test_a_late_start_reply_does_not_stop_the_containers_events(tmp_path: Path) -> None:
    """The agent's reply to a start nobody waits for any more (the container ended, or the
    caller gave up) is dropped; later events (a process's exit) still arrive."""
    async def events() -> int:
        container = Container(HostLauncher(), ContainerSpec(root=tmp_path, argv=()))
        given_up = asyncio.get_running_loop().create_future()
        given_up.cancel()
        container._starting["1"] = given_up
        proc = Proc(container, ["true"], cwd="/", env={})
        container._procs["2"] = proc
        reader = asyncio.StreamReader()
        reader.feed_data(b'{"id": 1, "pid": 10}\n{"id": 2, "exit": 3}\n')
        reader.feed_eof()
        await container._events(reader)
        return await proc.exit_code

    assert asyncio.run(events()) == 3
