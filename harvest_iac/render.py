"""Render one environment's Modal app module from `templates/` (Jinja2). Pure: no modal import.

Safety: every value from the YAML reaches the generated code only as a Python literal (the
`py` and `args` filters) or as an identifier harvest chose (`Code` values of the view built
here). The environment's `finalize` refuses anything else, so a template that writes a raw
value (`{{ name }}`) fails to render instead of emitting code. Literals are ASCII-only
(`ascii()`), so quotes, backslashes, newlines, `\"\"\"` and Jinja syntax in a command arrive byte
for byte and nothing else runs.

Determinism: the output depends only on the spec (no sets, no time, no hashing of Python
objects); resources are rendered sorted by name, images in `EnvironmentSpec.image_order()`.
"""

from __future__ import annotations

import ast
import hashlib
import keyword
import math
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from harvest_iac.errors import HarvestError
from harvest_iac.naming import function_tag, snapshot_image_name
from harvest_iac.paths import APP_TEMPLATE, project_path, templates_dir
from harvest_iac.spec.models import Cron, EnvironmentSpec, Image, Sandbox
from harvest_iac.state import LOCK_DICT, STATE_VOLUME, state_path

#: Where the templates live: the repository's top-level `templates/` folder (see paths.py).
TEMPLATES_DIR = templates_dir()
MAX_FUNCTION_TIMEOUT_S = 24 * 3600
#: How much longer a `sandbox-<profile>` function may run than its sandbox.
SANDBOX_FUNCTION_MARGIN_S = 60


class Code(str):
    """A fragment of generated code harvest vouches for: a literal or an identifier."""


@dataclass(frozen=True)
class RenderedApp:
    """The generated Modal app module of one environment."""

    module_name: str  # a Python identifier; the file is `<module_name>.py`
    code: str
    code_hash: str  # "sha256:<hex of the code's UTF-8 bytes>"


# -- literals ---------------------------------------------------------------------------
def py_literal(value: Any) -> Code:
    """`value` (None, bool, int, float, str, list, tuple, dict of those) as an ASCII Python
    literal that evaluates to an equal value."""
    if value is None or isinstance(value, bool):
        return Code(repr(value))
    if isinstance(value, int):
        return Code(repr(int(value)))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HarvestError(f"cannot render the number {value!r} into code")
        return Code(repr(value))
    if isinstance(value, str):
        return Code(ascii(value))
    if isinstance(value, (list, tuple)):
        return Code("[" + ", ".join(py_literal(v) for v in value) + "]")
    if isinstance(value, Mapping):
        return Code("{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}")
    raise HarvestError(f"cannot render a value of type {type(value).__name__} into code")


def py_args(values: Iterable[Any]) -> Code:
    """Positional arguments: each value a literal, comma-separated."""
    return Code(", ".join(py_literal(v) for v in values))


def _finalize(value: Any) -> Any:
    if isinstance(value, Code):
        return value
    raise _RawValueError(
        f"a {type(value).__name__} value reached the generated code without the `py` filter "
        "(YAML values may only appear as literals)")


class _RawValueError(Exception):
    pass


# -- identifiers ------------------------------------------------------------------------
def identifiers(prefix: str, names: Iterable[str]) -> dict[str, Code]:
    """Collision-free Python identifiers for Modal names: `refresh-environment` ->
    `cron_refresh_environment`. Assigned in sorted name order, so they depend only on the set
    of names; a clash (`a-b` and `a_b`) gets a numeric suffix."""
    out: dict[str, Code] = {}
    used: set[str] = set()
    for name in sorted(names):
        base = prefix + re.sub(r"\W", "_", name, flags=re.ASCII)
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        if not candidate.isidentifier() or keyword.iskeyword(candidate):
            raise HarvestError(f"cannot make a Python identifier from {name!r}")
        used.add(candidate)
        out[name] = Code(candidate)
    return out


def module_name(spec: EnvironmentSpec) -> str:
    """The generated module's name: the app name as an identifier (`harvest-agents` ->
    `harvest_agents`)."""
    name = re.sub(r"\W", "_", spec.app, flags=re.ASCII)
    return name if name[:1].isalpha() or name[:1] == "_" else f"app_{name}"


# -- the view the template reads --------------------------------------------------------
@dataclass(frozen=True)
class Names:
    """Identifiers of every object of the module, by kind and Modal name."""

    image: dict[str, Code]
    volume: dict[str, Code]
    secret: dict[str, Code]
    cron: dict[str, Code]
    sandbox: dict[str, Code]


def _names(spec: EnvironmentSpec) -> Names:
    return Names(
        image=identifiers("image_", spec.images),
        volume=identifiers("volume_", spec.volumes),
        secret=identifiers("secret_", spec.secrets),
        cron=identifiers("cron_", spec.crons),
        sandbox=identifiers("sandbox_", spec.sandboxes),
    )


def _mounts(mounts: Mapping[str, str], ids: Mapping[str, Code]) -> Code:
    return Code("{" + ", ".join(f"{py_literal(path)}: {ids[vol]}"
                                for path, vol in sorted(mounts.items())) + "}")


def _objects(names: Iterable[str], ids: Mapping[str, Code]) -> Code:
    return Code("[" + ", ".join(ids[n] for n in sorted(names)) + "]")


def _image_view(name: str, image: Image, names: Names) -> dict[str, Any]:
    return {
        "name": name,
        "ident": names.image[name],
        "image": image,
        "parent": None if image.parent is None else names.image[image.parent],
        "registry_secret": None if image.registry_secret is None else names.secret[image.registry_secret],
        "fb": Code(", force_build=True" if image.force_build else ""),
        "dockerfile": None if image.path is None else project_path(image.path),
        "local_files": _local_files(image),
    }


def _local_files(image: Image) -> list[tuple[Code, str, str]]:
    """(method, local path, remote path) of each `files` entry, in remote path order: a folder
    (its resolved path ends with `/`) is added with `add_local_dir`, a file with `add_local_file`."""
    return [(Code("add_local_dir" if local.endswith("/") else "add_local_file"),
             project_path(local).rstrip("/") or ".", remote)
            for remote, local in sorted(image.files.items())]


def _cron_view(name: str, cron: Cron, names: Names) -> dict[str, Any]:
    return {
        "name": name,
        "function": function_tag("cron", name),
        "ident": names.cron[name],
        "cron": cron,
        "image": None if cron.image is None else names.image[cron.image],
        "volumes": _mounts(cron.volumes, names.volume),
        "volume_list": _objects(set(cron.volumes.values()), names.volume),
        "secrets": _objects(cron.secrets, names.secret),
        "resources": [(Code(key), getattr(cron, key)) for key in CRON_RESOURCES
                      if getattr(cron, key) is not None],
    }


#: `@app.function` options a cron passes when it sets them.
CRON_RESOURCES = ("cpu", "memory", "gpu", "region", "max_containers")

#: `Sandbox.create` options a profile passes when it sets them (beside the ones always passed).
SANDBOX_OPTIONS = ("gpu", "region", "cloud", "outbound_domain_allowlist", "outbound_cidr_allowlist",
                   "inbound_cidr_allowlist", "encrypted_ports", "workdir", "env",
                   "include_oidc_identity_token", "tags")


def _sandbox_options(sb: Sandbox) -> list[tuple[Code, Any]]:
    """(keyword, value) of each `Sandbox.create` option: the keywords are harvest's own names,
    the values reach the code through `| py`."""
    options: list[tuple[str, Any]] = [("idle_timeout", sb.idle_timeout), ("cpu", sb.cpu),
                                      ("memory", sb.memory), ("block_network", sb.block_network)]
    options += [(key, getattr(sb, key)) for key in SANDBOX_OPTIONS if getattr(sb, key) not in (None, [], {}, False)]
    return [(Code(key), value) for key, value in options]


def _sandbox_view(name: str, sb: Sandbox, spec: EnvironmentSpec, names: Names) -> dict[str, Any]:
    return {
        "name": name,
        "function": function_tag("sandbox", name),
        "ident": names.sandbox[name],
        "sandbox": sb,
        "snapshot": sb.image if sb.image in spec.snapshots else None,
        "image": names.image.get(sb.image),
        "volumes": _mounts(sb.volumes, names.volume),
        "secrets": _objects(sb.secrets, names.secret),
        "options": _sandbox_options(sb),
        "function_timeout": min(int(math.ceil(sb.timeout)) + SANDBOX_FUNCTION_MARGIN_S, MAX_FUNCTION_TIMEOUT_S),
    }


def _snapshot_records(spec: EnvironmentSpec) -> dict[str, dict[str, Any]]:
    """What the state record holds as each snapshot's spec (as `harvest apply` writes it)."""
    from harvest_iac.desired import desired_resources

    desired = desired_resources(spec)
    return {name: desired[f"snapshot.{name}"].spec for name in spec.snapshots}


def _check_function_names(spec: EnvironmentSpec) -> None:
    """Two resources must not deploy functions of the same name (a cron `sandbox-agent` and
    a sandbox profile `agent`): Modal would keep only one."""
    owners: dict[str, list[str]] = {}
    for kind, names in (("cron", spec.crons), ("sandbox", spec.sandboxes)):
        for name in names:
            owners.setdefault(function_tag(kind, name), []).append(f"{kind}.{name}")
    clashes = sorted((tag, who) for tag, who in owners.items() if len(who) > 1)
    if clashes:
        tag, who = clashes[0]
        raise HarvestError(f"{' and '.join(who)} would both deploy the Modal function {tag!r}; "
                           "rename one of them")


def _context(spec: EnvironmentSpec) -> dict[str, Any]:
    _check_function_names(spec)
    names = _names(spec)
    records = _snapshot_records(spec)
    return {
        "spec": spec,
        "names": names,
        "state_volume": STATE_VOLUME,
        "state_path": state_path(spec.app),
        "lock_dict": LOCK_DICT,
        "lease_code": lease_definitions(),
        "images": [_image_view(n, spec.images[n], names) for n in spec.image_order()],
        "volumes": [{"name": n, "ident": names.volume[n]} for n in sorted(spec.volumes)],
        "secrets": [{"name": n, "ident": names.secret[n], "secret": spec.secrets[n]}
                    for n in sorted(spec.secrets)],
        "snapshots": [{"name": n, "snapshot": spec.snapshots[n], "image": names.image[spec.snapshots[n].image],
                       "volumes": _mounts(spec.snapshots[n].volumes, names.volume),
                       "published": snapshot_image_name(n), "record": records[n],
                       "ttl": records[n]["ttl"]}
                      for n in sorted(spec.snapshots)],
        "crons": [_cron_view(n, spec.crons[n], names) for n in sorted(spec.crons)],
        "sandboxes": [_sandbox_view(n, spec.sandboxes[n], spec, names) for n in sorted(spec.sandboxes)],
    }


@cache
def lease_definitions() -> Code:
    """The lock protocol (`harvest_iac/lease.py` without its docstring and imports), which
    the generated app embeds so its cron takes harvest's lock exactly as apply does."""
    import inspect

    from harvest_iac import lease

    source = inspect.getsource(lease)
    body = [node for node in ast.parse(source).body
            if not isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    return Code("".join(source.splitlines(keepends=True)[body[0].lineno - 1:]))


# -- rendering --------------------------------------------------------------------------
@cache
def _environment(templates_dir: Path) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    def strict(render: Any) -> Any:
        def apply(value: Any) -> Code:
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return render(value)  # type: ignore[no-any-return]

        return apply

    env.filters["py"] = strict(py_literal)
    env.filters["args"] = strict(py_args)
    return env


def _template_position(exc: BaseException, fallback: str) -> str:
    """`templates/NAME:LINE` of the innermost template frame of a rendering error."""
    where = fallback
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(".j2"):
            where = f"templates/{Path(frame.filename).name}:{frame.lineno}"
    return where


def render_code(spec: EnvironmentSpec, *, templates_dir: Path | None = None,
                template: str = APP_TEMPLATE) -> str:
    """The generated module's text, checked with `ast.parse`. Errors are HarvestErrors naming
    the template (and line) at fault."""
    import jinja2

    directory = templates_dir or TEMPLATES_DIR
    if not (directory / template).is_file():
        raise HarvestError(f"template {directory / template} is missing; harvest's templates/ folder "
                           "must sit next to the harvest_iac package")
    try:
        code = _environment(directory).get_template(template).render(_context(spec))
    except jinja2.TemplateSyntaxError as exc:
        raise HarvestError(f"template templates/{exc.name or template}:{exc.lineno}: {exc.message}") from exc
    except (jinja2.TemplateError, _RawValueError, HarvestError) as exc:
        raise HarvestError(f"template {_template_position(exc, 'templates/' + template)}: "
                           f"rendering failed: {exc}") from exc
    try:
        ast.parse(code, filename=template)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        raise HarvestError(f"template templates/{template} rendered invalid Python at line {exc.lineno} "
                           f"of the generated module: {exc.msg} ({line[:80]!r})") from exc
    return str(code)


def code_hash(code: str) -> str:
    return "sha256:" + hashlib.sha256(code.encode("utf-8")).hexdigest()


def render_app(spec: EnvironmentSpec) -> RenderedApp:
    """The Modal app module `harvest apply` deploys for `spec`."""
    code = render_code(spec)
    return RenderedApp(module_name=module_name(spec), code=code, code_hash=code_hash(code))


def app_code_hash(spec: EnvironmentSpec) -> str:
    """The hash of the rendered module (compared with the one recorded at the last deploy)."""
    return render_app(spec).code_hash


def write_rendered(rendered: RenderedApp, out_dir: Path | str) -> Path:
    """Write the module to `out_dir/<module_name>.py` (byte for byte) and return its path."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{rendered.module_name}.py"
    path.write_bytes(rendered.code.encode("utf-8"))
    # Python trusts a cached .pyc whose source has the same size and mtime in whole seconds:
    # a module rewritten within the second, to the same size (a schedule "*/30" made "*/20"),
    # would run (and deploy) the old code.
    for cached in (directory / "__pycache__").glob(f"{rendered.module_name}.*.pyc"):
        cached.unlink(missing_ok=True)
    return path
