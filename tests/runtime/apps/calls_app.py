"""A Modal app the runtime tests deploy to the local Modal, as a user would."""

import os
import time

import modal

app = modal.App("rt-calls")
notes = modal.Dict.from_name("rt-notes", create_if_missing=True)
data = modal.Volume.from_name("rt-data", create_if_missing=True)


def _task() -> str:
    return os.environ["MODAL_TASK_ID"]


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.function()
def add(a: int, b: int) -> int:
    return a + b


@app.function()
def whoami() -> dict:
    return {"pid": os.getpid(), "task": _task()}


def _check_positive(x: int) -> None:
    if x < 0:
        raise ValueError(f"negative input: {x}")


@app.function()
def checked(x: int) -> int:
    _check_positive(x)
    return x


@app.function()
def countdown(n: int):
    for i in range(n, 0, -1):
        yield i


@app.function(timeout=2)
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function()
def nap(seconds: float, key: str = "") -> float:
    if key:
        notes[key] = "started"
    time.sleep(seconds)
    return seconds


@app.function(retries=modal.Retries(max_retries=2, backoff_coefficient=2.0, initial_delay=1.0))
def flaky(key: str, failures: int) -> int:
    """Fails its first `failures` attempts; notes when each attempt started."""
    attempts = notes.get(key, []) + [time.time()]
    notes[key] = attempts
    if len(attempts) <= failures:
        raise RuntimeError(f"attempt {len(attempts)} fails")
    return len(attempts)


@app.function(scaledown_window=2)
def short_lived() -> str:
    return _task()


@app.function(max_containers=1)
@modal.concurrent(max_inputs=3)
def overlapping(seconds: float) -> tuple:
    start = time.time()
    time.sleep(seconds)
    return _task(), start, time.time()


@app.function(min_containers=1)
def always_warm() -> str:
    return _task()


@app.function()
def echo(data: bytes) -> bytes:
    return data


@app.function(volumes={"/data": data})
def use_volume(name: str, text: str) -> str:
    """Read a file someone put in the volume; write one back and commit it."""
    folder = os.path.join(os.environ.get("HARVEST_CONTAINER_ROOT", "/"), "data")
    data.reload()
    with open(os.path.join(folder, name)) as f:
        seen = f.read()
    with open(os.path.join(folder, "out-" + name), "w") as f:
        f.write(text)
    data.commit()
    return seen
