"""The container agent: the first process of a local container, which starts and reaps the
container's processes on the local Modal's behalf (Modal's worker does this in its containers).

Standard library only: it runs on the container's own Python, as
`python -I -S agent.py CMD_FD EVENT_FD`, with two inherited sockets:

- commands come in on CMD_FD, each a 4-byte big-endian length and a JSON object, with the
  new process's stdio descriptors attached (SCM_RIGHTS) to `spawn`:
  `{"op": "spawn", "id", "argv", "env", "cwd", "stdio": [in, out, err]}` where each stdio
  entry is "fd" (the next attached descriptor), "null", or (stderr only) "stdout";
  `{"op": "kill", "id"}` kills that process's group; `{"op": "shutdown"}` kills everything.
- events go out on EVENT_FD as JSON lines: `{"ready"}` first, `{"id", "pid"}` once started, `{"id", "error"}`
  when it could not be started, `{"id", "exit"}` when it ended (a negative number is the
  signal that ended it).

Every process gets its own session and process group; the agent is the subreaper of
everything they start, so a shutdown (or the local Modal going away: EOF on CMD_FD) leaves
no process behind, even in a container that is not isolated.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

_HEADER = struct.Struct(">I")
_MAX_FDS = 3
_PR_SET_CHILD_SUBREAPER = 36


class Agent:
    def __init__(self, commands: socket.socket, events: int) -> None:
        self.commands = commands
        self.events = events
        self.buffer = b""
        self.fds: list[int] = []
        self.children: dict[int, str] = {}  # pid -> process id given by the local Modal
        self.pids: dict[str, int] = {}

    # -- events ----------------------------------------------------------------------
    def emit(self, **event: Any) -> None:
        data = (json.dumps(event) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.events, data):]
        except OSError:  # the local Modal is gone
            self.shutdown()

    # -- commands --------------------------------------------------------------------
    def receive(self) -> bool:
        """Read what arrived on the command socket; False at EOF."""
        data, fds, _, _ = socket.recv_fds(self.commands, 1 << 16, _MAX_FDS * 4)
        if not data:
            return False
        self.fds.extend(fds)
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            message = json.loads(self.buffer[_HEADER.size:_HEADER.size + size])
            self.buffer = self.buffer[_HEADER.size + size:]
            self.handle(message)
        return True

    def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "spawn":
            stdio = message["stdio"]
            fds = [self.fds.pop(0) for kind in stdio if kind == "fd"]
            try:
                self.spawn(message, fds)
            finally:
                for fd in fds:
                    os.close(fd)
        elif op == "kill":
            pid = self.pids.get(message["id"])
            if pid is not None:
                _kill_group(pid)
        elif op == "shutdown":
            self.shutdown()

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        ident = message["id"]
        env = dict(os.environ)
        env.update(message["env"])
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(ready_r)
            _exec_child(message, fds, env, ready_w)
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            failure = ready.read()
        if failure:
            os.waitpid(pid, 0)
            self.emit(id=ident, error=failure.decode("utf-8", "replace"))
            return
        self.children[pid] = ident
        self.pids[ident] = pid
        self.emit(id=ident, pid=pid)

    # -- children ----------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self.children.pop(pid, None)
            if ident is not None:
                self.pids.pop(ident, None)
                self.emit(id=ident, exit=os.waitstatus_to_exitcode(status))

    def shutdown(self) -> None:
        """Kill every process of the container (and what they left behind), then exit."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            victims = set(self.children) | _adopted()
            if not victims:
                break
            for pid in victims:
                _kill_group(pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
        os._exit(0)

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown())
        while True:
            readable, _, _ = select.select([self.commands, wake_r], [], [])
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                self.reap()
            if self.commands in readable and not self.receive():
                self.shutdown()


def _exec_child(message: dict[str, Any], fds: list[int], env: dict[str, str], ready_w: int) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        given = iter(fds)
        stdio = message["stdio"]
        for target, kind in enumerate(stdio):
            if kind == "fd":
                os.dup2(next(given), target)
            elif kind == "stdout":
                os.dup2(1, target)
            else:
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, target)
                os.close(null)
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, 1 << 16)
        cwd = message["cwd"]
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        argv = message["argv"]
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        with contextlib.suppress(OSError):
            os.write(ready_w, reason.encode())
    os._exit(127)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _adopted() -> set[int]:
    """Processes whose parent is the agent (orphans it adopted as subreaper); Linux only."""
    me = str(os.getpid())
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1].decode() == me and fields[0] not in (b"Z", b"X"):
                found.add(int(entry))
    return found


def _become_subreaper() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main(argv: list[str]) -> None:
    cmd_fd, event_fd = int(argv[1]), int(argv[2])
    os.set_inheritable(cmd_fd, False)
    os.set_inheritable(event_fd, False)
    _become_subreaper()
    agent = Agent(socket.socket(fileno=cmd_fd), event_fd)
    agent.emit(ready=os.getpid())
    agent.run()


if __name__ == "__main__":
    main(sys.argv)
