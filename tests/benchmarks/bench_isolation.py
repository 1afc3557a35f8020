"""Benchmark (not a test): isolated sandboxes and image builds on the local Modal.

    .venv/bin/python tests/benchmarks/bench_isolation.py [--runs 5]

Prints a table: a sandbox created, one `python -c` exec'd and terminated (isolated, through
the real modal SDK; goal <= 150 ms), the build of an image with a two-package pip layer (from
wheels built here, no network), the cached rebuild of it (goal <= 0.2 s), and `modal deploy`
of an unchanged app with one built image (goal <= 1.5 s), and `sb.snapshot_filesystem()` of a
sandbox of a large image (host folders copied in) that changed a few files.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

APP_PY = """
import modal

image = modal.Image.debian_slim().run_commands("echo bench")
app = modal.App("bench-iso", image=image)


@app.function()
def f() -> None:
    pass
"""


BIG = ("/usr/share/doc", "/usr/share/locale")
"""Host folders copied into a large image (about 280 MB on Debian)."""


def _size_mb(folders: tuple[str, ...]) -> int:
    return sum(f.stat().st_size for d in folders for f in Path(d).rglob("*") if f.is_file()) // 2**20


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HARVEST_ISOLATION", "bubblewrap")
    os.environ.pop("HARVEST_LAYER_CACHE", None)  # the first build is a real one

    from harvest_iac.emulator.server import LocalModal
    from tests.wheels import build_wheel

    tmp = Path(tempfile.mkdtemp(prefix="bench-iso-"))
    lm = LocalModal(tmp / "data").start()
    os.environ.update(lm.client_env())
    import modal

    app = modal.App.lookup("bench", create_if_missing=True)
    rows: list[tuple[str, str, str]] = []

    modal.Sandbox.create(app=app, timeout=60).terminate()  # warm the client
    cycles = []
    for _ in range(args.runs):
        start = time.perf_counter()
        sb = modal.Sandbox.create(app=app, timeout=60)
        p = sb.exec("python", "-c", "print(1)")
        assert p.stdout.read() == "1\n"
        sb.terminate()
        cycles.append(time.perf_counter() - start)
    rows.append(("sandbox create + exec python -c + terminate (isolated)", _median_ms(cycles), "<= 150 ms"))

    for name in ("benchpkg_a", "benchpkg_b"):
        build_wheel(tmp / "wheels", name)
    image = (modal.Image.debian_slim().add_local_dir(tmp / "wheels", "/wheels", copy=True)
             .pip_install("benchpkg_a", "benchpkg_b", extra_options="--no-index --find-links /wheels"))
    start = time.perf_counter()
    image.build(app)
    rows.append(("image build: a two-package pip layer", f"{time.perf_counter() - start:.2f} s", "reported"))
    cached = []
    for _ in range(args.runs):
        again = (modal.Image.debian_slim().add_local_dir(tmp / "wheels", "/wheels", copy=True)
                 .pip_install("benchpkg_a", "benchpkg_b", extra_options="--no-index --find-links /wheels"))
        start = time.perf_counter()
        again.build(app)
        cached.append(time.perf_counter() - start)
    rows.append(("cached rebuild of that image", f"{statistics.median(cached):.3f} s", "<= 0.2 s"))

    big = modal.Image.debian_slim().run_commands(f"mkdir -p /opt/big && cp -r {' '.join(BIG)} /opt/big")
    big.build(app)
    snapshots = []
    for i in range(args.runs):
        sb = modal.Sandbox.create(app=app, image=big, timeout=120)
        sb.exec("sh", "-c", f"echo {i} > /root/note.txt && rm -r /opt/big/doc").wait()
        start = time.perf_counter()
        snapshot = sb.snapshot_filesystem()
        snapshots.append(time.perf_counter() - start)
        sb.terminate()
    check = modal.Sandbox.create(app=app, image=snapshot, timeout=60)
    seen = check.exec("sh", "-c", "cat /root/note.txt; ls /opt/big").stdout.read()
    assert seen == f"{args.runs - 1}\nlocale\n", seen
    check.terminate()
    rows.append((f"snapshot_filesystem() of a sandbox of a {_size_mb(BIG)} MB image, a few files changed",
                 f"{statistics.median(snapshots):.2f} s", "reported"))

    source = tmp / "bench_iso_app.py"
    source.write_text(APP_PY)
    deploy = [sys.executable, "-m", "modal", "deploy", str(source)]
    subprocess.run(deploy, check=True, capture_output=True)
    deploys = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(deploy, check=True, capture_output=True)
        deploys.append(time.perf_counter() - start)
    rows.append(("modal deploy, unchanged app with one built image", f"{statistics.median(deploys):.2f} s", "<= 1.5 s"))
    lm.stop()

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>8}  goal")
    for measure, value, goal in rows:
        print(f"{measure:<{width}}  {value:>8}  {goal}")


if __name__ == "__main__":
    main()
