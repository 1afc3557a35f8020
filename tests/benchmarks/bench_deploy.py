"""Benchmark (not a test): wall time of the real `modal deploy` CLI of a small app against
the local Modal, and the RPCs each deploy makes.

    .venv/bin/python tests/benchmarks/bench_deploy.py [--runs 10] [--latency-ms 0]

The app has a scheduled function with retries, a volume, a secret and an image layer
(the shape harvest renders). The first run is a first deploy, the rest are redeploys; each
row is one `modal deploy` subprocess, timed from spawn to exit (client start-up included).
Goal: under 1.5 s on the project's machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harvest_iac.emulator.server import LocalModal

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

APP_PY = """
import modal

app = modal.App("bench-app")
volume = modal.Volume.from_name("bench-data", create_if_missing=True)
image = modal.Image.debian_slim(python_version="3.12").pip_install("requests==2.32.3")


@app.function(
    image=image,
    schedule=modal.Cron("0 9 * * *", timezone="UTC"),
    retries=modal.Retries(max_retries=3, initial_delay=5.0),
    volumes={"/data": volume},
    secrets=[modal.Secret.from_name("bench-secret", required_keys=["TOKEN"])],
    cpu=1.0,
    memory=512,
    timeout=600,
)
def nightly() -> str:
    return "done"
"""


def _rpc_totals(lm: LocalModal) -> dict[str, int]:
    return dict(lm.stats()["calls"])


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()

    from harvest_iac.emulator.server import Faults, LocalModal

    work = Path(tempfile.mkdtemp(prefix="harvest-bench-deploy-"))
    (work / "app.py").write_text(APP_PY)
    with LocalModal(work / "modal", faults=Faults(latency_ms=args.latency_ms)) as lm:
        env = {**os.environ, **lm.client_env()}
        env.pop("MODAL_ENVIRONMENT", None)
        modal_cmd = [sys.executable, "-m", "modal"]
        _run([*modal_cmd, "secret", "create", "bench-secret", "TOKEN=bench"], env, work)
        times: list[float] = []
        baselines: list[float] = []
        rpcs: list[dict[str, int]] = []
        for _ in range(args.runs):
            before = _rpc_totals(lm)
            times.append(_run([*modal_cmd, "deploy", "app.py"], env, work))
            after = _rpc_totals(lm)
            rpcs.append({k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)})
            # The client's own start-up, measured alongside (the machine may be busy).
            baselines.append(_run([*modal_cmd, "--help"], env, work))

    print(f"modal deploy of a small app, {args.runs} runs, injected latency {args.latency_ms} ms")
    print(f"{'run':>4} {'wall s':>8} {'RPCs':>5} {'modal --help s':>15}")
    for i, (t, r, b) in enumerate(zip(times, rpcs, baselines), start=1):
        print(f"{i:>4} {t:>8.3f} {sum(r.values()):>5} {b:>15.3f}")
    print(f"deploy: median {statistics.median(times):.3f} s, min {min(times):.3f} s,"
          f" max {max(times):.3f} s (goal < 1.5 s)")
    print(f"`modal --help` (client start-up alone): median {statistics.median(baselines):.3f} s")
    print("RPCs of the first deploy: " + ", ".join(f"{k} {v}" for k, v in sorted(rpcs[0].items())))
    if len(rpcs) > 1:
        print("RPCs of a redeploy:       " + ", ".join(f"{k} {v}" for k, v in sorted(rpcs[-1].items())))


if __name__ == "__main__":
    main()
