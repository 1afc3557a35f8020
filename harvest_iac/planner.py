"""`harvest plan` end to end: load files, read secret inputs, read live state, compare.

This is an edge module (it reads the process environment, dotenv files and Modal through
the backend); the decisions are made by the pure `diff.compare`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest_iac.diff import Desired, DiffInput, SecretValues, compare
from harvest_iac.errors import HarvestError, Problem, SpecError
from harvest_iac.estimate import STARTER_PLAN_CRON_LIMIT
from harvest_iac.plan import Plan

if TYPE_CHECKING:
    from harvest_iac.loader import LoadedEnvironment
    from harvest_iac.modal_backend import Session


# -- dotenv ----------------------------------------------------------------------------
def parse_dotenv(text: str, where: str) -> dict[str, str]:
    """KEY=VALUE lines; `export ` prefix, # comments, single or double quotes. Problems name
    the line but never echo a value."""
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise HarvestError(f"{where}:{lineno}: expected KEY=VALUE (the value is not shown)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def read_secret_values(loaded: LoadedEnvironment, environ: Mapping[str, str]
                       ) -> dict[str, SecretValues]:
    """Each declared secret's values from the environment or its dotenv file (in memory only)."""
    out: dict[str, SecretValues] = {}
    base = Path(loaded.path).parent
    for name, sec in loaded.spec.secrets.items():
        if sec.from_dotenv is not None:
            path = _dotenv_path(loaded, name, base, sec.from_dotenv)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                out[name] = SecretValues(None, (str(path),), source=str(path))
                continue
            out[name] = SecretValues(parse_dotenv(text, str(path)), source=str(path))
            continue
        mapping = sec.from_env or {}
        missing = tuple(sorted({var for var in mapping.values() if var not in environ}))
        if missing:
            out[name] = SecretValues(None, missing, source="environment")
        else:
            out[name] = SecretValues({key: environ[var] for key, var in mapping.items()},
                                     source="environment")
    return out


def _dotenv_path(loaded: LoadedEnvironment, name: str, base: Path, rel: str) -> Path:
    locate = getattr(loaded, "dotenv_base", None)
    if callable(locate):
        return Path(locate(name)) / rel
    return base / rel


def missing_secret_problems(loaded: LoadedEnvironment, values: Mapping[str, SecretValues]
                            ) -> list[Problem]:
    """Errors (file:line:col) for every variable or dotenv file that cannot be read."""
    problems = []
    for name, sv in sorted(values.items()):
        if not sv.missing:
            continue
        file, line, col = _locate(loaded, f"secret.{name}")
        what = ", ".join(sv.missing)
        if sv.source == "environment":
            msg = (f"secret {name!r}: environment variable{'s' if len(sv.missing) > 1 else ''} "
                   f"{what} {'are' if len(sv.missing) > 1 else 'is'} not set; export "
                   f"{'them' if len(sv.missing) > 1 else 'it'} (in CI: from your CI secrets) "
                   "and run again")
        else:
            msg = f"secret {name!r}: cannot read dotenv file {what}; create it or fix `from_dotenv`"
        problems.append(Problem(file, line, col, msg))
    return problems


def _locate(loaded: LoadedEnvironment, address: str) -> tuple[str, int, int]:
    try:
        file, line, col = loaded.locate(address)
        return str(file), int(line), int(col)
    except Exception:  # noqa: BLE001 - positions are a nicety; never fail on them
        return str(loaded.path), 1, 1


def with_secret_keys(desired: dict[str, Desired], values: Mapping[str, SecretValues]
                     ) -> dict[str, Desired]:
    """Dotenv secrets: their key names are known only once the file is read."""
    out = dict(desired)
    for name, sv in values.items():
        addr = f"secret.{name}"
        if addr in out and sv.values is not None and "from_dotenv" in out[addr].spec:
            out[addr] = replace(out[addr], spec={**out[addr].spec, "keys": sorted(sv.values)})
    return out


def with_dockerfile_digests(desired: dict[str, Desired], loaded: LoadedEnvironment
                            ) -> dict[str, Desired]:
    """A Dockerfile image changes when its file does: its content digest joins the image's
    spec (Modal rebuilds it; harvest redeploys the app)."""
    import hashlib

    out = dict(desired)
    for name, image in loaded.spec.images.items():
        addr = f"image.{name}"
        if image.path is None or addr not in out:
            continue
        try:
            digest = "sha256:" + hashlib.sha256(Path(image.path).read_bytes()).hexdigest()
        except OSError as exc:
            raise SpecError([loaded.problem(f"{addr}.path", f"cannot read the Dockerfile "
                                            f"{image.path}: {exc.strerror or exc}")]) from exc
        out[addr] = replace(out[addr], spec={**out[addr].spec, "dockerfile_sha256": digest})
    return out


@dataclass(frozen=True)
class Prepared:
    """Everything a plan (and an apply) of one file needs besides live state."""

    loaded: Any
    desired: dict[str, Desired]
    secret_values: dict[str, SecretValues]
    app_digest: str
    spec_digest: str

    @property
    def app_needed(self) -> bool:
        """Something to deploy: a cron or a sandbox profile."""
        spec = self.loaded.spec
        return bool(spec.crons or spec.sandboxes)


def prepare(loaded: LoadedEnvironment, environ: Mapping[str, str]) -> Prepared:
    from harvest_iac.desired import desired_resources, spec_digest
    from harvest_iac.render import app_code_hash

    values = read_secret_values(loaded, environ)
    desired = with_dockerfile_digests(with_secret_keys(desired_resources(loaded.spec), values),
                                      loaded)
    return Prepared(loaded, desired, values, app_code_hash(loaded.spec), spec_digest(loaded.spec))


def cron_limit(environ: Mapping[str, str]) -> int:
    raw = environ.get("HARVEST_CRON_LIMIT")
    if raw is None:
        return STARTER_PLAN_CRON_LIMIT
    try:
        return int(raw)
    except ValueError as exc:
        raise HarvestError(f"HARVEST_CRON_LIMIT must be a whole number, got {raw!r}") from exc


def plan_one(prep: Prepared, session: Session, *, target: str,
             environ: Mapping[str, str] | None = None, now: datetime | None = None) -> Plan:
    from harvest_iac.desired import function_tags
    from harvest_iac.modal_backend import ReadRequest

    env = os.environ if environ is None else environ
    spec = prep.loaded.spec
    live = session.read(ReadRequest(environment=spec.environment, app=spec.app,
                                    function_names=function_tags(spec)))
    inp = DiffInput(
        environment=spec.environment,
        app=spec.app,
        source=str(prep.loaded.path),
        target=target,
        desired=prep.desired,
        app_digest=prep.app_digest,
        secret_values=prep.secret_values,
        now=now or datetime.now(timezone.utc),
        cron_limit=cron_limit(env),
        spec_digest=prep.spec_digest,
        app_needed=prep.app_needed,
    )
    return compare(inp, live)


def check_inputs(preps: list[Prepared]) -> None:
    """For apply: every secret input must be readable before anything changes."""
    problems: list[Problem] = []
    for p in preps:
        problems.extend(missing_secret_problems(p.loaded, p.secret_values))
    if problems:
        raise SpecError(problems)


# -- the `harvest plan` verb -------------------------------------------------------------
def load_environments(paths: tuple[str, ...]) -> list[Any]:
    from harvest_iac.loader import load_paths

    loaded = load_paths([Path(p) for p in (paths or ("environments",))])
    if not loaded:
        raise HarvestError(
            f"no environment files found in {', '.join(paths or ('environments',))}: "
            "write one (see README) or name the file")
    seen: dict[tuple[str, str], str] = {}
    for item in loaded:
        key = (item.spec.environment, item.spec.app)
        if key in seen:
            raise HarvestError(
                f"{item.path} and {seen[key]} both declare app {key[1]!r} in environment "
                f"{key[0]!r}: give each file its own environment or app")
        seen[key] = str(item.path)
    return loaded


def run_plan(paths: tuple[str, ...], *, out: str | None, detailed_exitcode: bool, fmt: str,
             target_flag: str | None, color: bool | None) -> int:
    import click

    from harvest_iac.modal_backend import Session
    from harvest_iac.plan import plan_to_dict
    from harvest_iac.present import render_json, render_markdown, render_text
    from harvest_iac.targets import resolve_target

    loaded = load_environments(paths)
    environ = dict(os.environ)
    preps = [prepare(item, environ) for item in loaded]
    choice = resolve_target(target_flag, environ)
    if choice.notice:
        click.echo(choice.notice, err=True)
    with Session(choice, Path.cwd()) as session:
        plans = [plan_one(p, session, target=choice.name, environ=environ) for p in preps]
    if fmt == "json":
        click.echo(render_json(plans), nl=False)
    elif fmt == "markdown":
        click.echo(render_markdown(plans), nl=False)
    else:
        use_color = color if color is not None else _isatty()
        click.echo(render_text(plans, color=use_color), nl=False)
    if out:
        import json

        doc = {"plans": [plan_to_dict(p) for p in plans]}
        Path(out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        click.echo(f"Saved the plan to {out}; apply it with: harvest apply {out}", err=True)
    changes = any(p.summary.has_changes for p in plans)
    if detailed_exitcode and changes:
        return 2
    return 0


def _isatty() -> bool:
    import sys

    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
