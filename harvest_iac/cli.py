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
from harvest_iac.errors import HarvestError, SpecError, printable

F = TypeVar("F", bound=Callable[..., Any])


def _report(exc: HarvestError) -> None:
    text = str(exc) if isinstance(exc, SpecError) else "Error: " + printable(str(exc), keep="\n")
    click.echo(text, err=True)
    if isinstance(exc, SpecError) and os.environ.get("GITHUB_ACTIONS") == "true":
        for p in exc.problems:
            file = _annotation_escape(p.file).replace(":", "%3A").replace(",", "%2C")
            click.echo(f"::error file={file},line={p.line},col={p.col}::"
                       f"{_annotation_escape(printable(p.message))}")


def _annotation_escape(text: str) -> str:
    """GitHub's escaping of a workflow command's data."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


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
        click.echo(printable(f"{report.path}: OK, {report.summary()}"))


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
    click.echo(printable(f"Wrote {target}"))


# -- plan -------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="Save the plan (JSON, no secret values) for `harvest apply PLAN`.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there are no changes, 2 when there are, 1 on error.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default=None,
              help="text (default), json, or markdown for PR comments / $GITHUB_STEP_SUMMARY.")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None,
              help="modal (your workspace) or local (the embedded local Modal). "
                   "Default: $HARVEST_TARGET, else modal when credentials exist, else local.")
@click.option("--color/--no-color", default=None, help="Colour the text output (default: on a TTY).")
@click.option("--comment", is_flag=True,
              help="On GitHub Actions, create or update this pull request's one plan comment "
                   "(needs GITHUB_TOKEN).")
@handles_errors
def plan(paths: tuple[str, ...], out: str | None, detailed_exitcode: bool, as_json: bool,
         fmt: str | None, target: str | None, color: bool | None, comment: bool) -> None:
    """Show what apply would change: read live Modal state and diff it against the YAML.

    PATHS are environment files or folders (default: environments/). On GitHub Actions the
    plan also goes to the step summary and the step outputs (has_changes, add, change, destroy,
    drift, summary).
    """
    from harvest_iac.planner import run_plan

    sys.exit(run_plan(paths, out=out, detailed_exitcode=detailed_exitcode,
                      fmt="json" if as_json else (fmt or "text"), target_flag=target, color=color,
                      comment=comment))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--issue", is_flag=True,
              help="On GitHub Actions, keep one open issue per drifted environment, closed once "
                   "it matches again (needs GITHUB_TOKEN).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True)
@click.option("--target", type=click.Choice(["modal", "local"]), default=None,
              help="modal or local (see `harvest plan --help`).")
@click.option("--color/--no-color", default=None, help="Colour the text output (default: on a TTY).")
@handles_errors
def drift(paths: tuple[str, ...], issue: bool, fmt: str, target: str | None,
          color: bool | None) -> None:
    """Report whether live Modal still matches the YAML (for a schedule): exit 0 when it does,
    2 when it does not, 1 on error. Changes nothing in Modal.

    PATHS are environment files or folders (default: environments/).
    """
    from harvest_iac.planner import run_drift

    sys.exit(run_drift(paths, fmt=fmt, target_flag=target, color=color, issue=issue))


# -- apply -------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--auto-approve", is_flag=True,
              help="Apply without asking (required when not run from a terminal, e.g. in CI).")
@click.option("--allow-destroy", "allow_destroy", multiple=True, metavar="ADDR",
              help="Allow deleting (or replacing) this resource, e.g. volume.scratch. Repeatable. "
                   "Protected volumes are never deleted.")
@click.option("--lock-timeout", default="0s", show_default=True, metavar="DURATION",
              help="How long to wait for another apply's lock (e.g. 30s, 10m).")
@click.option("--reviewed", type=click.Path(dir_okay=False), default=None, metavar="PLAN",
              help="The plan file reviewed in the pull request (`harvest plan -o plan.json`): "
                   "refuse unless apply makes exactly its changes for every environment applied.")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None,
              help="modal or local (see `harvest plan --help`).")
@handles_errors
def apply(paths: tuple[str, ...], auto_approve: bool, allow_destroy: tuple[str, ...],
          lock_timeout: str, reviewed: str | None, target: str | None) -> None:
    """Make Modal match the YAML: volumes, secrets, the app deploy, snapshots.

    PATHS are environment files or folders (default: environments/), or one saved plan file
    (`harvest plan -o plan.json`), which is refused if live state moved since it was made.

    With --reviewed PLAN (the merge job of CI), apply plans from the YAML as usual and
    refuses, changing nothing, unless that plan makes the same changes (actions per address,
    what each resource becomes, secret values by hash) as PLAN shows for the environment; an
    environment PLAN does not cover is refused. Live state may have moved since PLAN was made.
    """
    from harvest_iac.apply import ApplyOptions, run_apply
    from harvest_iac.errors import HarvestError
    from harvest_iac.spec.units import UnitError, parse_duration

    try:
        timeout = float(parse_duration(lock_timeout))
    except UnitError as exc:
        raise HarvestError(f"--lock-timeout: {exc}") from exc
    opts = ApplyOptions(auto_approve=auto_approve, allow_destroy=frozenset(allow_destroy),
                        lock_timeout=timeout, interactive=sys.stdin.isatty() and sys.stdout.isatty(),
                        reviewed=reviewed)
    sys.exit(run_apply(paths, opts, target))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--yes", is_flag=True, help="Free the lock without asking (needed off a terminal).")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None)
@handles_errors
def unlock(paths: tuple[str, ...], yes: bool, target: str | None) -> None:
    """Free the lock left by an apply that died (shows who holds it, and asks first).

    Without a terminal (CI, scripts) it frees nothing unless --yes is given.
    """
    from harvest_iac.apply import run_unlock

    sys.exit(run_unlock(paths, target, yes=yes, interactive=sys.stdin.isatty()))


# -- lifecycle: import, rollback, destroy, state --------------------------------------------
_TARGET_HELP = "modal or local (see `harvest plan --help`)."


@cli.command("import")
@click.option("--environment", "environment", required=True, metavar="ENV",
              help="The Modal environment to read.")
@click.option("--app", default=None, metavar="APP",
              help="The app whose scheduled functions become crons (default: the environment's only app).")
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="Write the file here (default: print it). An existing file that differs is refused.")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None, help=_TARGET_HELP)
@handles_errors
def import_(environment: str, app: str | None, out: str | None, target: str | None) -> None:
    """Write the environment file of a live environment made by hand: its volumes, secrets (key
    names; values are never read) and the app's scheduled functions. What a file cannot say is
    listed in comments at its top and on stderr. `harvest plan` of it shows only imports.
    """
    from harvest_iac.importer import run_import

    sys.exit(run_import(environment, app, out, target))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--to", "to", type=int, default=None, metavar="VERSION",
              help="The version to serve again (default: the previous harvest deployment).")
@click.option("--auto-approve", is_flag=True,
              help="Roll back without asking (required when not run from a terminal).")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None, help=_TARGET_HELP)
@handles_errors
def rollback(paths: tuple[str, ...], to: int | None, auto_approve: bool, target: str | None) -> None:
    """Serve an earlier deployment of the environment's app again (Modal's app rollback), and record
    it. `harvest plan` then shows the YAML's difference from what runs as drift.

    PATH is one environment file (or a folder holding one).
    """
    from harvest_iac.rollback import run_rollback

    sys.exit(run_rollback(paths, to=to, auto_approve=auto_approve, interactive=_interactive(),
                          target_flag=target))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--auto-approve", is_flag=True,
              help="Destroy without asking for the environment's name (required when not run from a terminal).")
@click.option("--target", type=click.Choice(["modal", "local"]), default=None, help=_TARGET_HELP)
@handles_errors
def destroy(paths: tuple[str, ...], auto_approve: bool, target: str | None) -> None:
    """Delete everything harvest manages in one environment, in reverse order: stop the app, delete
    snapshot images, secrets, unprotected volumes, then the state record. Protected volumes and
    objects harvest does not manage are never touched. A run killed midway is finished by the next.

    PATH is one environment file (or a folder holding one).
    """
    from harvest_iac.destroy import run_destroy

    sys.exit(run_destroy(paths, auto_approve=auto_approve, interactive=_interactive(), target_flag=target))


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@cli.group()
def state() -> None:
    """What harvest manages, from its state record (secret values are never in it)."""


@state.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--target", type=click.Choice(["modal", "local"]), default=None, help=_TARGET_HELP)
@handles_errors
def state_list(paths: tuple[str, ...], target: str | None) -> None:
    """List the addresses harvest manages in each environment under PATHS (default: environments/)."""
    from harvest_iac.state_view import run_state

    sys.exit(run_state(paths, target, None))


@state.command("show")
@click.argument("address")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--target", type=click.Choice(["modal", "local"]), default=None, help=_TARGET_HELP)
@handles_errors
def state_show(address: str, paths: tuple[str, ...], target: str | None) -> None:
    """Show the record of ADDRESS (e.g. volume.agent-state) as JSON; a secret's hash is shown by its
    method only."""
    from harvest_iac.state_view import run_state

    sys.exit(run_state(paths, target, address))


# -- ci ------------------------------------------------------------------------------------
@cli.group()
def ci() -> None:
    """Continuous integration: the GitHub Actions workflows for harvest."""


@ci.command("init")
@click.option("--dir", "directory", default=".github/workflows", show_default=True,
              type=click.Path(file_okay=False), help="Where to write the workflows.")
@click.option("--force", is_flag=True, help="Overwrite workflow files that differ.")
@click.option("--branch", default="main", show_default=True,
              help="The default branch: a push to it applies.")
@click.option("--install", default=f"harvest-iac=={__version__}", show_default=True,
              metavar="SPEC", help="What the jobs `pip install` (e.g. `.` for this repository).")
@handles_errors
def ci_init(directory: str, force: bool, branch: str, install: str) -> None:
    """Write three workflows: plan (pull requests: validate, plan, comment, upload plan.json),
    apply (push to the default branch, one job per environment file under environments/) and
    drift (every 6 hours: `harvest drift --issue`).

    The jobs read MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and every `from_env` variable of the
    environment files from repository secrets of the same names.
    """
    from pathlib import Path

    from harvest_iac.ci import ENVIRONMENTS_DIR, render_workflows, settings_from, write_workflows
    from harvest_iac.planner import load_environments

    settings, warnings = settings_from(load_environments((ENVIRONMENTS_DIR,)),
                                       branch=branch, install=install)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    for line in write_workflows(render_workflows(settings), Path(directory), force=force):
        click.echo(line)
    click.echo("Add these repository secrets: " + ", ".join(settings.variables))


# -- render ------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Write DIR/<environment>/<module>.py instead of printing (what apply deploys).")
@handles_errors
def render(paths: tuple[str, ...], out_dir: str | None) -> None:
    """Show the Modal app module apply would deploy, generated from the YAML (no Modal access).

    PATHS are environment files or folders (default: environments/). Without -o, prints the
    module of the one environment given; with -o DIR, writes one module per environment.
    """
    from harvest_iac.loader import load_paths
    from harvest_iac.render import render_app, write_rendered

    loaded = load_paths(list(paths) or ["environments"])
    if out_dir is None:
        if len(loaded) != 1:
            found = ", ".join(str(item.path) for item in loaded) or "none"
            raise HarvestError(f"render prints one environment; name one file (found: {found}) "
                               "or write them all with -o DIR")
        click.echo(render_app(loaded[0].spec).code, nl=False)
        return
    from pathlib import Path

    for item in loaded:
        rendered = render_app(item.spec)
        target = write_rendered(rendered, Path(out_dir) / item.spec.environment)
        click.echo(printable(f"Wrote {target} ({rendered.code_hash})"))


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
@click.option("-v", "--verbose", is_flag=True,
              help="Log every call: method, status and duration (never headers or contents).")
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


@emulator.command("trigger")
@click.argument("app")
@click.argument("function")
@click.option("--env", "environment", default="", help="The Modal environment (default: the default one).")
@click.option(
    "--data-dir",
    default=".harvest/local",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The local Modal's state, when no `harvest emulator serve` is running (MODAL_SERVER_URL unset).",
)
@handles_errors
def emulator_trigger(app: str, function: str, environment: str, data_dir: str) -> None:
    """Run a scheduled FUNCTION of APP now, as its next tick would (the dashboard's "Run now"),
    and wait for it to finish."""
    from harvest_iac.emulator.cli import trigger

    trigger(app=app, function=function, environment=environment, data_dir=data_dir)


def main() -> None:
    cli(prog_name="harvest")


if __name__ == "__main__":
    main()
