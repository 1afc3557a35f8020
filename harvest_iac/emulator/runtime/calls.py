"""Function calls, their inputs and outputs: the runtime's bookkeeping, in memory.

A call (`.remote()`, `.spawn()`, `.map()`, a schedule's tick) owns inputs; each input ends
with one output, appended to the call's output log under a growing entry number, which is
what callers read (by index, or after an entry they have already seen). Generators also
append data chunks, and a web request's body comes in as data chunks. Payloads are opaque
bytes here: the API services encode and decode them.

None of this survives a restart of the local Modal: a call made before it is forgotten.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field


class Status(enum.Enum):
    """How an attempt (or a call's input) ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    TERMINATED = "terminated"
    INTERNAL_FAILURE = "internal_failure"


RETRYABLE = frozenset({Status.FAILURE, Status.TIMEOUT, Status.INTERNAL_FAILURE})


@dataclass(frozen=True)
class Result:
    """The end of an attempt: the container's own encoded result (`body`), or, when the
    runtime ended it (timeout, crash, cancellation), an empty body and a `message`."""

    status: Status
    body: bytes = b""
    message: str = ""
    data_format: int = 0
    """Opaque to the runtime: how the body's value is encoded."""


class Pulse:
    """Wakes every waiter at once each time something changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            pass


@dataclass(eq=False)
class DataStream:
    """Chunks of a call's data, by index from 1: a generator's items (out), a web request's
    body (in). Each put wakes whoever waits on the call."""

    changed: Pulse
    chunks: dict[int, bytes] = field(default_factory=dict)

    def put(self, chunks: list[tuple[int, bytes]]) -> None:
        for index, body in chunks:
            self.chunks.setdefault(index, body)
        self.changed.fire()

    def append(self, body: bytes) -> None:
        self.put([(len(self.chunks) + 1, body)])

    def after(self, index: int) -> list[tuple[int, bytes]]:
        return sorted((i, b) for i, b in self.chunks.items() if i > index)


@dataclass(eq=False)
class Input:
    """One input of a call, and its current attempt."""

    input_id: str
    call: Call
    idx: int
    body: bytes
    retry_count: int = 0
    task_id: str = ""
    started_at: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class Output:
    """An input's final result, as callers read it."""

    entry: int
    idx: int
    input_id: str
    result: Result
    task_id: str
    started_at: float
    finished_at: float


@dataclass(eq=False)
class Call:
    """A function call: its inputs (pending or done), outputs, and data streams."""

    call_id: str
    pool_key: str
    app_id: str
    function_id: str
    invocation: int
    """Opaque to the runtime: how the caller waits (echoed to the container)."""
    created_at: float = field(default_factory=time.time)
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    declared_inputs: int | None = None
    """How many inputs the caller says it sent (spawn_map's FunctionFinishInputs)."""
    cancelled: bool = False
    cleared: bool = False
    unfinished: int = 0
    """Inputs without their output yet."""
    changed: Pulse = field(default_factory=Pulse)
    data_out: DataStream = field(init=False)
    data_in: DataStream = field(init=False)

    def __post_init__(self) -> None:
        self.data_out = DataStream(self.changed)
        self.data_in = DataStream(self.changed)

    def add(self, inp: Input) -> None:
        self.inputs[inp.input_id] = inp
        self.unfinished += 1

    def reopen(self, inp: Input) -> None:
        """A finished input runs again (the caller retries it)."""
        if inp.done:
            inp.done = False
            self.unfinished += 1

    @property
    def num_inputs(self) -> int:
        return self.declared_inputs if self.declared_inputs is not None else len(self.inputs)

    @property
    def finished(self) -> bool:
        return self.unfinished == 0 and (self.declared_inputs is None or len(self.outputs) >= self.num_inputs)

    def record(self, inp: Input, result: Result, now: float) -> Output:
        """End `inp` with `result` (once); wakes whoever waits on the call."""
        inp.done = True
        self.unfinished -= 1
        output = Output(
            entry=len(self.outputs) + 1, idx=inp.idx, input_id=inp.input_id, result=result,
            task_id=inp.task_id, started_at=inp.started_at, finished_at=now,
        )
        self.outputs.append(output)
        self.changed.fire()
        return output

    def outputs_after(self, entry: int) -> list[Output]:
        return self.outputs[entry:]

    def outputs_between(self, start: int, end: int) -> list[Output]:
        return [o for o in self.outputs if start <= o.idx <= end]
