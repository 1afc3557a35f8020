"""`harvest import`: read a live environment and write the environment file that adopts it.

Volumes with their version (protected, the default), secrets with their key names as `from_env`
entries (values are never read), and, of the app's functions, the scheduled ones with their
schedule, timezone, retries, timeout, volumes and secrets. What a file cannot say (the code a
function runs, images, functions without a schedule) is listed in comments at the top of the file
and on stderr. `harvest plan` of the file then shows every object as `<= import` (adopted).

`import_text` is pure (live facts in, YAML text out); `run_import` reads Modal and writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from harvest_iac.errors import HarvestError, SpecError, printable
from harvest_iac.live import LiveFunction, LiveSecret, LiveVolume
from harvest_iac.naming import RESERVED_NAMES
from harvest_iac.spec.fields import MAX_RETRIES, MAX_TIMEOUT_S
from harvest_iac.spec.names import is_env_var_name, object_name_problem
from harvest_iac.spec.units import format_duration

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}
_CRON = re.compile(r"^Cron\('(?P<schedule>[^']*)', (?P<tz>[^)]+)\)$")
_PERIOD = re.compile(r"^Period\(seconds=(?P<seconds>[0-9.]+)\)$")


@dataclass(frozen=True)
class Found:
    """What import read from one environment."""

    environment: str
    app: str
    app_deployed: bool
    volumes: Mapping[str, LiveVolume] = field(default_factory=dict)
    secrets: Mapping[str, LiveSecret] = field(default_factory=dict)
    functions: Mapping[str, LiveFunction] = field(default_factory=dict)


def _key(name: str) -> str:
    return name if _PLAIN_KEY.match(name) and name.lower() not in _YAML_WORDS else json.dumps(name)


def _text(value: str) -> str:
    return json.dumps(value)


def _name_problem(kind: str, name: str) -> str | None:
    if name in RESERVED_NAMES:
        return f"{kind} {name}: the name is reserved by harvest"
    problem = object_name_problem(name, kind)
    return f"{kind} {name}: {problem}" if problem else None


def _volumes(found: Found, left_out: list[str]) -> list[str]:
    lines = []
    for name, vol in sorted(found.volumes.items()):
        problem = _name_problem("volume", name)
        if problem:
            left_out.append(problem)
            continue
        lines.append(f"  {_key(name)}:")
        lines.append(f"    version: {vol.version}")
    return ["volumes:  # protected (the default): apply never deletes them", *lines] if lines else []


def _secrets(found: Found, left_out: list[str]) -> list[str]:
    lines = []
    for name, sec in sorted(found.secrets.items()):
        problem = _name_problem("secret", name)
        bad = [k for k in sec.keys if not is_env_var_name(k)]
        if problem or bad or not sec.keys:
            left_out.append(problem or (f"secret {name}: key names {', '.join(map(_text, bad))} cannot be "
                                        "environment variables" if bad else f"secret {name}: it has no keys"))
            continue
        lines.append(f"  {_key(name)}:")
        lines.append(f"    from_env: [{', '.join(_key(k) for k in sec.keys)}]")
    if not lines:
        return []
    return ["secrets:  # values are read from these environment variables when apply runs",
            "  # (export them, or use `from_dotenv: FILE`); they are never read from Modal", *lines]


def _schedule(fn: LiveFunction) -> list[str] | None:
    """`schedule:` + `timezone:`, or `every:`; None when the schedule cannot be written."""
    cron = _CRON.match(fn.schedule or "")
    if cron is not None:
        return [f"    schedule: {_text(cron['schedule'])}", f"    timezone: {_text(cron['tz'])}"]
    period = _PERIOD.match(fn.schedule or "")
    if period is not None and float(period["seconds"]) >= 1:
        return [f"    every: {format_duration(float(period['seconds']))}"]
    return None


def _crons(found: Found, left_out: list[str]) -> list[str]:
    lines: list[str] = []
    for name, fn in sorted(found.functions.items()):
        if fn.schedule is None:
            left_out.append(f"function {name}: it has no schedule; harvest deploys crons and sandbox "
                            f"profiles only, so apply would remove it from app {found.app}")
            continue
        schedule = _schedule(fn)
        problem = _name_problem("cron", name) or (None if schedule else
                                                  f"cron {name}: schedule {fn.schedule} cannot be written")
        if problem:
            left_out.append(problem)
            continue
        lines.append(f"  {_key(name)}:")
        lines.extend(schedule or [])
        if fn.max_retries is not None and 0 <= fn.max_retries <= MAX_RETRIES:
            lines.append(f"    retries: {fn.max_retries}")
        if 1 <= fn.timeout <= MAX_TIMEOUT_S:
            lines.append(f"    timeout: {format_duration(fn.timeout)}")
        mounts = {p: v for p, v in sorted(fn.volumes.items()) if v in found.volumes}
        if mounts:
            lines.append("    volumes: {" + ", ".join(f"{_text(p)}: {_key(v)}" for p, v in mounts.items()) + "}")
        secrets = [s for s in fn.secrets if s in found.secrets]
        if secrets:
            lines.append(f"    secrets: [{', '.join(_key(s) for s in secrets)}]")
        left_out.extend(_cron_gaps(name, fn, found, mounts, secrets))
        lines.append(f"    # TODO: the code cron {name} runs cannot be read back from Modal: replace this command")
        lines.append(f"    command: [sh, -c, {_text(f'echo {name}: set its command in the YAML >&2; exit 1')}]")
    return ["crons:", *lines] if lines else []


def _cron_gaps(name: str, fn: LiveFunction, found: Found, mounts: Mapping[str, str],
               secrets: list[str]) -> list[str]:
    gaps = [f"cron {name}: the code it runs cannot be read back from Modal; replace its `command`"]
    if fn.image_id:
        gaps.append(f"cron {name}: image {fn.image_id} cannot be read back; declare it under `images:` and "
                    "set `image:` (until then it runs Modal's default image)")
    gaps += [f"cron {name}: volume {v} at {p} is not a volume of this environment"
             for p, v in sorted(fn.volumes.items()) if p not in mounts]
    gaps += [f"cron {name}: secret {s} is not a secret of this environment"
             for s in fn.secrets if s not in secrets]
    if fn.cpu is not None or fn.memory_mib is not None:
        gaps.append(f"cron {name}: its cpu and memory settings cannot be written for a cron (Modal's "
                    "defaults apply after apply)")
    return gaps


def import_text(found: Found, command: str, target: str) -> tuple[str, list[str]]:
    """The environment file adopting `found`, and what it cannot express (also in its comments)."""
    left_out: list[str] = []
    sections = [s for s in (_volumes(found, left_out), _secrets(found, left_out), _crons(found, left_out)) if s]
    lines = [f"# Written by `{command}` from target {target}.",
             "# Review it, then `harvest plan` it: every object below shows as `<= import` (adopted).",
             "#"]
    if left_out:
        lines.append("# harvest cannot express (left out, or to complete by hand):")
        lines.extend(f"#   - {printable(item)}" for item in left_out)
        lines.append("#")
    if found.app_deployed:
        lines.append(f"# `harvest apply` redeploys app {found.app} from harvest's templates: its functions "
                     "then run what this file says.")
    else:
        lines.append(f"# No app {found.app} is deployed here: harvest deploys its crons and sandbox profiles "
                     "as this app.")
    lines += ["harvest: 1", f"environment: {_key(found.environment)}", f"app: {_key(found.app)}"]
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n", left_out


def _read(session: object, environment: str, app: str | None) -> Found:
    from harvest_iac import modal_backend as mb

    async def apps_and_functions(conn: mb.Connection) -> tuple[list[str], str, list[str]]:
        apps = await mb.deployed_apps(conn, environment)
        if app is not None:
            chosen = app
        elif len(apps) > 1:
            raise HarvestError(f"environment {environment!r} has {len(apps)} deployed apps ({', '.join(apps)}); "
                               "name the one to import with --app")
        else:
            chosen = apps[0] if apps else environment
        return apps, chosen, await mb.app_function_names(conn, environment, chosen)

    apps, chosen, functions = session.with_connection(apps_and_functions)  # type: ignore[attr-defined]
    live = session.read(mb.ReadRequest(environment, chosen, function_names=tuple(functions)))  # type: ignore[attr-defined]
    if not live.environment_exists:
        raise HarvestError(f"environment {environment!r} does not exist in this target; `modal environment "
                           "list` shows the ones that do")
    return Found(environment, chosen, chosen in apps, live.volumes, live.secrets,
                 live.app.functions if live.app is not None else {})


def _checked(text: str) -> None:
    """The written file must load: a file import writes and harvest refuses would be a bug."""
    import tempfile

    from harvest_iac.loader import load_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_file(path)
        except SpecError as exc:
            raise HarvestError(f"internal: the imported file does not validate:\n{exc}") from exc


def run_import(environment: str, app: str | None, out: str | None, target_flag: str | None) -> int:
    from harvest_iac.modal_backend import Session
    from harvest_iac.spec.names import environment_name_problem
    from harvest_iac.targets import resolve_target

    problem = environment_name_problem(environment) or (object_name_problem(app, "app") if app else None)
    if problem:
        raise HarvestError(printable(problem))
    choice = resolve_target(target_flag)
    if choice.notice:
        click.echo(choice.notice, err=True)
    with Session(choice, Path.cwd()) as session:
        found = _read(session, environment, app)
    command = f"harvest import --environment {environment}" + (f" --app {app}" if app else "")
    text, left_out = import_text(found, command, choice.name)
    _checked(text)
    for item in left_out:
        click.echo(printable(f"harvest cannot express: {item}"), err=True)
    if out is None:
        click.echo(text, nl=False)
        return 0
    target = Path(out)
    if target.exists():
        if target.read_text(encoding="utf-8", errors="replace") == text:
            click.echo(printable(f"{target} is unchanged"), err=True)
            return 0
        raise HarvestError(printable(f"{target} exists and differs from what import writes; write to another "
                                     "file (-o) or delete it first"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    click.echo(printable(f"Wrote {target}; review it, then run `harvest plan {target}`"), err=True)
    return 0
