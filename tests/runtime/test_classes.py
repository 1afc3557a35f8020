"""`@app.cls` on the local Modal: methods through `Cls.from_name`, `modal.parameter`
instances, `@modal.enter` / `@modal.exit`, generator methods, `with_options`, and a failing
`@enter` reaching the caller."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import modal
import pytest
from modal.exception import FunctionTimeoutError
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc

APP = Path(__file__).parent / "apps" / "classes_app.py"


@pytest.fixture(scope="module")
def env(local_modal: object) -> str:
    name = "rc-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(name)
    modal_cli("deploy", str(APP), "--env", name, cwd=APP.parent)
    return name


@pytest.fixture(scope="module")
def cls(env: str) -> Callable[[str], modal.Cls]:
    return lambda name: modal.Cls.from_name("rt-classes", name, environment_name=env)


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_methods_share_the_instance_that_enter_prepared(cls: Callable[[str], modal.Cls]) -> None:
    counter = cls("Counter")(start=10)
    assert counter.bump.remote(5) == 15
    assert counter.bump.remote(by=5) == 20  # same container, @enter ran once
    assert list(counter.countdown.remote_gen(3)) == [3, 2, 1]


def test_parameters_make_separate_instances(cls: Callable[[str], modal.Cls]) -> None:
    counter = cls("Counter")
    first, second = counter(start=100, label="a"), counter(start=200, label="b")
    assert (first.bump.remote(), second.bump.remote()) == (101, 201)
    assert first.whoami.remote() != second.whoami.remote()  # one container pool per instance
    assert counter(start=100, label="a").bump.remote() == 102  # the same parameters: the same instance


def test_exit_runs_when_the_container_stops(env: str, cls: Callable[[str], modal.Cls]) -> None:
    label = uuid.uuid4().hex
    assert cls("Counter")(label=label).bump.remote(7) == 7
    notes = modal.Dict.from_name("rt-class-notes", environment_name=env, create_if_missing=True)
    wait_until(lambda: label in notes)  # scaledown_window=2, then @exit writes the value
    assert notes[label] == 7


def test_a_failing_enter_reaches_the_caller(cls: Callable[[str], modal.Cls]) -> None:
    with pytest.raises(RuntimeError, match="enter failed"):
        cls("Broken")().run.remote()


def test_with_options_overrides_the_definition(cls: Callable[[str], modal.Cls]) -> None:
    with pytest.raises(FunctionTimeoutError):
        cls("Counter").with_options(timeout=1)().nap.remote(20)
    assert cls("Counter")().nap.remote(0.1) == 0.1


def test_a_redeploy_keeps_the_class_id(env: str) -> None:
    def class_id() -> str:
        found = raw_rpc("ClassGet", api_pb2.ClassGetRequest(
            app_name="rt-classes", object_tag="Counter", environment_name=env))
        return str(found.class_id)  # type: ignore[attr-defined]

    before = class_id()
    modal_cli("deploy", str(APP), "--env", env, cwd=APP.parent)
    assert class_id() == before and before.startswith("cs-")
