"""Where harvest's inputs are: environment files under the paths a user gives, and the
templates folder. Light (no pydantic, no jinja) so the prepared-input cache can use it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from harvest_iac.errors import HarvestError

YAML_SUFFIXES = (".yaml", ".yml")
APP_TEMPLATE = "app.py.j2"


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files as given, and each folder's *.yaml / *.yml files (not recursive), without repeats."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        try:
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
                if not found:
                    raise HarvestError(f"{path}: no *.yaml or *.yml files in this folder")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise HarvestError(f"{path}: no such file or folder")
        except OSError as exc:
            raise HarvestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def templates_dir() -> Path:
    """`$HARVEST_TEMPLATES_DIR` if set, else the templates harvest ships (`shipped_templates`)."""
    override = os.environ.get("HARVEST_TEMPLATES_DIR")
    if override:
        return Path(override)
    return shipped_templates()


def shipped_templates() -> Path:
    """The repository's `templates/` (a source checkout or an editable install), else the copy
    a wheel installs under `<prefix>/share/harvest-iac/`."""
    source = Path(__file__).resolve().parent.parent / "templates"
    if (source / APP_TEMPLATE).exists():
        return source
    for prefix in (sys.prefix, sys.base_prefix):
        installed = Path(prefix) / "share" / "harvest-iac" / "templates"
        if (installed / APP_TEMPLATE).exists():
            return installed
    return source


def project_path(path: str) -> str:
    """A local path as generated code and the state record name it: relative to the project
    folder (where harvest runs, and where apply runs `modal deploy`) when it lies inside it, so
    the code, its hash and the record are the same on every machine; else as given. A folder's
    trailing `/` is kept."""
    if not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, os.getcwd())
    if rel.startswith(".."):
        return path
    return rel + "/" if path.endswith("/") and not rel.endswith("/") else rel
