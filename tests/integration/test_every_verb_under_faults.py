"""Every verb, run as a user runs it against a `harvest emulator serve`, under a quarter of
all RPCs failing, and with the local Modal killed in the middle of an apply: each ends with
exit code 0, or 1 and a single error line, never a traceback; and applying again converges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import modal_cli
from tests.emulator.test_serve import serve
from tests.integration.helpers import SECRETS_ENV, harvest, one_error_line, write_env

Outcome = Callable[..., subprocess.CompletedProcess[str]]


def clean_end(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 0, or exit 1 with one error line (returned); never a traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    return "" if proc.returncode == 0 else one_error_line(proc.stderr)


def runner(exports: dict[str, str], cwd: Path) -> Outcome:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return harvest(*args, env=exports, cwd=cwd)

    return run


def apply_until_converged(run: Outcome, path: Path, attempts: int = 8) -> int:
    """Apply again until plan says no changes (freeing our own lock if a failed run left it);
    every run ends cleanly. Returns the number of applies it took."""
    for attempt in range(1, attempts + 1):
        error = clean_end(run("apply", str(path), "--target", "modal", "--auto-approve"))
        if "harvest unlock" in error:
            clean_end(run("unlock", str(path), "--target", "modal", "--yes"))
        planned = run("plan", str(path), "--target", "modal", "--detailed-exitcode")
        if planned.returncode == 0:
            return attempt
    raise AssertionError(f"no convergence in {attempts} applies")


def test_every_verb_ends_cleanly_under_a_quarter_of_rpcs_failing(tmp_path: Path) -> None:
    path = write_env(tmp_path, "dev")
    with serve(tmp_path / "modal", "--error-rate", "0.25") as (_, exports):
        port = exports["MODAL_SERVER_URL"].rsplit(":", 1)[1]
        run = runner(exports, tmp_path)
        for verb in (("validate", str(path)), ("schema", "-o", "schema.json"),
                     ("render", str(path)), ("render", str(path), "-o", "out")):
            assert clean_end(run(*verb)) == ""  # these never touch Modal
        target = ("--target", "modal")
        for verb in (("plan", str(path)), ("plan", str(path), "--json"),
                     ("plan", str(path), "--format", "markdown"),
                     ("plan", str(path), "-o", "plan.json"), ("unlock", str(path))):
            clean_end(run(*verb, *target))
        if (tmp_path / "plan.json").exists():
            clean_end(run("apply", "plan.json", *target, "--auto-approve"))
        apply_until_converged(run, path)
        clean_end(run("unlock", str(path), *target, "--yes"))
        busy = run("emulator", "serve", "--data-dir", str(tmp_path / "other"), "--port", port)
        assert busy.returncode == 1 and "cannot listen" in clean_end(busy)


def test_every_verb_ends_cleanly_when_the_local_modal_dies_mid_apply(tmp_path: Path) -> None:
    path = write_env(tmp_path, "dev")
    with serve(tmp_path / "modal") as (server, exports):
        port = exports["MODAL_SERVER_URL"].rsplit(":", 1)[1]
        run = runner(exports, tmp_path)
        modal_cli("environment", "create", "dev", env_extra=exports)
        clean_end(run("plan", str(path), "--target", "modal", "-o", "plan.json"))
        apply = subprocess.Popen(
            [sys.executable, "-m", "harvest_iac", "apply", str(path), "--target", "modal",
             "--auto-approve"], cwd=tmp_path, env={**os.environ, **SECRETS_ENV, **exports},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert apply.stderr is not None
        first_step = apply.stderr.readline()  # the local Modal dies once a step is done
        assert first_step.startswith("volumes: done")
        server.send_signal(signal.SIGKILL)
        server.wait()
        out, rest = apply.communicate(timeout=300)
        died = subprocess.CompletedProcess(apply.args, apply.wait(), out, first_step + rest)
        assert "Apply complete!" not in out, "the local Modal was killed too late"
        assert "cannot reach Modal" in clean_end(died)
        assert "Warning: could not release the lock" in died.stderr  # second to the error
        for verb in (("plan", str(path)), ("apply", str(path), "--auto-approve"),
                     ("apply", "plan.json", "--auto-approve"), ("unlock", str(path), "--yes")):
            assert "cannot reach Modal" in clean_end(run(*verb, "--target", "modal"))
    with serve(tmp_path / "modal", "--port", port) as (_, again):  # back, with its data
        run = runner(again, tmp_path)
        unlocked = run("unlock", str(path), "--target", "modal", "--yes")
        assert clean_end(unlocked) == "" and "Lock freed." in unlocked.stdout
        assert clean_end(run("apply", str(path), "--target", "modal", "--auto-approve")) == ""
        planned = run("plan", str(path), "--target", "modal", "--detailed-exitcode")
        assert planned.returncode == 0, planned.stdout + planned.stderr
