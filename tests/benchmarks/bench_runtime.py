"""Benchmark (not a test): the local Modal running deployed code, as a user drives it:
`harvest emulator serve` in its own process, the real client in this one.

    .venv/bin/python tests/benchmarks/bench_runtime.py [--calls 50] [--inputs 1000] [--sandbox-calls 50]

Prints a table:
- warm `.remote()` round trip (median; goal <= 15 ms);
- cold container start: the first `.remote()` of a function without a container (median of
  a few functions; goal <= 1 s; Modal's is about 1 s);
- `.map` over 1,000 inputs (goal >= 500 inputs/s on 2 cores);
- 50 concurrent `sandbox-agent.remote()` calls of harvest's generated app after
  `harvest apply` (goal: 0 errors; the total time is reported).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

COLD_FUNCTIONS = 5
APP_PY = "import modal\n\napp = modal.App('bench-runtime')\n\n\n" + "\n\n".join(
    f"@app.function()\ndef f{i}(x: int) -> int:\n    return x + 1\n" for i in range(COLD_FUNCTIONS + 1)
)
SPEC = """\
harvest: 1
environment: main
app: bench-agents
images:
  base: {from: debian_slim, python: "3.11"}
secrets:
  openai: {from_env: [OPENAI_API_KEY]}
snapshots:
  warm:
    image: base
    setup: ["mkdir -p .cache && date > .cache/warmed-at"]
sandboxes:
  agent: {image: warm, secrets: [openai], timeout: 10m}
"""
AGENT_CODE = "import os; print(len(os.environ['OPENAI_API_KEY']), open('.cache/warmed-at').read())"


def serve(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`harvest emulator serve` in the background; the variables it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest_iac", "emulator", "serve", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    exports: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("export "):
            key, _, value = line[len("export "):].strip().partition("=")
            exports[key] = shlex.split(value)[0]
        if len(exports) == 4:
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, exports


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50, help="warm .remote() calls to time")
    parser.add_argument("--inputs", type=int, default=1000, help="inputs of the .map")
    parser.add_argument("--sandbox-calls", type=int, default=50, help="concurrent sandbox-agent calls")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="harvest-bench-runtime-"))
    (work / "bench_app.py").write_text(APP_PY)
    (work / "env.yaml").write_text(SPEC)
    proc, exports = serve(work / "modal")
    env = {**os.environ, **exports, "OPENAI_API_KEY": "sk-bench"}
    env.pop("MODAL_ENVIRONMENT", None)
    os.environ.update(exports)
    try:
        run([sys.executable, "-m", "modal", "deploy", "bench_app.py"], env, work)
        run([sys.executable, "-m", "harvest_iac", "apply", "env.yaml", "--target", "modal",
             "--auto-approve"], env, work)
        rows = measure(args, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"{'measure':<44} {'result':>22} {'goal':>16}")
    for name, result, goal in rows:
        print(f"{name:<44} {result:>22} {goal:>16}")
    print(f"(machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")


def cpu_seconds(root: int, *, descendants: bool = True) -> float:
    """CPU time (user + system) of process `root` (and its descendants), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick

    def under(pid: int) -> bool:
        if not descendants:
            return pid == root
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 0)
        return False

    return sum(t for pid, t in used.items() if under(pid))


def measure(args: argparse.Namespace, server_pid: int) -> list[tuple[str, str, str]]:
    import modal

    fn = modal.Function.from_name("bench-runtime", f"f{COLD_FUNCTIONS}")
    fn.remote(0)  # its container is warm from now on
    warm = [timed(lambda: fn.remote(1)) for _ in range(args.calls)]
    cold = [timed(lambda i=i: modal.Function.from_name("bench-runtime", f"f{i}").remote(1))
            for i in range(COLD_FUNCTIONS)]
    client_cpu, server_cpu, all_cpu = time.process_time(), cpu_seconds(server_pid, descendants=False), \
        cpu_seconds(server_pid)
    map_s = timed(lambda: sum(fn.map(range(args.inputs))))
    client_cpu = (time.process_time() - client_cpu) / args.inputs * 1000
    server_cpu = (cpu_seconds(server_pid, descendants=False) - server_cpu) / args.inputs * 1000
    container_cpu = (cpu_seconds(server_pid) - all_cpu) / args.inputs * 1000 - server_cpu

    sandbox = modal.Function.from_name("bench-agents", "sandbox-agent")
    sandbox.remote(AGENT_CODE)  # a warm container first, as a deployed app would have
    errors = 0

    def agent_call(_: int) -> None:
        nonlocal errors
        try:
            if sandbox.remote(AGENT_CODE)["exit_code"] != 0:
                errors += 1
        except Exception:
            errors += 1

    with ThreadPoolExecutor(args.sandbox_calls) as pool:
        sandboxes_s = timed(lambda: list(pool.map(agent_call, range(args.sandbox_calls))))

    return [
        (f"warm .remote() round trip (median of {args.calls})", f"{statistics.median(warm) * 1000:.1f} ms",
         "<= 15 ms"),
        (f"cold container start (median of {COLD_FUNCTIONS})", f"{statistics.median(cold):.2f} s", "<= 1 s"),
        (f".map over {args.inputs} inputs", f"{args.inputs / map_s:.0f} inputs/s", ">= 500 inputs/s"),
        ("  CPU per input: the client", f"{client_cpu:.1f} ms", ""),
        ("  CPU per input: the local Modal", f"{server_cpu:.1f} ms", ""),
        ("  CPU per input: the containers", f"{container_cpu:.1f} ms", ""),
        (f"{args.sandbox_calls} concurrent sandbox-agent.remote()",
         f"{errors} errors, {sandboxes_s:.1f} s", "0 errors"),
    ]


if __name__ == "__main__":
    main()
