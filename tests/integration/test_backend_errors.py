"""Modal's errors in the lock and state-record paths, produced for real by the local Modal's
fault injection: each is one line and exit code 1 (never a traceback), the first error is the
one reported, and the next apply converges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest_iac.apply import Applier, ApplyOptions, run_apply
from harvest_iac.emulator.server import LocalModal
from harvest_iac.errors import BackendError
from tests.conftest import modal_cli
from tests.integration.helpers import harvest, one_error_line, write_env

#: Enough to take the lock and write the state record, without a deploy (fast).
VOLUMES_ONLY = "harvest: 1\nenvironment: {env}\napp: agents\nvolumes:\n  agent-state: {{}}\n"


@pytest.fixture
def private_modal(tmp_path: Path) -> Iterator[LocalModal]:
    """A local Modal of this test's own, so its faults touch nothing else."""
    with LocalModal(tmp_path / "local-modal") as lm:
        yield lm


def run(lm: LocalModal, verb: str, *args: str, cwd: Path) -> tuple[int, str, str]:
    proc = harvest(verb, *args, "--target", "modal", env=lm.client_env(), cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def fail_always(lm: LocalModal, *methods: str) -> None:
    lm.faults.methods = frozenset(methods)
    lm.faults.error_rate = 1.0


def converges(lm: LocalModal, path: Path) -> None:
    lm.faults.error_rate = 0.0
    code, out, err = run(lm, "apply", str(path), "--auto-approve", cwd=path.parent)
    assert code == 0, err
    code, out, err = run(lm, "plan", str(path), "--detailed-exitcode", cwd=path.parent)
    assert code == 0, out + err


@pytest.mark.parametrize("method", ["DictGetOrCreate", "DictContents"])
def test_the_lock_dict_failing_is_one_line(private_modal: LocalModal, tmp_path: Path,
                                           method: str) -> None:
    path = write_env(tmp_path, "dev", VOLUMES_ONLY)
    fail_always(private_modal, method)
    code, _, err = run(private_modal, "apply", str(path), "--auto-approve", cwd=tmp_path)
    assert code == 1
    line = one_error_line(err)
    assert "the lock Dict 'harvest-locks' of environment 'dev'" in line
    assert f"injected fault in {method}" in line
    converges(private_modal, path)


def test_lost_answers_to_the_locks_writes_are_read_back(private_modal: LocalModal,
                                                        tmp_path: Path) -> None:
    """Every DictUpdate answers an error, though half of them landed (the answer was lost):
    harvest reads the entry back, so the apply still takes, renews and frees its lock."""
    path = write_env(tmp_path, "dev", VOLUMES_ONLY)
    fail_always(private_modal, "DictUpdate")
    code, out, err = run(private_modal, "apply", str(path), "--auto-approve", cwd=tmp_path)
    assert code == 0, err
    assert "Apply complete!" in out and private_modal.stats()["injected_errors"] > 0
    code, out, err = run(private_modal, "unlock", str(path), cwd=tmp_path)
    assert code == 0 and out.strip() == "dev/agents: not locked", out + err


def test_a_failing_cleanup_pop_does_not_fail_the_apply(private_modal: LocalModal,
                                                      tmp_path: Path) -> None:
    path = write_env(tmp_path, "dev", VOLUMES_ONLY)
    fail_always(private_modal, "DictPop")
    code, out, err = run(private_modal, "apply", str(path), "--auto-approve", cwd=tmp_path)
    assert code == 0, err
    assert "Apply complete!" in out
    code, out, err = run(private_modal, "unlock", str(path), cwd=tmp_path)
    assert code == 0 and out.strip() == "dev/agents: not locked", out + err


def test_a_failing_state_write_is_one_line_and_the_rerun_converges(private_modal: LocalModal,
                                                                   tmp_path: Path) -> None:
    path = write_env(tmp_path, "dev", VOLUMES_ONLY)
    fail_always(private_modal, "VolumePutFiles2")
    code, _, err = run(private_modal, "apply", str(path), "--auto-approve", cwd=tmp_path)
    assert code == 1
    line = one_error_line(err)
    assert "writing harvest-state:/apps/agents.json in environment 'dev'" in line
    assert "injected fault in VolumePutFiles2" in line
    converges(private_modal, path)  # the lock was released: no unlock needed


def test_a_failed_release_never_hides_the_first_error(modal_environment: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A step fails; then the lock cannot be released either (its environment, and so its
    Dict, was deleted meanwhile): the step's error is the one raised."""
    env = modal_environment

    def steps_fail(self: Applier) -> None:
        modal_cli("environment", "delete", env, "--yes")
        raise BackendError("volume.agent-state: the first error")

    monkeypatch.setattr(Applier, "run", steps_fail)
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("HARVEST_GITHUB_TOKEN", "x")
    monkeypatch.chdir(tmp_path)
    path = write_env(tmp_path, env)
    with pytest.raises(BackendError, match="the first error"):
        run_apply((str(path),), ApplyOptions(auto_approve=True), "modal")
    err = capsys.readouterr().err
    assert "Warning: could not release the lock" in err and "harvest unlock" in err
