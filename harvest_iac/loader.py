"""Load environment files: YAML -> merged `extends:` chain -> validated, frozen `EnvironmentSpec`.

Every problem is reported as `FILE:LINE:COL: message` (a `Problem`), all problems of all files
at once in one `SpecError`. Pure: no modal import, no network.

A file with an `environment:` key is an environment. A file without one is a *base file*: it
is only read through another file's `extends:` (and, when nothing in the checked set extends
it, checked on its own for shape, without the cross-reference checks).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from harvest_iac.errors import Problem, SpecError
from harvest_iac.paths import expand_paths
from harvest_iac.spec.checks import reference_problems
from harvest_iac.spec.document import MAX_BYTES, Document, Where, decode, parse
from harvest_iac.spec.fields import FORMAT_VERSION, check_format_version
from harvest_iac.spec.messages import display as display_path
from harvest_iac.spec.messages import translate
from harvest_iac.spec.models import KINDS, LIFECYCLE, SECTIONS, EnvironmentSpec

KeyPath = tuple[str | int, ...]
EXTENSION_PREFIX = "x-"
"""Top-level keys starting with `x-` are ignored (a place for YAML anchors, as in Docker Compose)."""
_RELATIVE_PATHS = (("secrets", "from_dotenv"), ("images", "path"))


@dataclass(frozen=True)
class LoadedEnvironment:
    """A validated environment and where each of its parts was written."""

    spec: EnvironmentSpec
    path: Path
    files: tuple[Path, ...]
    """The environment's file, then the files it extends, nearest first."""
    positions: Mapping[KeyPath, Where] = field(repr=False, compare=False)
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    """The merged document as written (before normalisation), for `locate`."""

    def locate(self, address: str) -> tuple[str, int, int]:
        """(file, line, col) of an address such as `volume.agent-state` or `secret.openai.from_env.KEY`.

        Under `from_env`, KEY may also be the environment variable the key is read from.

        An address is `KIND.NAME[.FIELD...]` (kinds: image, volume, secret, snapshot, sandbox,
        cron) or a plain key path (`environment`, `app`). Unknown parts fall back to the
        nearest enclosing thing that is known; an unknown address gives the file's first line.
        """
        where = self.positions.get(self._path(address)) or self.positions.get(())
        if where is None:
            return str(self.path), 1, 1
        line, col = where.key_or_value()
        return where.file, line, col

    def problem(self, address: str, message: str) -> Problem:
        """A Problem pointing at `address`, for errors found after loading (at plan or apply time)."""
        return Problem(*self.locate(address), message)

    def _path(self, address: str) -> KeyPath:
        parts = address.split(".")
        if parts[0] in KINDS:
            section = KINDS[parts[0]]
            names = self._declared(section)
            for end in range(len(parts), 1, -1):  # names may contain dots: longest match first
                name = ".".join(parts[1:end])
                if name in names:
                    return self._descend((section, name), parts[end:])
            return (section,)
        return self._descend((), parts)

    def _declared(self, section: str) -> set[str]:
        return {str(p[1]) for p in self.positions if len(p) == 2 and p[0] == section}

    def _descend(self, start: KeyPath, rest: list[str]) -> KeyPath:
        path = start
        index = 0
        while index < len(rest):
            matched = False
            for end in range(len(rest), index, -1):
                part = ".".join(rest[index:end])
                candidates: list[KeyPath] = [(*path, part)]
                candidates += [p for p in self._children(path) if self._item_text(p) == part]
                hit = next((c for c in candidates if c in self.positions), None)
                if hit is not None:
                    path, index, matched = hit, end, True
                    break
            if not matched:
                break
        return path

    def _children(self, path: KeyPath) -> list[KeyPath]:
        """Paths one level under `path`; a child also matches by its text (a list item, or the
        variable a `from_env` key reads), so `secret.gh.from_env.HARVEST_GITHUB_TOKEN` finds it."""
        return sorted((p for p in self.positions if len(p) == len(path) + 1 and p[:-1] == path), key=str)

    def _item_text(self, path: KeyPath) -> str | None:
        node: Any = self.raw
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node if isinstance(node, str) else None


@dataclass(frozen=True)
class FileReport:
    """What `harvest validate` says about one file."""

    path: Path
    environment: LoadedEnvironment | None
    """None for a base file."""
    extended_by: tuple[Path, ...] = ()

    def summary(self) -> str:
        """A one-line description, e.g. `environment dev (app harvest-agents): 2 images, 1 volume`."""
        if self.environment is None:
            users = ", ".join(p.name for p in self.extended_by)
            return f"base file extended by {users}" if users else "base file (no `environment:`)"
        spec = self.environment.spec
        counts = [f"{len(getattr(spec, s))} {s if len(getattr(spec, s)) != 1 else _singular(s)}"
                  for s in SECTIONS]
        return f"environment {spec.environment}, app {spec.app}: {', '.join(counts)}"


def _singular(section: str) -> str:
    return next(kind for kind, s in KINDS.items() if s == section)


class _Session:
    """One load: parses each file once and collects every problem of every file."""

    def __init__(self) -> None:
        self.documents: dict[Path, Document | None] = {}
        self.problems: list[Problem] = []

    def document(self, path: Path, display: str) -> Document | None:
        key = path.resolve()
        if key not in self.documents:
            self.documents[key] = self._read(path, display)
        return self.documents[key]

    def _read(self, path: Path, display: str) -> Document | None:
        try:
            with path.open("rb") as stream:
                raw = stream.read(MAX_BYTES + 1)  # enough to refuse an oversized file
        except OSError as exc:
            self.problems.append(Problem(display, 1, 1, f"cannot read the file: {exc.strerror or exc}"))
            return None
        try:
            doc = parse(decode(raw, display), display)
        except SpecError as exc:
            self.problems.extend(exc.problems)
            return None
        self._check_header(doc)
        _resolve_relative_paths(doc, path)
        self.problems.extend(_resolve_local_files(doc, path))
        return doc

    def _check_header(self, doc: Document) -> None:
        version = doc.data.get("harvest")
        if "harvest" not in doc.data:
            first = min(doc.positions.values(), key=lambda w: (w.line, w.col), default=None)
            line, col = (first.key_or_value() if first else (1, 1))
            self.problems.append(Problem(doc.file, line, col,
                                         f"missing `harvest: {FORMAT_VERSION}` (the format version) at the top "
                                         "of the file"))
        else:
            try:
                check_format_version(version)
            except PydanticCustomError as exc:
                where = doc.positions[("harvest",)]
                self.problems.append(Problem(doc.file, where.line, where.col, f"harvest: {(exc.context or {})['message']}"))

    def chain(self, path: Path, display: str, stack: tuple[Path, ...]) -> _Merged | None:
        """The file merged over the files it extends, or None when any of them has problems."""
        doc = self.document(path, display)
        if doc is None:
            return None
        data = {k: v for k, v in doc.data.items() if not k.startswith(EXTENSION_PREFIX)}
        own = _Merged(data, dict(doc.positions), (path,))
        extends = own.data.pop("extends", None)
        _sections_null_to_empty(own)
        if extends is None:
            return own
        where = doc.positions[("extends",)]
        if not isinstance(extends, str) or not extends.strip():
            self.problems.append(Problem(doc.file, where.line, where.col,
                                         "extends: expected the path of a base file, relative to this file"))
            return None
        base_path = path.parent / extends
        base_display = os.path.normpath(os.path.join(os.path.dirname(display), extends))
        try:
            resolved, exists = base_path.resolve(), base_path.is_file()
        except (OSError, RuntimeError, ValueError) as exc:
            self.problems.append(Problem(doc.file, where.line, where.col, f"extends: cannot read {extends!r}: {exc}"))
            return None
        if resolved in stack:
            names = " -> ".join([*(p.name for p in stack[stack.index(resolved):]), base_path.name])
            self.problems.append(Problem(doc.file, where.line, where.col, f"extends: cycle {names}"))
            return None
        if not exists:
            self.problems.append(Problem(doc.file, where.line, where.col,
                                         f"extends: file {extends!r} not found (looked for {base_display})"))
            return None
        base = self.chain(base_path, base_display, (*stack, resolved))
        if base is None:
            return None
        return base.overlay(own)


@dataclass
class _Merged:
    data: dict[str, Any]
    positions: dict[KeyPath, Where]
    files: tuple[Path, ...]

    def overlay(self, child: _Merged) -> _Merged:
        """`child` merged over this: maps merge key by key, anything else replaces, null removes."""
        data = _copy(self.data)
        positions = dict(self.positions)
        _merge_into(data, positions, child.data, child.positions, ())
        if () in child.positions:
            positions[()] = child.positions[()]
        return _Merged(data, positions, (*child.files, *self.files))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _subtree(positions: Mapping[KeyPath, Where], prefix: KeyPath) -> dict[KeyPath, Where]:
    size = len(prefix)
    return {p: w for p, w in positions.items() if p[:size] == prefix}


def _merge_into(target: dict[str, Any], positions: dict[KeyPath, Where], child: dict[str, Any],
                child_positions: Mapping[KeyPath, Where], path: KeyPath) -> None:
    for key, value in child.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            positions[here] = child_positions[here]
            _merge_into(target[key], positions, value, child_positions, here)
            continue
        for stale in _subtree(positions, here):
            del positions[stale]
        if value is None and key in target:
            del target[key]
            continue
        target[key] = _copy(value)
        positions.update(_subtree(child_positions, here))


def _sections_null_to_empty(merged: _Merged) -> None:
    """`volumes:` (or `settings:`) with nothing under it is empty; `agent-state:` with nothing is all
    defaults."""
    if "settings" in merged.data and merged.data["settings"] is None:
        merged.data["settings"] = {}
    for section in SECTIONS:
        if section in merged.data and merged.data[section] is None:
            merged.data[section] = {}
        entries = merged.data.get(section)
        if isinstance(entries, dict):
            for name, value in entries.items():
                if value is None:
                    entries[name] = {}


def _resolve_relative_paths(doc: Document, path: Path) -> None:
    """`from_dotenv` and dockerfile `path` are relative to the file that declares them."""
    for section, key in _RELATIVE_PATHS:
        entries = doc.data.get(section)
        if not isinstance(entries, dict):
            continue
        for entry in entries.values():
            if isinstance(entry, dict) and isinstance(entry.get(key), str) and entry[key].strip():
                entry[key] = os.path.normpath(os.path.join(os.path.abspath(path.parent), entry[key]))


def _resolve_local_files(doc: Document, path: Path) -> list[Problem]:
    """An image's `files` are relative to the file that declares them: each becomes an absolute
    path, a folder's ending with `/`; one that does not exist is a problem at its position."""
    problems = []
    images = doc.data.get("images")
    for name, entry in (images.items() if isinstance(images, dict) else ()):
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict):
            continue
        for remote, local in files.items():
            if not isinstance(local, str) or not local.strip():
                continue
            target = os.path.normpath(os.path.join(os.path.abspath(path.parent), local))
            if os.path.isdir(target):
                files[remote] = target.rstrip("/") + "/"
            elif os.path.isfile(target):
                files[remote] = target
            else:
                where = doc.positions[("images", name, "files", remote)]
                problems.append(Problem(doc.file, where.line, where.col,
                                        f"{display_path(('images', name, 'files', remote))}: {local!r} is not a "
                                        f"file or folder (looked for {target}); paths are relative to this file"))
    return problems


def _positioned(positions: Mapping[KeyPath, Where], path: KeyPath, at_key: bool,
                fallback: str) -> tuple[str, int, int]:
    """The position of `path`, or of its nearest enclosing key when it is not in the files."""
    while path not in positions and path:
        path, at_key = path[:-1], True
    where = positions.get(path)
    if where is None:
        return fallback, 1, 1
    line, col = where.key_or_value() if at_key else (where.line, where.col)
    return where.file, line, col


_PLACEHOLDER: dict[str, Any] = {"harvest": FORMAT_VERSION, "environment": "placeholder", "app": "placeholder"}


def _errors(data: dict[str, Any], merged: _Merged, display: str) -> tuple[EnvironmentSpec | None, list[Problem]]:
    from pydantic import ValidationError

    try:
        return EnvironmentSpec.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            if error["type"] == "missing" and tuple(error["loc"]) == ("harvest",):
                continue  # reported for each file by the header check
            path, at_key, message = translate(dict(error), data)
            problems.append(Problem(*_positioned(merged.positions, path, at_key, display), message))
        return None, problems


def _validate(merged: _Merged, display: str, *, base_only: bool) -> tuple[EnvironmentSpec | None, list[Problem]]:
    """Validate the merged document. When some entries are invalid, each entry is validated on its
    own, so every shape problem is found, and references are checked among the valid entries."""
    data = merged.data if not base_only else {"environment": "base", "app": "base", **merged.data}
    spec, problems = _errors(data, merged, display)
    if spec is not None:
        return _with_references(spec, None, merged, display, [], base_only)
    partial, entry_problems = _validate_by_entry(data, merged, display)
    problems = entry_problems or problems
    declared = {s: set(data[s]) if isinstance(data.get(s), dict) else set() for s in SECTIONS}
    return None, _with_references(partial, declared, merged, display, problems, base_only)[1]


def _with_references(spec: EnvironmentSpec, declared: dict[str, set[str]] | None, merged: _Merged, display: str,
                     problems: list[Problem], base_only: bool) -> tuple[EnvironmentSpec | None, list[Problem]]:
    if base_only:
        return None, problems
    for path, message in reference_problems(spec, declared):
        where = _positioned(merged.positions, path, False, display)
        problems.append(Problem(*where, f"{display_path(path)}: {message}"))
    return (None, problems) if problems else (spec, problems)


def _validate_by_entry(data: dict[str, Any], merged: _Merged, display: str) -> tuple[EnvironmentSpec, list[Problem]]:
    top = {k: v for k, v in data.items() if k not in SECTIONS or not isinstance(v, dict)}
    top_spec, problems = _errors(top, merged, display)
    valid: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for section in SECTIONS:
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            one, entry_problems = _errors({**_PLACEHOLDER, section: {name: entry}}, merged, display)
            problems += entry_problems
            if one is not None:
                valid[section][name] = getattr(one, section)[name]
    top_fields = {k: getattr(top_spec, k) for k in (*_PLACEHOLDER, *LIFECYCLE)} if top_spec else {}
    fields: dict[str, Any] = {**_PLACEHOLDER, **top_fields, **valid}
    partial = EnvironmentSpec.model_construct(None, **fields)
    return partial, problems


_expand = expand_paths


def check_paths(paths: Iterable[Path | str]) -> list[FileReport]:
    """Check every file under `paths` (files, or folders of *.yaml / *.yml); raise SpecError listing all
    problems of all files, else return one report per file (environments and base files)."""
    session = _Session()
    files = _expand(paths)
    environments: dict[Path, LoadedEnvironment] = {}
    extended_by: dict[Path, list[Path]] = {}
    bases: list[Path] = []
    names: dict[str, Path] = {}
    for path in files:
        doc = session.document(path, str(path))
        if doc is None:
            continue
        if "environment" not in doc.data:
            bases.append(path)
            continue
        merged = session.chain(path, str(path), (path.resolve(),))
        if merged is None:
            continue
        for base in merged.files[1:]:
            extended_by.setdefault(base.resolve(), []).append(path)
        spec, problems = _validate(merged, str(path), base_only=False)
        session.problems.extend(problems)
        if spec is None:
            continue
        loaded = LoadedEnvironment(spec, path, merged.files, merged.positions, merged.data)
        if spec.environment in names:
            where = merged.positions[("environment",)]
            session.problems.append(Problem(where.file, where.line, where.col,
                                            f"environment {spec.environment!r} is also described by "
                                            f"{names[spec.environment]}; one file per Modal environment"))
            continue
        names[spec.environment] = path
        environments[path] = loaded
    for path in bases:
        if path.resolve() not in extended_by:
            merged = session.chain(path, str(path), (path.resolve(),))
            if merged is not None:
                session.problems.extend(_validate(merged, str(path), base_only=True)[1])
    if session.problems:
        raise SpecError(session.problems)
    return [FileReport(p, environments.get(p), tuple(extended_by.get(p.resolve(), ()))) for p in files]


def load_paths(paths: Iterable[Path | str]) -> list[LoadedEnvironment]:
    """The environments under `paths` (files, or folders of *.yaml / *.yml), sorted by file name.

    Base files (no `environment:`) are not environments: they are read through `extends:`.
    Raises SpecError with every problem of every file.
    """
    return [r.environment for r in check_paths(paths) if r.environment is not None]


def load_file(path: Path | str) -> LoadedEnvironment:
    """The environment described by one file (merged with what it extends). Raises SpecError."""
    reports = check_paths([path])
    loaded = reports[0].environment
    if loaded is None:
        raise SpecError([Problem(str(path), 1, 1, "this is a base file (it has no `environment:`); load a "
                                                  "file that extends it")])
    return loaded
