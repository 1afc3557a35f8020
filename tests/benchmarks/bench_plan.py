"""Benchmark (not a test): `harvest plan` wall time and RPC count for 10, 100 and 1,000
managed resources, at 0 and 20 ms of injected RPC latency, against the local Modal.

    .venv/bin/python tests/benchmarks/bench_plan.py [--sizes 10,100,1000] [--latencies 0,20]

A tenth of the resources are crons (functions of the deployed app), the rest half volumes,
half secrets, all declared in one environment file and applied for real first. Prints a table; the goal is
1,000 resources at 20 ms under 2 s: a few round trips deep whatever N is. The last column counts
the RPCs of a whole `harvest plan` process (the CLI, as a user runs it), read from the local
Modal's `GET /_stats` before and after.

Secret hashes are computed afresh for every run, as in a new `harvest plan` process: keyed (cheap)
when HARVEST_STATE_KEY is set, else one scrypt per managed secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--latencies", default="0,20")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    latencies = [float(x) for x in args.latencies.split(",")]

    from harvest_iac.emulator.server import LocalModal

    work = Path(tempfile.mkdtemp(prefix="harvest-bench-plan-"))
    lm = LocalModal(work / "modal").start()
    os.environ.update(lm.client_env())


    import subprocess

    from harvest_iac.loader import load_file
    from harvest_iac.modal_backend import Session
    from harvest_iac.planner import _hasher, plan_one, prepare
    from harvest_iac.targets import TargetChoice

    rows = []
    for n in sizes:
        env = f"bench-{n}"
        n_cron = max(1, n // 10)
        n_vol = (n - n_cron) // 2
        n_sec = n - n_cron - n_vol
        values = {f"BENCH_{i}": f"value-{i}" for i in range(n_sec)}
        lines = ["harvest: 1", f"environment: {env}", "app: bench", "volumes:"]
        lines += [f"  vol-{i}: {{version: 2, protect: true}}" for i in range(n_vol)]
        lines += ["secrets:"] + [f"  sec-{i}: {{from_env: [BENCH_{i}]}}" for i in range(n_sec)]
        lines += ["crons:"] + [f"  cron-{i}: {{every: {i + 1}h, task: reload-volumes, "
                               f"volumes: {{/data: vol-{i % max(1, n_vol)}}}}}" for i in range(n_cron)]
        path = work / f"{env}.yaml"
        path.write_text("\n".join(lines) + "\n")
        environ = {**os.environ, **values}
        # a real apply makes and records everything (the deploy holds every cron)
        proc = subprocess.run([sys.executable, "-m", "harvest_iac", "apply", str(path), "--target",
                               "modal", "--auto-approve"], cwd=work, env=environ,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"apply of {n} resources failed:\n{proc.stderr[-3000:]}")
        prep = prepare(load_file(path), environ)
        for latency in latencies:
            lm.faults.latency_ms = latency
            times, rpcs, changes = [], 0, 0
            for _ in range(args.repeat):
                before = lm.stats()["total"]
                _hasher.cache_clear()  # no hash remembered from the previous run
                t0 = time.perf_counter()
                with Session(TargetChoice("modal"), work) as session:
                    plan = plan_one(prep, session, target="modal", environ=environ)
                times.append(time.perf_counter() - t0)
                rpcs = lm.stats()["total"] - before
                changes = len(plan.actionable)
            lm.faults.latency_ms = 0
            rows.append((n, latency, min(times), sorted(times)[len(times) // 2], rpcs, changes,
                         _cli_plan_rpcs(lm, path, work, environ)))
    lm.stop()
    print(f"{'resources':>9} {'latency':>8} {'best s':>8} {'median s':>9} {'RPCs':>6} {'changes':>8} "
          f"{'CLI RPCs':>9}")
    for n, lat, best, med, rpcs, changes, cli in rows:
        print(f"{n:>9} {lat:>6.0f}ms {best:>8.3f} {med:>9.3f} {rpcs:>6} {changes:>8} {cli:>9}")


def _stats_total(lm: object) -> int:
    """The local Modal's RPC count, from its `GET /_stats` (the workspace token in the headers)."""
    import urllib.request

    emu = lm.emulator  # type: ignore[attr-defined]
    request = urllib.request.Request(f"{emu.http_url}/_stats", headers={
        "x-modal-token-id": emu.token_id, "x-modal-token-secret": emu.token_secret})
    with urllib.request.urlopen(request) as resp:
        return int(json.load(resp)["total"])


def _cli_plan_rpcs(lm: object, path: Path, work: Path, environ: dict[str, str]) -> int:
    """RPCs of one `harvest plan` process (no input cache: it parses and renders too)."""
    import subprocess

    before = _stats_total(lm)
    proc = subprocess.run([sys.executable, "-m", "harvest_iac", "plan", str(path), "--target", "modal",
                           "--detailed-exitcode"], cwd=work, env={**environ, "HARVEST_NO_CACHE": "1"},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"harvest plan of {path.name} did not find the environment unchanged:\n{proc.stdout}"
                 f"{proc.stderr[-3000:]}")
    return _stats_total(lm) - before


if __name__ == "__main__":
    main()
