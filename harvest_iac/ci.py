"""`harvest ci init`: the three GitHub Actions workflows (plan on pull requests, apply on merge,
drift on a schedule), rendered from `templates/github/*.yml.j2`.

Rendering is deterministic (sorted environments and variables, pinned actions), so the files
are golden-tested and linted with actionlint and zizmor. Writing never replaces a file that
differs unless forced, and checks every file before writing any.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvest_iac import __version__
from harvest_iac.errors import HarvestError
from harvest_iac.paths import shipped_templates

ENVIRONMENTS_DIR = "environments"
WORKFLOWS = ("harvest-plan.yml", "harvest-apply.yml", "harvest-drift.yml")
#: The artifact holding the plan a pull request's plan job saved: what the apply job applies.
PLAN_ARTIFACT = "harvest-plan"
DRIFT_SCHEDULE = "23 */6 * * *"  # every 6 hours, off the top of the hour
#: What every job takes from repository secrets, beside the secrets' own variables:
#: the Modal token, and the key of the secret hashes in the state record.
BASE_VARIABLES = ("HARVEST_STATE_KEY", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")


@dataclass(frozen=True)
class Pin:
    """An action pinned to a full commit, with the release it is."""

    sha: str
    version: str


#: The actions the workflows use, each at the commit of a release.
PINS = {
    "checkout": Pin("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "setup_python": Pin("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "upload_artifact": Pin("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
}


@dataclass(frozen=True)
class EnvironmentFile:
    name: str
    file: str


@dataclass(frozen=True)
class Settings:
    """Everything the workflows depend on."""

    environments: tuple[EnvironmentFile, ...]
    variables: tuple[str, ...]  # environment variables the jobs take from repository secrets
    branch: str = "main"
    install: str = f"harvest-iac=={__version__}"
    python: str = "3.11"
    lock_timeout: str = "10m"
    watched: tuple[str, ...] = (f"{ENVIRONMENTS_DIR}/**", "templates/**")


def settings_from(loaded: Sequence[Any], *, branch: str, install: str) -> tuple[Settings, list[str]]:
    """Settings for the loaded environment files, and warnings for what CI cannot provide."""
    variables = set(BASE_VARIABLES)
    warnings: list[str] = []
    problems: list[str] = []
    for item in loaded:
        for name, secret in sorted(item.spec.secrets.items()):
            if secret.from_dotenv is not None:
                warnings.append(f"{item.path}: secret {name!r} reads a dotenv file, which CI "
                                "does not have: use `from_env` for what CI applies")
            for variable in (secret.from_env or {}).values():
                if variable.startswith("GITHUB_"):
                    problems.append(f"{item.path}: secret {name!r} reads {variable}, but GitHub "
                                    "refuses secrets named GITHUB_*: rename the variable")
                variables.add(variable)
    if problems:
        raise HarvestError("\n".join(problems))
    envs = tuple(sorted((EnvironmentFile(i.spec.environment, Path(i.path).as_posix())
                         for i in loaded), key=lambda e: (e.name, e.file)))
    return Settings(envs, tuple(sorted(variables)), branch=branch, install=install), warnings


def render_workflows(settings: Settings) -> dict[str, str]:
    """File name -> text of each workflow."""
    env = _jinja()
    view = {
        "version": __version__,
        "pins": PINS,
        "environments": settings.environments,
        "variables": settings.variables,
        "branch": settings.branch,
        "install": settings.install,
        "python": settings.python,
        "lock_timeout": settings.lock_timeout,
        "watched": settings.watched,
        "environments_dir": ENVIRONMENTS_DIR,
        "schedule": DRIFT_SCHEDULE,
        "plan_workflow": WORKFLOWS[0],
        "plan_artifact": PLAN_ARTIFACT,
    }
    return {name: env.get_template(f"{name}.j2").render(view) for name in WORKFLOWS}


def _jinja() -> Any:
    import jinja2

    # `${{ ... }}` belongs to GitHub: the templates use [= ... =] and [% ... %] instead.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(shipped_templates() / "github")),
        undefined=jinja2.StrictUndefined,
        variable_start_string="[=", variable_end_string="=]",
        block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters["yaml_str"] = json.dumps  # a JSON string is a YAML double-quoted scalar
    env.filters["shell_word"] = shlex.quote
    return env


def write_workflows(files: dict[str, str], directory: Path, *, force: bool) -> list[str]:
    """Write the files; one line per file. Refuses, before writing anything, when a file exists
    with other content and `force` is not given."""
    existing = {name: _read(directory / name) for name in files}
    clashes = [name for name, text in files.items()
               if existing[name] is not None and existing[name] != text]
    if clashes and not force:
        raise HarvestError(
            f"{', '.join(str(directory / n) for n in clashes)} already "
            f"exist{'s' if len(clashes) == 1 else ''} with other content; nothing was written. "
            "Pass --force to overwrite")
    lines = []
    for name, text in files.items():
        path = directory / name
        if existing[name] == text:
            lines.append(f"unchanged {path}")
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise HarvestError(f"{path}: cannot write: {exc.strerror or exc}") from None
        lines.append(f"{'overwrote' if existing[name] is not None else 'created'} {path}")
    return lines


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarvestError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
