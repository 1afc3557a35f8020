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


# -- validate / schema ------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@handles_errors
def validate(paths: tuple[str, ...]) -> None:
    """Check environment files without touching Modal: every problem as FILE:LINE:COL.

    PATHS are files or folders of *.yaml / *.yml (default: environments/). Exit 0 when all
    are valid, 1 otherwise. With GITHUB_ACTIONS=true, problems are also annotations.
    """
    from harvest_iac.loader import check_paths

    for report in check_paths(list(paths) or ["environments"]):
        click.echo(f"{report.path}: OK, {report.summary()}")


@cli.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@handles_errors
def schema(out: str | None) -> None:
    """Print the JSON Schema of the environment file format (for editor autocompletion).

    Save it (e.g. `harvest schema -o .harvest/schema.json`) and start a YAML file with
    `# yaml-language-server: $schema=../.harvest/schema.json`.
    """
    from harvest_iac.spec.schema import schema_json

    text = schema_json()
    if out is None:
        click.echo(text)
        return
    from pathlib import Path

    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")
    click.echo(f"Wrote {target}")


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
