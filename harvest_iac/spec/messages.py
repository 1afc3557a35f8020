"""Pydantic validation errors -> (path in the document, message a user can act on).

Only this module knows pydantic's error vocabulary. Messages never echo values found under
`secrets:` (a value pasted there by mistake must not reach CI logs).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from harvest_iac.spec.models import (
    LIFECYCLE,
    SECTIONS,
    EnvironmentSpec,
    ExpectedUsage,
    RetryPolicy,
    Settings,
)
from harvest_iac.spec.units import describe

Path = tuple[str | int, ...]

SYNONYMS: dict[str, str] = {
    "max_retries": "max",
    "backoff_coefficient": "backoff",
    "cron": "schedule",
    "period": "every",
    "interval": "every",
    "tz": "timezone",
    "mounts": "volumes",
    "packages": "pip",
    "pip_install": "pip",
    "uv_pip_install": "pip",
    "apt_install": "apt",
    "run_commands": "run",
    "commands": "run",
    "base": "from",
    "python_version": "python",
    "memory_mib": "memory",
    "env_vars": "env",
    "environment_variables": "env",
    "args": "command",
    "cmd": "command",
    "dotenv": "from_dotenv",
    "env_file": "from_dotenv",
    "volume": "volumes",
    "secret": "secrets",
    "image": "images",
    "snapshot": "snapshots",
    "sandbox": "sandboxes",
    "cron_jobs": "crons",
    "schedules": "crons",
    "version": "harvest",
    "extend": "extends",
}

EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}

_HINTS = {
    "from": " (debian_slim, micromamba, registry, dockerfile or another image's name)",
    "image": " (the name of an image)",
    "max": " (the number of retries)",
    "harvest": " (the format version: `harvest: 1`)",
    "environment": " (the Modal environment, e.g. `environment: dev`)",
    "app": " (the Modal app name, e.g. `app: harvest-agents`)",
}
_LIFECYCLE_HINTS = {
    "from": " (the old address, e.g. volume.old-name)",
    "to": " (the new address, declared in this file)",
    "address": " (e.g. volume.scratch)",
    "destroy": " (true: delete it; false: stop managing it and keep it in Modal)",
}


def display(path: Path) -> str:
    """`("sandboxes", "agent", "volumes", "/mnt/shared")` -> `sandboxes.agent.volumes[/mnt/shared]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif any(c in part for c in "./ []") or not part:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def model_at(path: Path) -> type[BaseModel] | None:
    """The model that validates the mapping at `path`, for listing its keys."""
    if not path:
        return EnvironmentSpec
    if len(path) == 2 and path[0] in SECTIONS:
        return SECTIONS[str(path[0])]
    if path == ("settings",):
        return Settings
    if len(path) == 3 and path[0] == "sandboxes" and path[2] == "expected":
        return ExpectedUsage
    if len(path) == 2 and path[0] in LIFECYCLE and isinstance(path[1], int):
        return LIFECYCLE[str(path[0])]
    if len(path) == 3 and path[0] == "crons" and path[2] == "retries":
        return RetryPolicy
    return None


def allowed_keys(path: Path) -> list[str]:
    """The keys the mapping at `path` accepts (aliases, as users write them)."""
    model = model_at(path)
    if model is None:
        return []
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return [*keys, "extends"] if not path else keys


def unknown_key(path: Path, key: str) -> str:
    """The message for an unknown key at `path`, with a "did you mean" when one is close."""
    if len(path) == 2 and path[0] == "secrets" and key not in ("from_env", "from_dotenv"):
        return (f"unknown key `{key}`: a secret never holds values in YAML; read them at apply time with "
                f"`from_env: [VAR]` or `from_dotenv: FILE`")
    allowed = allowed_keys(path)
    guess = SYNONYMS.get(key)
    if guess not in allowed:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess:
        return f"unknown key `{key}`; did you mean `{guess}`?"
    if allowed and not path:
        return f"unknown key `{key}`; expected one of: {', '.join(allowed)} (or an `x-` key, which is ignored)"
    if allowed:
        return f"unknown key `{key}`; expected one of: {', '.join(allowed)}"
    return f"unknown key `{key}`"


def existing_prefix(loc: Path, data: Any) -> Path:
    """The longest prefix of `loc` that names a value present in `data`."""
    found: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, list) and isinstance(part, str) and part.isdigit() and int(part) < len(node):
            part = int(part)
            node = node[part]
        else:
            break
        found.append(part)
    return tuple(found)


def translate(error: dict[str, Any], data: Any) -> tuple[Path, bool, str]:
    """One pydantic error -> (path to point at, point at the key rather than the value, message)."""
    loc: Path = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    at_key = False
    if kind == "harvest" and ctx.get("field") is not None:
        loc = (*loc, ctx["field"])
    if len(loc) >= 2 and loc[-1] == "[key]" and error.get("input") == loc[-2]:
        loc, at_key = loc[:-1], True  # pydantic's marker for a mapping key that failed validation
    path = existing_prefix(loc, data)
    secret = bool(path) and path[0] == "secrets"
    if kind == "missing" and loc:
        field = str(loc[-1])
        hints = _LIFECYCLE_HINTS if loc[0] in LIFECYCLE else _HINTS
        message = f"missing required key `{field}`{hints.get(field, '')}"
        return path, True, _prefixed(path, message)
    if kind == "extra_forbidden" and loc:
        return path, True, _prefixed(path[:-1], unknown_key(path[:-1], str(loc[-1])))
    if kind == "harvest":
        whole_mapping = ctx.get("field") is None and isinstance(_value_at(path, data), dict)
        return path, at_key or whole_mapping, _prefixed(path, str(ctx["message"]))
    if kind in EXPECTED:
        got = describe(error.get("input"))
        hint = ""
        if kind == "list_type" and isinstance(error.get("input"), str):
            hint = "; write a list, e.g. [item] or one `- item` per line"
        if kind == "string_type" and isinstance(error.get("input"), int | float) and not secret:
            hint = f"; quote it: \"{error['input']}\""
        return path, at_key, _prefixed(path, f"expected {EXPECTED[kind]}, got {got}{hint}")
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        got = "" if secret else f", got {error.get('input')!r}"
        return path, at_key, _prefixed(path, f"expected {expected}{got}")
    return path, at_key, _prefixed(path, str(error.get("msg", "invalid value")))


def _value_at(path: Path, data: Any) -> Any:
    for part in path:
        data = data[part]
    return data


def _prefixed(path: Path, message: str) -> str:
    where = display(path)
    return f"{where}: {message}" if where else message
