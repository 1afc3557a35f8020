"""The scheduler: one warm pool of containers per function, and the inputs that flow
through them.

* A pool has an input queue. Containers pull inputs (a long poll); a pool starts containers
  on demand, up to `max_containers`, keeps them while they are warm, stops them after its
  scaledown window, and keeps `min_containers` running.
* An input that fails (or times out, or loses its container) is retried per the function's
  retry policy, after its backoff delay, with `retry_count + 1`; the last attempt's result is
  the input's output.
* A call's cancellation is delivered to the containers running its inputs (their heartbeat),
  or ends them when asked.
* A container starts only when its environment has room for it (`Accounting`: its
  `max_concurrent_tasks`, its budget); without room the inputs wait in the queue and each tick
  tries again. The accounting hears of every container's start and end (to meter it).

Containers are started only through the `Launcher`; their process runs Modal's own
container entrypoint. The pool of a function is keyed by its function id (a bound class
instance has its own id, hence its own pool); a new definition (redeploy) drains the old
containers and starts new ones.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import fcntl
import logging
import math
import os
import signal
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harvest_iac.emulator.runtime.calls import RETRYABLE, Call, Input, Output, Pulse, Result, Status
from harvest_iac.emulator.runtime.function_containers import Container, ContainerPlan, remove_leftovers
from harvest_iac.emulator.runtime.launcher import Launcher
from harvest_iac.emulator.runtime.logs import LogBook
from harvest_iac.emulator.runtime.schedules import Ticker
from harvest_iac.emulator.runtime.web import WebFront

log = logging.getLogger("harvest.emulator.runtime")

MIN_RETRY_DELAY_S = 1.0
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_SCALEDOWN_S = 60.0
STOP_GRACE_S = 5.0
CLEARED_CALL_GRACE_S = 30.0
KEEP_FINISHED_CALLS = 2000
TICK_S = 0.5
OUTPUT_LINGER_S = 0.05
OUTPUT_BATCH = 100
MAX_STARTING = 1
"""Containers of one pool starting at once (for demand; `min_containers` start together):
a cold start costs a CPU-second, and warm containers often drain the queue meanwhile."""
IO_BOUND_CPU_SHARE = 0.5
LONG_INPUT_S = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    """A function's `modal.Retries`."""

    retries: int = 0
    backoff_coefficient: float = 1.0
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first): the initial delay times the
        coefficient for each earlier retry, at least 1 s and at most the max delay."""
        delay = self.initial_delay_s * self.backoff_coefficient ** (retry - 1)
        return min(max(delay, MIN_RETRY_DELAY_S), max(self.max_delay_s, MIN_RETRY_DELAY_S))


@dataclass(frozen=True)
class Resources:
    """What each container of a function asks for (None: Modal's default)."""

    cpu: float | None = None
    memory_mib: int | None = None
    gpu: str | None = None
    """`TYPE:count`."""


@dataclass(frozen=True)
class FunctionConfig:
    """How the runtime runs one function (or one bound class instance)."""

    key: str
    """The pool: the function id the callers use (a bound function id for a class instance)."""
    app_id: str
    function_id: str
    name: str
    version: str
    """Changes when the code or its settings change: older containers are then drained."""
    plan: Callable[[str, Path], ContainerPlan]
    """The container of a task id (and its folder), as the API layer describes it."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    startup_timeout_s: float = DEFAULT_TIMEOUT_S
    """How long a container may take to ask for its first input."""
    retry: RetryPolicy = RetryPolicy()
    min_containers: int = 0
    max_containers: int | None = None
    scaledown_window_s: float = DEFAULT_SCALEDOWN_S
    concurrency: int = 1
    single_use: bool = False
    environment_id: str = ""
    resources: Resources = Resources()


@dataclass(eq=False)
class Task:
    """One container of a pool, and the inputs it runs."""

    task_id: str
    pool: Pool
    container: Container
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    running: dict[str, Input] = field(default_factory=dict)
    polled: bool = False
    draining: bool = False
    stopping: bool = False
    result: Result | None = None
    requeue: bool = False
    """Its running inputs go back to the queue when it exits (not their fault it ended)."""
    cancels: list[str] = field(default_factory=list)
    cancel_pulse: Pulse = field(default_factory=Pulse)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    stop_deadline: float | None = None

    cpu_share: float = 1.0
    """The share of a core the container used lately (1.0 until measured)."""
    _cpu_mark: tuple[float, float] | None = None

    def sample_cpu(self, now: float) -> None:
        used = self.container.cpu_seconds()
        if used is None:
            return
        if self._cpu_mark is not None and now > self._cpu_mark[0]:
            self.cpu_share = (used - self._cpu_mark[1]) / (now - self._cpu_mark[0])
        self._cpu_mark = (now, used)

    @property
    def free_slots(self) -> int:
        return 0 if self.draining else max(0, self.pool.config.concurrency - len(self.running))


@dataclass(eq=False)
class Pool:
    """A function's warm pool: its queue and its containers."""

    config: FunctionConfig
    queue: collections.deque[Input] = field(default_factory=collections.deque)
    tasks: dict[str, Task] = field(default_factory=dict)
    available: Pulse = field(default_factory=Pulse)
    input_seconds: float = 0.0
    """How long its inputs ran lately (a moving average)."""

    def live(self) -> list[Task]:
        return [t for t in self.tasks.values() if not t.draining]


class Accounting(Protocol):
    """The environment's side of containers: how many more may start in an environment
    (its task cap, its budget), and each container's start and end (metered)."""

    def room(self, environment_id: str) -> int | None:
        """How many more containers may start in the environment now (None: no limit)."""

    def started(self, task: Task) -> None: ...

    def ended(self, task: Task) -> None: ...


CANCELLED = Result(Status.TERMINATED, message="The function call was cancelled")
# A reply to a container asking for inputs: the inputs, or KILL (stop asking, exit).
KILL = None


def _kill_containers(ref: weakref.ref[Scheduler]) -> None:
    """At interpreter exit: no container outlives the local Modal that started it."""
    scheduler = ref()
    for task in list(scheduler.tasks.values()) if scheduler is not None else []:
        task.container.signal(signal.SIGKILL)


class Scheduler:
    """Pools, tasks, calls and inputs of one local Modal."""

    def __init__(self, data_dir: Path, launcher: Launcher, *, new_id: Callable[[str], str],
                 max_containers: int = 8, web_host: str = "127.0.0.1") -> None:
        self.container_dir = Path(data_dir) / "containers"
        self.launcher = launcher
        self.new_id = new_id
        self.local_max_containers = max_containers
        self.pools: dict[str, Pool] = {}
        self.tasks: dict[str, Task] = {}
        self.calls: dict[str, Call] = {}
        self.inputs: dict[str, Input] = {}
        self.logs = LogBook()
        self.schedules = Ticker()
        self.web = WebFront(web_host)
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.closing = False
        self.accounting: Accounting | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._sole_runner():
            remove_leftovers(self.container_dir)
        atexit.register(_kill_containers, weakref.ref(self))
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    def _sole_runner(self) -> bool:
        """Take this data directory's container lock for as long as this process lives;
        False when another local Modal runs containers here (leave its folders alone)."""
        self.container_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.container_dir / ".lock", "a+")  # noqa: SIM115 - held open
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    async def shutdown(self) -> None:
        self.closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        self.schedules.stop()
        for task in list(self.tasks.values()):
            task.stopping = True
            task.container.signal(signal.SIGKILL)
        await self.web.close()
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    # -- pools ------------------------------------------------------------------------
    def configure(self, config: FunctionConfig) -> Pool:
        """The pool of `config.key`, made or updated; a new version drains older containers."""
        pool = self.pools.get(config.key)
        if pool is None:
            pool = self.pools[config.key] = Pool(config)
        elif pool.config.version != config.version:
            pool.config = config
            for task in pool.tasks.values():
                self._drain(task)
        else:
            pool.config = config
        self._scale(pool)
        return pool

    def stop_app(self, app_id: str) -> None:
        """The app stopped: its schedules, web endpoints and pools go, queued inputs end
        TERMINATED, containers stop."""
        self.schedules.drop_app(app_id)
        self.web.close_app(app_id)
        for key, pool in list(self.pools.items()):
            if pool.config.app_id != app_id:
                continue
            del self.pools[key]
            while pool.queue:
                inp = pool.queue.popleft()
                self._record(inp, Result(Status.TERMINATED, message="The app was stopped"))
            for task in pool.tasks.values():
                task.stopping = True
                self._drain(task, grace_s=STOP_GRACE_S)
        self.logs.close(app_id)

    def _scale(self, pool: Pool) -> None:
        """Start containers for what the queue holds beyond the free slots, up to the limit,
        one at a time, and only while another container can help (see `_would_help`)."""
        if self.closing:
            return
        need = len(pool.queue) - sum(t.free_slots for t in pool.tasks.values())
        live = pool.live()
        warm = max(0, pool.config.min_containers - len(live))
        want = math.ceil(need / max(pool.config.concurrency, 1)) if need > 0 and self._would_help(pool, live) else 0
        limit = pool.config.max_containers or self.local_max_containers
        starting = sum(1 for t in live if not t.polled)
        room = min(limit - len(live), MAX_STARTING - starting)
        count = max(0, min(limit - len(live), max(min(want, room), warm)))
        for _ in range(min(count, self._environment_room(pool) if count else 0)):
            self._start_task(pool)

    def _environment_room(self, pool: Pool) -> int:
        """Containers the pool's environment lets start now: over its task cap (or its budget)
        the inputs wait in the queue; each tick tries again."""
        room = self.accounting.room(pool.config.environment_id) if self.accounting else None
        return self.local_max_containers if room is None else max(0, room)

    def running_in(self, environment_id: str) -> int:
        """Containers of the environment's functions, starting, running or stopping."""
        return sum(1 for t in self.tasks.values() if t.pool.config.environment_id == environment_id)

    @staticmethod
    def _would_help(pool: Pool, live: list[Task]) -> bool:
        """Whether another container would get through the queue sooner: when there is none;
        when inputs take long and a running container mostly waits (its inputs sleep, call
        other functions, wait on sandboxes); else only when the machine has a spare core
        (short inputs are bound by the CPU the client, the local Modal and the containers
        spend per input, which more containers on a busy machine only take away)."""
        ready = [t for t in live if t.polled]
        if not ready:
            return True
        waiting = any(t.running and t.cpu_share < IO_BOUND_CPU_SHARE for t in ready)
        if pool.input_seconds >= LONG_INPUT_S and waiting:
            return True
        return os.getloadavg()[0] < (os.cpu_count() or 1) - 0.5

    def _start_task(self, pool: Pool) -> Task:
        task_id = self.new_id("ta")
        config = pool.config

        def output(fd: int, text: str) -> None:
            self.logs.write(config.app_id, task_id, config.function_id, fd, text)

        container = Container(self.container_dir / task_id / "root", output)
        task = Task(task_id, pool, container)
        pool.tasks[task_id] = task
        self.tasks[task_id] = task
        if self.accounting is not None:
            self.accounting.started(task)
        self._spawn(self._run(task))
        return task

    async def _run(self, task: Task) -> None:
        container = task.container
        code: int | None = None
        plan: ContainerPlan | None = None
        try:
            plan = task.pool.config.plan(task.task_id, container.root)
            await container.start(self.launcher, plan)
        except Exception as exc:  # the plan or the launch failed: the inputs must hear of it
            log.warning("container %s of %s did not start: %s", task.task_id,
                        task.pool.config.name, exc)
            task.result = Result(Status.FAILURE, message=f"The container did not start: {exc}")
        else:
            code = await container.wait()
        finally:
            self._exited(task, code)
            await self._finish(task, plan)
            await asyncio.to_thread(container.remove)

    @staticmethod
    async def _finish(task: Task, plan: ContainerPlan | None) -> None:
        if plan is None or plan.finish is None:
            return
        try:
            await plan.finish()
        except Exception:  # what the container left must not stop the cleanup
            log.exception("container %s of %s: finishing failed", task.task_id, task.pool.config.name)

    def _exited(self, task: Task, code: int | None) -> None:
        pool = task.pool
        pool.tasks.pop(task.task_id, None)
        self.tasks.pop(task.task_id, None)
        if self.accounting is not None:
            self.accounting.ended(task)
        for timer in task.timers.values():
            timer.cancel()
        failure = task.result or Result(Status.FAILURE, message=self._crash_message(task, code))
        for inp in list(task.running.values()):
            if task.requeue:
                self._requeue(inp)
            elif task.stopping or inp.call.cancelled:
                self._record(inp, Result(Status.TERMINATED, message="The container was stopped"))
            else:
                self._end(inp, failure)
        task.running.clear()
        if not task.polled and not task.draining and (code != 0 or task.result is not None):
            self._fail_queue(pool, failure)
        if self.pools.get(pool.config.key) is pool:
            self._scale(pool)

    @staticmethod
    def _crash_message(task: Task, code: int | None) -> str:
        tail = task.container.stderr_tail.decode("utf-8", errors="replace").strip()
        what = f"The container of {task.pool.config.name!r} exited with code {code}"
        return f"{what}:\n{tail}" if tail else what

    def _fail_queue(self, pool: Pool, failure: Result) -> None:
        """A container could not start: the queued inputs would meet the same fate."""
        while pool.queue:
            self._record(pool.queue.popleft(), failure)

    def _drain(self, task: Task, grace_s: float | None = None) -> None:
        """Give the container no more inputs; it exits once it asks (killed after the grace)."""
        task.draining = True
        if grace_s is not None:
            task.stop_deadline = time.monotonic() + grace_s
        task.pool.available.fire()
        if not task.polled and not task.running:
            task.container.signal(signal.SIGTERM)

    # -- the supervisor ---------------------------------------------------------------
    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._tick()
            except Exception:  # keep supervising whatever one pool did
                log.exception("runtime supervisor")

    def _tick(self) -> None:
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.stop_deadline is not None and now >= task.stop_deadline:
                task.container.signal(signal.SIGKILL)
            task.sample_cpu(now)
            if not task.polled and not task.draining and now - task.started_mono > task.pool.config.startup_timeout_s:
                limit = task.pool.config.startup_timeout_s
                task.result = Result(Status.FAILURE, message=f"The container did not start within {limit:g}s")
                task.container.signal(signal.SIGKILL)
        for pool in list(self.pools.values()):
            self._scale_down(pool, now)
            self._scale(pool)

    def _scale_down(self, pool: Pool, now: float) -> None:
        live = pool.live()
        idle = [t for t in live if t.polled and not t.running
                and now - t.last_active >= pool.config.scaledown_window_s]
        for task in idle[: max(0, len(live) - pool.config.min_containers)]:
            self._drain(task, grace_s=STOP_GRACE_S)

    # -- calls (the caller's side) ----------------------------------------------------
    def new_call(self, pool_key: str, app_id: str, function_id: str, invocation: int) -> Call:
        call = Call(self.new_id("fc"), pool_key, app_id, function_id, invocation)
        self.calls[call.call_id] = call
        return call

    def add_inputs(self, call: Call, items: Iterable[tuple[int, bytes]]) -> list[Input]:
        """Queue inputs (idx, encoded input) of a call."""
        made = []
        for idx, body in items:
            inp = Input(self.new_id("in"), call, idx, body)
            call.add(inp)
            self.inputs[inp.input_id] = inp
            made.append(inp)
        for inp in made:
            self._enqueue(inp)
        self._finished.pop(call.call_id, None)
        return made

    def retry_input(self, input_id: str, body: bytes, retry_count: int) -> Input | None:
        """The caller retries an input itself: a new attempt of the same input."""
        inp = self.inputs.get(input_id)
        if inp is None:
            return None
        inp.call.reopen(inp)
        inp.body, inp.retry_count, inp.task_id = body, retry_count, ""
        self._enqueue(inp)
        return inp

    def finish_inputs(self, call: Call, count: int) -> None:
        call.declared_inputs = count
        call.changed.fire()
        self._maybe_forget(call)

    def _enqueue(self, inp: Input) -> None:
        pool = self.pools.get(inp.call.pool_key)
        if pool is None:
            self._record(inp, Result(Status.FAILURE, message="The function is not running: its app was stopped"))
            return
        pool.queue.append(inp)
        self._scale(pool)
        pool.available.fire()

    async def wait_outputs(self, call: Call, *, after: int | None, start: int, end: int,
                           timeout: float) -> list[Output]:
        """Outputs after entry `after` (a cursor), or with idx in [start, end]; waits up to
        `timeout` for at least one. A cursor read lingers briefly for more while inputs are
        still running, so a map's outputs come back in batches, not one round trip each."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            found = call.outputs_after(after) if after is not None else call.outputs_between(start, end)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0 or call.call_id not in self.calls:
                break
            await call.changed.wait(remaining)
        if after is None or not found:
            return found
        linger_until = min(deadline, time.monotonic() + OUTPUT_LINGER_S)
        while call.unfinished and len(found) < OUTPUT_BATCH and time.monotonic() < linger_until:
            await call.changed.wait(linger_until - time.monotonic())
            found = call.outputs_after(after)
        return found

    def clear(self, call: Call) -> None:
        """The caller has what it wanted: forget the call soon."""
        call.cleared = True
        self._maybe_forget(call)

    def cancel(self, call: Call, *, terminate_containers: bool) -> None:
        call.cancelled = True
        for pool in self.pools.values():
            for inp in [i for i in pool.queue if i.call is call]:
                pool.queue.remove(inp)
                self._record(inp, CANCELLED)
        for inp in call.inputs.values():
            task = self.tasks.get(inp.task_id) if not inp.done else None
            if task is None:
                continue
            if terminate_containers:
                task.stopping = True
                task.container.signal(signal.SIGKILL)
            else:
                task.cancels.append(inp.input_id)
                task.cancel_pulse.fire()
        call.changed.fire()

    # -- containers (the container's side) --------------------------------------------
    async def next_inputs(self, task_id: str, max_items: int, timeout: float, *,
                          slots: int = 1) -> list[Input] | None:
        """Inputs for a container asking for work (at most `max_items`; it has `slots` input
        slots), [] when none came within `timeout`, or KILL when it should exit."""
        task = self.tasks.get(task_id)
        if task is None:
            return KILL
        if not task.polled:
            task.polled = True
            self._scale(task.pool)  # the next container may start now
        if slots <= 1 and task.running:
            # It asks with its only slot free: the answer that gave it this input was lost.
            # The same attempt again (a container skips an input it already runs).
            return list(task.running.values())[:1]
        deadline = time.monotonic() + timeout
        while True:
            if task.draining:
                return KILL
            pool = task.pool
            if pool.queue:
                return self._hand_out(task, max(1, max_items))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await pool.available.wait(remaining)

    def _hand_out(self, task: Task, count: int) -> list[Input]:
        pool = task.pool
        if pool.config.single_use:
            count = 1
        taken: list[Input] = []
        now = time.time()
        while pool.queue and len(taken) < count:
            inp = pool.queue.popleft()
            inp.task_id, inp.started_at = task.task_id, now
            task.running[inp.input_id] = inp
            task.timers[inp.input_id] = asyncio.get_running_loop().call_later(
                pool.config.timeout_s, self._expire, inp, inp.retry_count, task
            )
            taken.append(inp)
        task.last_active = time.monotonic()
        if pool.config.single_use:
            task.draining = True
        return taken

    def _expire(self, inp: Input, retry_count: int, task: Task) -> None:
        if inp.done or inp.task_id != task.task_id or inp.retry_count != retry_count:
            return
        timeout = task.pool.config.timeout_s
        task.requeue = True  # the other inputs it runs are not to blame
        task.running.pop(inp.input_id, None)
        self._end(inp, Result(Status.TIMEOUT, message=f"Function timed out after {timeout:g}s"))
        task.draining = True
        task.container.signal(signal.SIGKILL)

    def put_output(self, task_id: str, input_id: str, retry_count: int, result: Result) -> None:
        """A container's result for an input; a late or stale one (an older attempt) is dropped."""
        inp = self.inputs.get(input_id)
        if inp is None or inp.done or inp.task_id != task_id or inp.retry_count != retry_count:
            return
        if result.status == Status.TERMINATED and inp.call.cancelled:
            result = CANCELLED
        self._end(inp, result)

    def put_data(self, call_id: str, chunks: list[tuple[int, bytes]]) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.data_out.put(chunks)

    def task_result(self, task_id: str, result: Result) -> None:
        """The container reports it failed as a whole (e.g. its imports or `@enter` raised)."""
        task = self.tasks.get(task_id)
        if task is not None:
            task.result = result

    def stop_task(self, task_id: str, *, graceful: bool = True) -> bool:
        """Stop a container: gracefully (it finishes its inputs, takes no more), or now (its
        running inputs go back to the queue). False for an unknown task."""
        task = self.tasks.get(task_id)
        if task is None:
            return False
        if graceful:
            self._drain(task)
        else:
            task.requeue = True
            self._drain(task, grace_s=STOP_GRACE_S)
            task.container.signal(signal.SIGINT)
        return True

    async def cancellations(self, task_id: str, wait_s: float) -> list[str]:
        """Input ids the container should cancel, waiting up to `wait_s` for some."""
        task = self.tasks.get(task_id)
        if task is None:
            return []
        if not task.cancels:
            await task.cancel_pulse.wait(wait_s)
        ids, task.cancels = task.cancels, []
        return ids

    # -- ending inputs ----------------------------------------------------------------
    def _end(self, inp: Input, result: Result) -> None:
        """An attempt ended: retry it per the policy, or record the input's output."""
        task = self.tasks.get(inp.task_id)
        if task is not None:
            task.running.pop(inp.input_id, None)
            timer = task.timers.pop(inp.input_id, None)
            if timer is not None:
                timer.cancel()
            task.last_active = time.monotonic()
            task.pool.input_seconds += 0.2 * (time.time() - inp.started_at - task.pool.input_seconds)
        pool = self.pools.get(inp.call.pool_key)
        policy = pool.config.retry if pool is not None else RetryPolicy()
        if result.status in RETRYABLE and not inp.call.cancelled and inp.retry_count < policy.retries:
            inp.retry_count += 1
            inp.task_id = ""
            delay = policy.delay_s(inp.retry_count)
            asyncio.get_running_loop().call_later(delay, self._requeue, inp)
            return
        self._record(inp, result)

    def _requeue(self, inp: Input) -> None:
        if inp.done:
            return
        inp.task_id = ""
        if inp.call.cancelled:
            self._record(inp, CANCELLED)
        else:
            self._enqueue(inp)

    def _record(self, inp: Input, result: Result) -> None:
        if inp.done:
            return
        inp.call.record(inp, result, time.time())
        self._maybe_forget(inp.call)

    def _maybe_forget(self, call: Call) -> None:
        if not call.finished:
            return
        if call.cleared:
            asyncio.get_running_loop().call_later(CLEARED_CALL_GRACE_S, self._forget, call.call_id)
            return
        self._finished[call.call_id] = None
        while len(self._finished) > KEEP_FINISHED_CALLS:
            self._forget(self._finished.popitem(last=False)[0])

    def _forget(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        self._finished.pop(call_id, None)
        if call is None:
            return
        for input_id in call.inputs:
            self.inputs.pop(input_id, None)
        call.changed.fire()

    # -- reading ----------------------------------------------------------------------
    def tasks_of(self, app_id: str | None = None) -> list[Task]:
        return sorted((t for t in self.tasks.values() if app_id is None or t.pool.config.app_id == app_id),
                      key=lambda t: t.started_at)
