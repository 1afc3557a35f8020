"""Deployed functions run on the local Modal, called with the real client the ways Modal's
documentation shows: `.remote()`, `.remote_gen()`, `.map()`, `.starmap()`, `.for_each()`,
`.spawn()` and `FunctionCall`, `spawn_map`, the `.aio` variants; exceptions with their remote
traceback, timeouts, retries with backoff, warm reuse, scaledown, `max_containers`,
`min_containers`, `@modal.concurrent`, cancellation and payloads that go through blobs."""

from __future__ import annotations

import asyncio
import io
import json
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
import modal
import pytest
from modal.exception import FunctionTimeoutError

from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc

APP = Path(__file__).parent / "apps" / "calls_app.py"


@pytest.fixture(scope="module")
def env(local_modal: object) -> str:
    """An environment of its own with the test app deployed by `modal deploy`."""
    name = "rt-" + uuid.uuid4().hex[:10]
    modal.Environment.objects.create(name)
    modal_cli("deploy", str(APP), "--env", name, cwd=APP.parent)
    return name


@pytest.fixture(scope="module")
def fn(env: str) -> Callable[[str], modal.Function]:
    return lambda name: modal.Function.from_name("rt-calls", name, environment_name=env)


def notes(env: str) -> modal.Dict:
    return modal.Dict.from_name("rt-notes", environment_name=env, create_if_missing=True)


def containers(env: str) -> set[str]:
    """Ids of the environment's running containers (what `modal container list` shows)."""
    listing = raw_rpc("TaskList", api_pb2.TaskListRequest(environment_name=env))
    return {t.task_id for t in listing.tasks}  # type: ignore[attr-defined]


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_remote_runs_the_code_and_reuses_the_warm_container(fn: Callable[[str], modal.Function]) -> None:
    assert fn("square").remote(7) == 49
    first, second = fn("whoami").remote(), fn("whoami").remote()
    assert first == second  # same process, same task: the container stayed warm
    assert first["task"].startswith("ta-")


def test_remote_gen_streams_a_generator(fn: Callable[[str], modal.Function]) -> None:
    assert list(fn("countdown").remote_gen(4)) == [4, 3, 2, 1]
    assert list(fn("countdown").remote_gen(0)) == []


def test_map_starmap_and_for_each(fn: Callable[[str], modal.Function]) -> None:
    assert list(fn("square").map(range(30))) == [x * x for x in range(30)]
    assert list(fn("add").starmap([(1, 2), (3, 4)])) == [3, 7]
    assert sorted(fn("square").map(range(5), order_outputs=False)) == [0, 1, 4, 9, 16]
    assert fn("square").for_each(range(3)) is None
    with pytest.raises(ValueError, match="negative input: -1"):
        fn("checked").for_each([1, -1])


def test_map_with_return_exceptions(fn: Callable[[str], modal.Function]) -> None:
    results = list(fn("checked").map([1, -2, 3], return_exceptions=True))
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], Exception) and "negative input: -2" in str(results[1])
    with pytest.raises(ValueError, match="negative input: -2"):
        list(fn("checked").map([1, -2, 3]))


def test_exceptions_reach_the_caller_with_the_remote_traceback(fn: Callable[[str], modal.Function]) -> None:
    with pytest.raises(ValueError, match="negative input: -5") as raised:
        fn("checked").remote(-5)
    remote = "".join(traceback.format_exception(raised.value))
    assert "calls_app.py" in remote and "_check_positive" in remote


def test_spawn_get_and_from_id(fn: Callable[[str], modal.Function]) -> None:
    call = fn("square").spawn(6)
    assert call.object_id.startswith("fc-")
    again = modal.FunctionCall.from_id(call.object_id)
    assert again.get() == 36
    assert call.get(timeout=10) == 36  # a spawned result can be read more than once
    assert again.num_inputs() == 1


def test_spawn_map_and_experimental_spawn_map(env: str, fn: Callable[[str], modal.Function]) -> None:
    key = uuid.uuid4().hex
    fn("flaky").spawn_map([f"{key}-{i}" for i in range(3)], kwargs={"failures": 0})
    wait_until(lambda: all(f"{key}-{i}" in notes(env) for i in range(3)))
    call = fn("square").experimental_spawn_map(range(5))
    assert list(call.iter()) == [0, 1, 4, 9, 16]
    assert call.get(index=3) == 9


def test_aio_variants(fn: Callable[[str], modal.Function]) -> None:
    async def main() -> tuple[int, list[int], int, list[int]]:
        square = fn("square")
        one = await square.remote.aio(5)
        many = [x async for x in square.map.aio([1, 2, 3])]
        later = await (await square.spawn.aio(4)).get.aio()
        stream = [x async for x in fn("countdown").remote_gen.aio(2)]
        return one, many, later, stream

    assert asyncio.run(main()) == (25, [1, 4, 9], 16, [2, 1])


def test_timeout_ends_a_call(fn: Callable[[str], modal.Function]) -> None:
    with pytest.raises(FunctionTimeoutError, match="timed out"):
        fn("sleepy").remote(30)
    assert fn("sleepy").remote(0.1) == 0.1  # a new container serves the next call


def test_retries_follow_the_backoff(env: str, fn: Callable[[str], modal.Function]) -> None:
    key = uuid.uuid4().hex
    assert fn("flaky").remote(key, 2) == 3
    first, second, third = notes(env)[key]
    assert second - first >= 1.0  # initial_delay=1.0
    assert third - second >= 2.0  # backoff_coefficient=2.0


def test_retries_run_out(env: str, fn: Callable[[str], modal.Function]) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(RuntimeError, match="attempt 3 fails"):
        fn("flaky").remote(key, 5)
    assert len(notes(env)[key]) == 3  # the call and its 2 retries


def test_an_idle_container_scales_down(env: str, fn: Callable[[str], modal.Function]) -> None:
    first = fn("short_lived").remote()
    wait_until(lambda: first not in containers(env))
    assert fn("short_lived").remote() != first


def test_max_containers_with_concurrent_inputs(fn: Callable[[str], modal.Function]) -> None:
    calls = [fn("overlapping").spawn(1.0) for _ in range(3)]
    results = [c.get() for c in calls]
    assert len({task for task, _, _ in results}) == 1  # max_containers=1
    assert max(start for _, start, _ in results) < min(end for _, _, end in results)  # all at once


def test_min_containers_keeps_one_warm(env: str, fn: Callable[[str], modal.Function]) -> None:
    wait_until(lambda: len(containers(env)) > 0)
    listed = json.loads(modal_cli("container", "list", "--env", env, "--json").stdout)
    assert fn("always_warm").remote() in {c["container_id"] for c in listed}
    stats = fn("always_warm").get_current_stats()
    assert (stats.num_total_runners, stats.backlog) == (1, 0)


def test_cancel_a_running_call(env: str, fn: Callable[[str], modal.Function]) -> None:
    key = uuid.uuid4().hex
    call = fn("nap").spawn(60, key)
    wait_until(lambda: key in notes(env))
    call.cancel()
    with pytest.raises(Exception, match="cancelled"):
        call.get(timeout=20)
    assert fn("nap").remote(0.1) == 0.1


def test_large_arguments_and_results_go_through_blobs(fn: Callable[[str], modal.Function]) -> None:
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB: over the 2 MiB inline limit
    assert fn("echo").remote(big) == big
    medium = b"m" * 20_000  # over the 8 KiB limit of spawned calls
    assert fn("echo").spawn(medium).get() == medium


def test_volumes_in_containers_reload_and_commit(env: str, fn: Callable[[str], modal.Function]) -> None:
    volume = modal.Volume.from_name("rt-data", environment_name=env, create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"first"), "/in-1")
    assert fn("use_volume").remote("in-1", "one") == "first"
    assert b"".join(volume.read_file("out-in-1")) == b"one"  # committed by vol.commit()
    with volume.batch_upload() as batch:  # the container is warm: it must reload to see this
        batch.put_file(io.BytesIO(b"second"), "/in-2")
    assert fn("use_volume").remote("in-2", "two") == "second"
    assert b"".join(volume.read_file("out-in-2")) == b"two"
