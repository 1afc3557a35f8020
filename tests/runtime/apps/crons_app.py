"""A Modal app with crons that never fire during a test, run by `harvest emulator trigger`."""

import time

import modal

app = modal.App("rt-crons")
runs = modal.Dict.from_name("rt-runs", create_if_missing=True)


@app.function(schedule=modal.Cron("0 0 1 1 *", timezone="Europe/Paris"))
def new_year() -> None:
    runs[f"new-year-{time.time()}"] = "cron"


@app.function(schedule=modal.Cron("0 0 1 1 *"), retries=modal.Retries(max_retries=1, initial_delay=1.0))
def always_fails() -> None:
    runs[f"failed-{time.time()}"] = "attempt"
    raise RuntimeError("this job always fails")


@app.function()
def plain() -> int:
    return 1
