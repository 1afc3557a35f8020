"""`harvest plan` end to end: load files, read secret inputs, read live state, compare.

This is an edge module (it reads the process environment, dotenv files and Modal through
the backend); the decisions are made by the pure `diff.compare`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest_iac.diff import Desired, DiffInput, SecretValues, compare
from harvest_iac.errors import HarvestError, Problem, SpecError, printable
from harvest_iac.estimate import STARTER_PLAN_CRON_LIMIT
from harvest_iac.plan import Plan
from harvest_iac.secrethash import SecretHasher, derive_key

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


@dataclass(frozen=True)
class Inputs:
    """What one environment file (with its bases) says, as plain data: all a plan needs from
    the YAML. Made by loading and validating (`inputs_from_loaded`), or read back from the
    input cache when none of the files changed."""

    path: str
    environment: str
    app: str
    function_tags: tuple[str, ...]
    app_needed: bool  # something to deploy: a cron or a sandbox profile
    desired: dict[str, Desired]
    app_digest: str
    spec_digest: str
    secret_sources: dict[str, dict[str, Any]]  # {"from_env": {KEY: VAR}} | {"from_dotenv": path}
    dockerfiles: dict[str, str]  # image name -> Dockerfile path
    moved: dict[str, str]  # `moved:` old address -> new address
    removed: dict[str, bool]  # `removed:` address -> destroy
    local_files: dict[str, dict[str, str]] = field(default_factory=dict)  # image -> {remote: local}
    python_sources: dict[str, list[str]] = field(default_factory=dict)  # image -> modules


def inputs_from_loaded(loaded: LoadedEnvironment) -> Inputs:
    from harvest_iac.desired import desired_resources, function_tags, spec_digest
    from harvest_iac.render import app_code_hash

    spec = loaded.spec
    base = Path(loaded.path).parent
    sources: dict[str, dict[str, Any]] = {}
    for name, sec in spec.secrets.items():
        if sec.from_dotenv is not None:
            sources[name] = {"from_dotenv": str(base / sec.from_dotenv)}
        else:
            sources[name] = {"from_env": dict(sec.from_env or {})}
    return Inputs(
        path=str(loaded.path),
        environment=spec.environment,
        app=spec.app,
        function_tags=function_tags(spec),
        app_needed=bool(spec.crons or spec.sandboxes),
        desired=desired_resources(spec),
        app_digest=app_code_hash(spec),
        spec_digest=spec_digest(spec),
        secret_sources=sources,
        dockerfiles={n: str(i.path) for n, i in spec.images.items() if i.path is not None},
        moved={m.source: m.to for m in spec.moved},
        removed={r.address: r.destroy for r in spec.removed},
        local_files={n: dict(i.files) for n, i in spec.images.items() if i.files},
        python_sources={n: list(i.python_source) for n, i in spec.images.items() if i.python_source},
    )


def read_secret_values(sources: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
                       ) -> dict[str, SecretValues]:
    """Each declared secret's values from the environment or its dotenv file (in memory only)."""
    out: dict[str, SecretValues] = {}
    for name, src in sources.items():
        if "from_dotenv" in src:
            path = Path(src["from_dotenv"])
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                out[name] = SecretValues(None, (str(path),), source=str(path))
                continue
            out[name] = SecretValues(parse_dotenv(text, str(path)), source=str(path))
            continue
        mapping = src["from_env"]
        missing = tuple(sorted({var for var in mapping.values() if var not in environ}))
        if missing:
            out[name] = SecretValues(None, missing, source="environment")
        else:
            out[name] = SecretValues({key: environ[var] for key, var in mapping.items()},
                                     source="environment")
    return out


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


class UnreadableDockerfile(HarvestError):
    def __init__(self, image: str, path: str, why: str) -> None:
        self.image = image
        super().__init__(f"image {image!r}: cannot read the Dockerfile {path}: {why}")


def with_dockerfile_digests(desired: dict[str, Desired], dockerfiles: Mapping[str, str]
                            ) -> dict[str, Desired]:
    """A Dockerfile image changes when its file does: its content digest joins the image's
    spec (Modal rebuilds it; harvest redeploys the app)."""
    import hashlib

    out = dict(desired)
    for name, path in dockerfiles.items():
        addr = f"image.{name}"
        if addr not in out:
            continue
        try:
            digest = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            raise UnreadableDockerfile(name, path, str(exc.strerror or exc)) from exc
        out[addr] = replace(out[addr], spec={**out[addr].spec, "dockerfile_sha256": digest})
    return out


class UnreadableLocalFiles(HarvestError):
    def __init__(self, image: str, where: str, why: str) -> None:
        self.image = image
        self.where = where
        super().__init__(f"image {image!r}: cannot read {why}")


def _sha256(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_digests(root: Path, remote: str, python_only: bool = False) -> dict[str, str]:
    """Each file under `root` by its path in the container (`remote/...`); with `python_only`,
    as `add_local_python_source` takes them: `.py` files, no dot-named files or folders."""
    out = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if python_only and (path.suffix != ".py" or any(p.startswith(".") or p == "__pycache__" for p in parts)):
            continue
        if path.is_file():
            out[f"{remote}/{'/'.join(parts)}"] = _sha256(path)
    return out


def _module_digests(module: str) -> dict[str, str]:
    """A Python module's or package's files as `add_local_python_source` finds them (from the
    folder harvest and `modal deploy` run in, then Python's path), by their path in the
    container (`/root/...`)."""
    import sys
    from importlib.machinery import PathFinder

    found = PathFinder.find_spec(module, [str(Path.cwd()), *sys.path])
    if found is None or not (found.origin or found.submodule_search_locations):
        raise FileNotFoundError(f"Python module {module!r} (not found from {Path.cwd()} or Python's path)")
    if found.submodule_search_locations:
        return _folder_digests(Path(list(found.submodule_search_locations)[0]), f"/root/{module}", python_only=True)
    assert found.origin is not None
    return {f"/root/{module}.py": _sha256(Path(found.origin))}


def with_local_file_digests(desired: dict[str, Desired], local_files: Mapping[str, Mapping[str, str]],
                            python_sources: Mapping[str, list[str]]) -> dict[str, Desired]:
    """The files an image ships, digested file by file and keyed by their path in the container,
    join the image's spec (`local_files`): an edited script plans the image and a redeploy, and
    the plan names each file that changed."""
    out = dict(desired)
    for name in sorted(set(local_files) | set(python_sources)):
        addr = f"image.{name}"
        if addr not in out:
            continue
        digests: dict[str, str] = {}
        where = ""
        try:
            for remote, local in sorted(local_files.get(name, {}).items()):
                where = f"files.{remote}"
                digests.update(_folder_digests(Path(local), remote) if local.endswith("/")
                               else {remote: _sha256(Path(local))})
            for module in python_sources.get(name, []):
                where = "python_source"
                digests.update(_module_digests(module))
        except OSError as exc:
            raise UnreadableLocalFiles(name, where, str(exc.strerror or exc) if exc.filename is None
                                       else f"{exc.filename}: {exc.strerror}") from exc
        out[addr] = replace(out[addr], spec={**out[addr].spec, "local_files": dict(sorted(digests.items()))})
    return out


def with_snapshot_image_contents(desired: dict[str, Desired]) -> dict[str, Desired]:
    """What a snapshot's image chain holds beyond its recipe (the Dockerfiles and the local
    files its images ship, by digest) joins the snapshot's spec (`image_contents`): editing a
    file the image ships re-makes the snapshot, and the plan names the file."""
    out = dict(desired)
    for addr, d in desired.items():
        if d.kind != "snapshot":
            continue
        contents: dict[str, str] = {}
        seen: set[str] = set()
        image = desired.get(f"image.{d.spec.get('image')}")
        while image is not None and image.name not in seen:
            seen.add(image.name)
            contents.update(image.spec.get("local_files", {}))
            if image.spec.get("dockerfile_sha256"):
                contents[f"Dockerfile of image.{image.name}"] = image.spec["dockerfile_sha256"]
            image = desired.get(f"image.{image.spec.get('from')}")
        if contents:
            out[addr] = replace(d, spec={**d.spec, "image_contents": dict(sorted(contents.items()))})
    return out


@dataclass(frozen=True)
class Prepared:
    """Everything a plan (and an apply) of one file needs besides live state: the file's
    inputs plus what is read at run time (secret values, Dockerfile digests)."""

    inputs: Inputs
    desired: dict[str, Desired]
    secret_values: dict[str, SecretValues]
    loaded: Any = None  # the validated spec; None when the inputs came from the cache

    @property
    def path(self) -> str:
        return self.inputs.path

    @property
    def app_needed(self) -> bool:
        return self.inputs.app_needed

    @property
    def app_digest(self) -> str:
        """The hash of what is deployed: the rendered code and, when images ship local files,
        their contents."""
        files = {a: d.spec["local_files"] for a, d in sorted(self.desired.items())
                 if d.kind == "image" and d.spec.get("local_files")}
        if not files:
            return self.inputs.app_digest
        from harvest_iac.plan import fingerprint

        return fingerprint({"code": self.inputs.app_digest, "local_files": files})

    @property
    def spec_digest(self) -> str:
        return self.inputs.spec_digest

    def full(self, environ: Mapping[str, str]) -> Prepared:
        """With the validated spec (needed to render and to point at file positions)."""
        if self.loaded is not None:
            return self
        from harvest_iac.loader import load_file

        return prepare(load_file(self.inputs.path), environ)


def prepare_inputs(inputs: Inputs, environ: Mapping[str, str], loaded: Any = None) -> Prepared:
    values = read_secret_values(inputs.secret_sources, environ)
    try:
        desired = with_dockerfile_digests(with_secret_keys(inputs.desired, values),
                                          inputs.dockerfiles)
        desired = with_local_file_digests(desired, inputs.local_files, inputs.python_sources)
    except (UnreadableDockerfile, UnreadableLocalFiles) as exc:
        if loaded is None:
            from harvest_iac.loader import load_file

            loaded = load_file(inputs.path)
        where = "path" if isinstance(exc, UnreadableDockerfile) else exc.where
        raise SpecError([loaded.problem(f"image.{exc.image}.{where}", str(exc))]) from exc
    return Prepared(inputs, with_snapshot_image_contents(desired), values, loaded)


def prepare(loaded: LoadedEnvironment, environ: Mapping[str, str]) -> Prepared:
    return prepare_inputs(inputs_from_loaded(loaded), environ, loaded)


def load_prepared(paths: tuple[str, ...], environ: Mapping[str, str]) -> list[Prepared]:
    """Every environment under `paths`, prepared; from the input cache when no file changed."""
    from harvest_iac import inputcache

    given = paths or ("environments",)
    cached = inputcache.lookup(given, environ)
    if cached is not None:
        return [prepare_inputs(i, environ) for i in cached]
    loaded = load_environments(given)
    inputs = [inputs_from_loaded(item) for item in loaded]
    inputcache.store(given, loaded, inputs, environ)
    return [prepare_inputs(i, environ, item) for i, item in zip(inputs, loaded, strict=True)]


def cron_limit(environ: Mapping[str, str]) -> int:
    raw = environ.get("HARVEST_CRON_LIMIT")
    if raw is None:
        return STARTER_PLAN_CRON_LIMIT
    try:
        return int(raw)
    except ValueError as exc:
        raise HarvestError(f"HARVEST_CRON_LIMIT must be a whole number, got {raw!r}") from exc


#: `HARVEST_STATE_KEY` must be at least this long (a random string, e.g. `openssl rand -hex 32`).
STATE_KEY_MIN_LENGTH = 16


def secret_hasher(environ: Mapping[str, str]) -> SecretHasher:
    """How this run hashes secret values: keyed with `HARVEST_STATE_KEY` when it is set, else
    scrypt. One hasher per key for the whole process, so every plan of a run (and the apply
    after it) reuses the hashes already computed."""
    passphrase = environ.get("HARVEST_STATE_KEY") or None
    if passphrase is not None and len(passphrase) < STATE_KEY_MIN_LENGTH:
        raise HarvestError(
            f"HARVEST_STATE_KEY is {len(passphrase)} characters long; use a random string of at "
            f"least {STATE_KEY_MIN_LENGTH} (e.g. `openssl rand -hex 32`) kept in your CI secrets")
    return _hasher(passphrase)


@functools.lru_cache(maxsize=2)
def _hasher(passphrase: str | None) -> SecretHasher:
    return SecretHasher(None if passphrase is None else derive_key(passphrase))


def plan_one(prep: Prepared, session: Session, *, target: str,
             environ: Mapping[str, str] | None = None, now: datetime | None = None) -> Plan:
    from harvest_iac.modal_backend import ReadRequest

    env = os.environ if environ is None else environ
    inputs = prep.inputs
    live = session.read(ReadRequest(environment=inputs.environment, app=inputs.app,
                                    function_names=inputs.function_tags))
    return compare(diff_input(prep, target=target, environ=env, now=now), live)


def diff_input(prep: Prepared, *, target: str, environ: Mapping[str, str],
               now: datetime | None = None) -> DiffInput:
    inputs = prep.inputs
    return DiffInput(
        environment=inputs.environment,
        app=inputs.app,
        source=inputs.path,
        target=target,
        desired=prep.desired,
        app_digest=prep.app_digest,
        secret_values=prep.secret_values,
        now=now or datetime.now(timezone.utc),
        cron_limit=cron_limit(environ),
        spec_digest=inputs.spec_digest,
        app_needed=inputs.app_needed,
        hasher=secret_hasher(environ),
        moved=inputs.moved,
        removed=inputs.removed,
    )


def check_inputs(preps: list[Prepared], environ: Mapping[str, str]) -> None:
    """For apply: every secret input must be readable before anything changes."""
    problems: list[Problem] = []
    for p in preps:
        if any(sv.missing for sv in p.secret_values.values()):
            problems.extend(missing_secret_problems(p.full(environ).loaded, p.secret_values))
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


def load_one_environment(paths: tuple[str, ...], verb: str) -> Any:
    """The one environment under `paths`, for verbs that act on one (destroy, rollback, ...)."""
    loaded = load_environments(paths)
    if len(loaded) != 1:
        found = ", ".join(str(item.path) for item in loaded)
        raise HarvestError(f"{verb} acts on one environment; name its file (found: {printable(found)})")
    return loaded[0]


def make_plans(paths: tuple[str, ...], target_flag: str | None, environ: Mapping[str, str]
               ) -> list[Plan]:
    """One plan per environment file under `paths`, against the chosen target."""
    import click

    from harvest_iac.modal_backend import Session
    from harvest_iac.targets import resolve_target

    preps = load_prepared(paths, environ)
    choice = resolve_target(target_flag, environ)
    if choice.notice:
        click.echo(choice.notice, err=True)
    with Session(choice, Path.cwd()) as session:
        return [plan_one(p, session, target=choice.name, environ=environ) for p in preps]


def show_plans(plans: list[Plan], fmt: str, color: bool | None) -> None:
    import click

    from harvest_iac.present import RENDERERS, render_text

    if fmt == "text":
        use_color = color if color is not None else _isatty()
        click.echo(render_text(plans, color=use_color), nl=False)
    else:
        click.echo(RENDERERS[fmt](plans), nl=False)


def run_plan(paths: tuple[str, ...], *, out: str | None, detailed_exitcode: bool, fmt: str,
             target_flag: str | None, color: bool | None, comment: bool = False) -> int:
    import click

    from harvest_iac import github
    from harvest_iac.plan import plan_to_dict

    environ = dict(os.environ)
    plans = make_plans(paths, target_flag, environ)
    show_plans(plans, fmt, color)
    if out:
        import json

        doc = {"plans": [plan_to_dict(p) for p in plans]}
        Path(out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        click.echo(printable(f"Saved the plan to {out}; apply it with: harvest apply {out}"), err=True)
    github.publish(plans, environ, title="harvest plan")
    if comment:
        github.comment(plans, environ, lambda text: click.echo(text, err=True))
    changes = any(p.summary.has_changes for p in plans)
    if detailed_exitcode and changes:
        return 2
    return 0


def run_drift(paths: tuple[str, ...], *, fmt: str, target_flag: str | None, color: bool | None,
              issue: bool) -> int:
    """A plan that only reports: 0 when live state matches the YAML, 2 when it does not."""
    import click

    from harvest_iac import github

    environ = dict(os.environ)
    plans = make_plans(paths, target_flag, environ)
    show_plans(plans, fmt, color)
    github.publish(plans, environ, title="harvest drift")
    if issue:
        github.report_drift(plans, environ, lambda text: click.echo(text, err=True))
    return 2 if any(github.differs(p) for p in plans) else 0


def _isatty() -> bool:
    import sys

    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
