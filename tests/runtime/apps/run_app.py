"""A Modal app run with `modal run` and `app.run()` by the runtime tests."""

import sys

import modal

app = modal.App("rt-run")


@app.function()
def square(x: int) -> int:
    print(f"in the container: squaring {x}")
    print(f"to stderr: {x}", file=sys.stderr)
    if x < 0:
        raise ValueError(f"cannot square {x} here")
    return x * x


@app.local_entrypoint()
def main(n: int = 3) -> None:
    print("local result", square.remote(n), list(square.map(range(n))))


if __name__ == "__main__":
    with modal.enable_output(), app.run():
        print("script result", square.remote(int(sys.argv[1])))
