"""A Modal app with a 2-second period, deployed by the runtime tests."""

import time

import modal

app = modal.App("rt-ticks")
ticks = modal.Dict.from_name("rt-ticks", create_if_missing=True)


@app.function(schedule=modal.Period(seconds=2))
def tick() -> None:
    ticks[f"tick-{time.time()}"] = "period"
