"""Two functions of one environment, each noting when it started and ended (for the tests of
`max_concurrent_tasks`, budgets and metering)."""

import time

import modal

app = modal.App("rt-limits")
notes = modal.Dict.from_name("rt-limit-notes", create_if_missing=True)


def _run(key: str, seconds: float) -> str:
    notes[f"{key}-start"] = time.time()
    time.sleep(seconds)
    notes[f"{key}-end"] = time.time()
    return key


@app.function(cpu=0.5, memory=512, scaledown_window=2)
def first(key: str, seconds: float) -> str:
    return _run(key, seconds)


@app.function(cpu=0.5, memory=512, scaledown_window=2)
def second(key: str, seconds: float) -> str:
    return _run(key, seconds)
