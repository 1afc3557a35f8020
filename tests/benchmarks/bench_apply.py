"""Benchmark (not a test): a no-change `harvest apply` versus `modal deploy` of the same
generated app, against the local Modal: wall time and RPCs side by side.

    .venv/bin/python tests/benchmarks/bench_apply.py [--runs 5] [--latency-ms 0]

Both are timed as subprocesses from spawn to exit (start-up included), as a CI job runs
them. The apply is shown with harvest's input cache (files unchanged since the last run) and
without it (`HARVEST_NO_CACHE=1`, as on a fresh checkout). The goal: the no-change apply takes at most half the wall time of the deploy and
makes zero mutating RPCs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

READ_ONLY_PREFIXES = ("Get", "List", "Lookup", "FromId", "Join", "Heartbeat", "Contains", "Len",
                      "BatchedCheckExistence", "ClientDisconnect")


def is_mutating(method: str) -> bool:
    """Lookups (`*GetOrCreate` asked only to look up count as reads here: the emulator's
    counters cannot tell; they are listed separately) and reads are not mutating."""
    if method.endswith("GetOrCreate") or method in {"ClientHello", "AuthTokenGet"}:
        return False
    core = method
    for kind in ("App", "Function", "Volume", "Secret", "Dict", "Queue", "Image", "Mount",
                 "Environment", "Sandbox", "Blob"):
        if method.startswith(kind):
            core = method[len(kind):]
            break
    return not core.startswith(READ_ONLY_PREFIXES) and core not in {"History", "DeploymentHistory"}


def diff(after: dict[str, int], before: dict[str, int]) -> Counter[str]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latencies", default="0,20",
                        help="injected latency per RPC, ms, comma-separated")
    args = parser.parse_args()

    from harvest_iac.emulator.server import LocalModal

    work = Path(tempfile.mkdtemp(prefix="harvest-bench-apply-"))
    shutil.copytree(REPO / "environments", work / "environments")
    lm = LocalModal(work / "modal").start()
    env = {**os.environ, **lm.client_env(), "OPENAI_API_KEY": "sk-bench",
           "HARVEST_GITHUB_TOKEN": "gh-bench"}
    env.pop("HARVEST_TARGET", None)
    apply_cmd = [sys.executable, "-m", "harvest_iac", "apply", "environments/dev.yaml",
                 "--target", "modal", "--auto-approve"]
    first = subprocess.run(apply_cmd, cwd=work, env=env, capture_output=True, text=True)
    if first.returncode != 0:
        sys.exit(f"first apply failed:\n{first.stderr}")
    module = next((work / ".harvest" / "build" / "dev").glob("*.py"))
    deploy_cmd = [sys.executable, "-m", "modal", "deploy", str(module), "--env", "dev",
                  "--name", "harvest-agents"]
    def measure(cmd: list[str], check: str) -> tuple[list[float], Counter[str]]:
        times: list[float] = []
        calls: Counter[str] = Counter()
        for _ in range(args.runs):
            before = lm.stats()["calls"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0 or check not in proc.stdout + proc.stderr:
                sys.exit(f"{cmd[2:4]} failed:\n{proc.stdout}\n{proc.stderr}")
            calls = diff(lm.stats()["calls"], before)
        return times, calls

    def row(name: str, times: list[float], calls: Counter[str]) -> str:
        mutating = {k: v for k, v in calls.items() if is_mutating(k)}
        return (f"{name:<26} {statistics.median(times):>8.3f} {min(times):>8.3f} "
                f"{sum(calls.values()):>5} {sum(mutating.values()):>9}  "
                + (", ".join(f"{k}x{v}" for k, v in sorted(mutating.items())) or "-"))

    print(f"runs per cell: {args.runs}; wall time from spawn to exit")
    for latency in [float(x) for x in args.latencies.split(",")]:
        # converge first: a `modal deploy` of the previous round is drift harvest undoes
        subprocess.run(apply_cmd, cwd=work, env=env, capture_output=True, text=True, check=True)
        lm.emulator.faults.latency_ms = latency  # type: ignore[union-attr]
        apply_times, apply_calls = measure(apply_cmd, "No changes.")
        env["HARVEST_NO_CACHE"] = "1"  # as on a fresh CI checkout: nothing cached
        cold_times, cold_calls = measure(apply_cmd, "No changes.")
        del env["HARVEST_NO_CACHE"]
        deploy_times, deploy_calls = measure(deploy_cmd, "App deployed")
        print()
        print(f"latency per RPC: {latency:.0f} ms")
        print(f"{'command':<26} {'median s':>8} {'best s':>8} {'RPCs':>5} {'mutating':>9}  which")
        print(row("harvest apply (no change)", apply_times, apply_calls))
        print(row("  same, input cache off", cold_times, cold_calls))
        print(row("modal deploy (same app)", deploy_times, deploy_calls))
        ratio = statistics.median(apply_times) / statistics.median(deploy_times)
        cold = statistics.median(cold_times) / statistics.median(deploy_times)
        print(f"no-change apply / deploy wall time: {ratio:.2f} (input cache off: {cold:.2f})")
    lm.stop()


if __name__ == "__main__":
    main()
