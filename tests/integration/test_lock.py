"""harvest's lock against the real local Modal: takeover, renewal and release race each other,
forced into the worst interleaving with the Lock's pause hook; only one run may proceed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harvest_iac import apply
from harvest_iac.apply import Lock
from harvest_iac.errors import LockError
from harvest_iac.modal_backend import ModalOps
from tests.integration.helpers import harvest, one_error_line, write_env

APP = "agents"


def new_lock(env: str, messages: list[str] | None = None) -> Lock:
    sink = messages if messages is not None else []
    return Lock(ModalOps(env), APP, timeout=0.0, echo=sink.append)


@pytest.fixture
def stale_holder(modal_environment: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lock]:
    """A run that took the lock and then stalled past its deadline (still alive)."""
    monkeypatch.setattr(apply, "LOCK_TTL_S", -1.0)
    holder = new_lock(modal_environment)
    holder.acquire()
    monkeypatch.setattr(apply, "LOCK_TTL_S", 3600.0)
    yield holder


class Paused:
    """Runs `fn` in a thread that stops at the lock's pause point `point` until `resume()`."""

    def __init__(self, lock: Lock, point: str, fn: Callable[[], None]) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()
        self.error: BaseException | None = None
        self.done = False

        def pause(at: str) -> None:
            if at == point and not self.reached.is_set():
                self.reached.set()
                assert self._go.wait(60)

        lock.pause = pause

        def run() -> None:
            try:
                fn()
                self.done = True
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self.reached.wait(60), "the pause point was never reached"

    def resume(self) -> None:
        self._go.set()
        self._thread.join(60)
        assert not self._thread.is_alive()


def test_two_takeovers_of_a_stale_lock_only_one_proceeds(stale_holder: Lock,
                                                        modal_environment: str) -> None:
    slow_messages: list[str] = []
    slow = new_lock(modal_environment, slow_messages)
    paused = Paused(slow, "takeover", slow.acquire)  # read the stale lock, then stalled
    fast = new_lock(modal_environment)
    fast.acquire()  # read the same stale lock and took it over
    paused.resume()
    assert any("taking over a stale lock" in m for m in slow_messages)
    assert isinstance(paused.error, LockError), "both runs acquired the lock"
    assert "held by" in str(paused.error)
    fast.refresh()  # still the holder
    fast.release()


def test_a_renewal_and_a_takeover_only_one_proceeds(stale_holder: Lock,
                                                    modal_environment: str) -> None:
    """The stalled holder wakes up and renews while another run is taking the lock over."""
    taker = new_lock(modal_environment)
    paused = Paused(taker, "takeover", taker.acquire)
    stale_holder.refresh()  # the holder renews first: it keeps the lock
    paused.resume()
    assert isinstance(paused.error, LockError), "the takeover went ahead over a renewed lock"
    stale_holder.refresh()
    stale_holder.release()


def test_a_takeover_during_a_renewal_stops_the_old_holder(stale_holder: Lock,
                                                          modal_environment: str) -> None:
    paused = Paused(stale_holder, "renew", stale_holder.refresh)  # about to renew
    taker = new_lock(modal_environment)
    taker.acquire()  # takes the stale lock over meanwhile
    paused.resume()
    assert isinstance(paused.error, LockError) and "lost the lock" in str(paused.error)
    taker.refresh()
    with pytest.raises(LockError, match="held by"):
        new_lock(modal_environment).acquire()


def test_a_late_release_never_frees_the_next_holders_lock(stale_holder: Lock,
                                                          modal_environment: str) -> None:
    paused = Paused(stale_holder, "release", stale_holder.release)  # about to release
    taker = new_lock(modal_environment)
    taker.acquire()
    paused.resume()
    assert paused.error is None
    with pytest.raises(LockError, match="held by"):  # the taker still holds it
        new_lock(modal_environment).acquire()
    taker.release()
    new_lock(modal_environment).acquire()


def test_many_concurrent_takeovers_exactly_one_wins(stale_holder: Lock,
                                                    modal_environment: str) -> None:
    contenders = [new_lock(modal_environment) for _ in range(4)]
    paused = [Paused(c, "takeover", c.acquire) for c in contenders]
    for p in paused:
        p.resume()
    winners = [p for p in paused if p.done]
    assert len(winners) == 1, [p.error for p in paused]
    assert all(isinstance(p.error, LockError) for p in paused if not p.done)


def test_released_lock_is_taken_without_a_warning(modal_environment: str, tmp_path: Path) -> None:
    first = new_lock(modal_environment)
    first.acquire()
    first.release()
    messages: list[str] = []
    second = new_lock(modal_environment, messages)
    second.acquire()
    assert messages == []
    second.release()


# -- harvest unlock ----------------------------------------------------------------------------
def test_unlock_without_a_terminal_refuses_a_live_lock(modal_environment: str,
                                                       tmp_path: Path) -> None:
    holder = new_lock(modal_environment)
    holder.acquire()
    path = write_env(tmp_path, modal_environment)
    refused = harvest("unlock", str(path), "--target", "modal", cwd=tmp_path)
    assert refused.returncode == 1
    line = one_error_line(refused.stderr)
    owner = holder.value["owner"]
    assert "the lock is live" in line and owner in line and "deadline" in line
    assert "pass --yes" in line
    holder.refresh()  # still held
    freed = harvest("unlock", str(path), "--target", "modal", "--yes", cwd=tmp_path)
    assert freed.returncode == 0 and "Lock freed." in freed.stdout
    assert owner in freed.stdout
    with pytest.raises(LockError, match="lost the lock"):
        holder.refresh()


def test_unlock_without_a_terminal_refuses_a_stale_lock_too(stale_holder: Lock,
                                                            modal_environment: str,
                                                            tmp_path: Path) -> None:
    path = write_env(tmp_path, modal_environment)
    refused = harvest("unlock", str(path), "--target", "modal", cwd=tmp_path)
    assert refused.returncode == 1
    line = one_error_line(refused.stderr)
    assert "the lock is stale" in line and "(passed)" in line and "pass --yes" in line
    stale_holder.refresh()  # nothing was freed


def test_unlock_in_a_missing_environment_says_not_locked(local_modal: object,
                                                         tmp_path: Path) -> None:
    path = write_env(tmp_path, "never-created-" + tmp_path.name[-8:].replace("_", "-"))
    proc = harvest("unlock", str(path), "--target", "modal", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(": not locked") and "Traceback" not in proc.stderr
