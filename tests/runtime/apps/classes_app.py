"""A Modal app with classes, deployed by the runtime tests."""

import os
import time

import modal

app = modal.App("rt-classes")
notes = modal.Dict.from_name("rt-class-notes", create_if_missing=True)


@app.cls(scaledown_window=2)
class Counter:
    start: int = modal.parameter(default=0)
    label: str = modal.parameter(default="")

    @modal.enter()
    def open(self) -> None:
        self.value = self.start
        self.task = os.environ["MODAL_TASK_ID"]

    @modal.method()
    def bump(self, by: int = 1) -> int:
        self.value += by
        return self.value

    @modal.method()
    def whoami(self) -> str:
        return self.task

    @modal.method()
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @modal.method()
    def countdown(self, n: int):
        yield from range(n, 0, -1)

    @modal.exit()
    def close(self) -> None:
        if self.label:
            notes[self.label] = self.value


@app.cls()
class Broken:
    @modal.enter()
    def open(self) -> None:
        raise RuntimeError("enter failed")

    @modal.method()
    def run(self) -> int:
        return 1
