"""harvest's verbs. The only place that turns errors into messages and exit codes.

Heavy imports (modal, the emulator, pydantic models) happen inside the verbs that need
them, so `harvest --help`, `validate` and `schema` stay fast and never import modal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from harvest_iac import __version__
from harvest_iac.errors import HarvestError, SpecError

F = TypeVar("F", bound=Callable[..., Any])


def _report(exc: HarvestError) -> None:
    click.echo(f"Error: {exc}" if not isinstance(exc, SpecError) else str(exc), err=True)
    if isinstance(exc, SpecError) and os.environ.get("GITHUB_ACTIONS") == "true":
        for p in exc.problems:
            message = p.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            click.echo(f"::error file={p.file},line={p.line},col={p.col}::{message}")


def handles_errors(fn: F) -> F:
    """Turn HarvestError into a message on stderr and exit code 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarvestError as exc:
            _report(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harvest")
def cli() -> None:
    """harvest: infrastructure as code for Modal.

    Declare images, volumes, secrets, snapshots, sandbox profiles and crons in
    environments/*.yaml; `harvest plan` shows what would change in Modal; `harvest apply`
    makes it so.
    """


# -- the local Modal ----------------------------------------------------------------
@cli.group()
def emulator() -> None:
    """The local Modal: an emulator of Modal's API for the real `modal` client."""


@emulator.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, type=int, help="gRPC port (default: a free one).")
@click.option("--http-port", default=0, type=int, help="Port for file bytes (default: a free one).")
@click.option(
    "--data-dir",
    default=".harvest/emulator",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the state lives (SQLite and file bytes); survives restarts.",
)
@click.option("--latency-ms", type=float, default=None, help="Fault injection: added latency per RPC.")
@click.option("--error-rate", type=float, default=None,
              help="Fault injection: fraction of RPCs failing UNAVAILABLE/INTERNAL.")
@click.option("-v", "--verbose", is_flag=True, help="Log every RPC (method and status only).")
@handles_errors
def emulator_serve(
    host: str,
    port: int,
    http_port: int,
    data_dir: str,
    latency_ms: float | None,
    error_rate: float | None,
    verbose: bool,
) -> None:
    """Run the local Modal in the foreground and print the variables to export."""
    from harvest_iac.emulator.cli import serve

    serve(host=host, port=port, http_port=http_port, data_dir=data_dir,
          latency_ms=latency_ms, error_rate=error_rate, verbose=verbose)


def main() -> None:
    cli(prog_name="harvest")


if __name__ == "__main__":
    main()
