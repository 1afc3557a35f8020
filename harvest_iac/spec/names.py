"""Modal's naming rules (modal 1.6: `modal._utils.name_utils`), as messages users can act on."""

from __future__ import annotations

import re

OBJECT_NAME_MAX = 64
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_APP_ID = re.compile(r"^ap-[A-Za-z0-9]{22}$")
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

OBJECT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ENVIRONMENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def object_name_problem(name: str, kind: str) -> str | None:
    """Why `name` is not a valid Modal object name (volume, secret, app, image...), or None."""
    if not name:
        return f"{kind} name is empty"
    if len(name) > OBJECT_NAME_MAX:
        return f"{kind} name {name!r} is {len(name)} characters long; Modal allows at most {OBJECT_NAME_MAX}"
    if not _OBJECT_NAME.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        shown = " ".join(repr(c) for c in bad)
        return (f"{kind} name {name!r} has characters Modal does not allow ({shown}); "
                "use letters, digits, '-', '_' and '.'")
    if _APP_ID.match(name):
        return f"{kind} name {name!r} looks like a Modal app id (ap-...); choose another name"
    return None


def environment_name_problem(name: str) -> str | None:
    """Why `name` is not a valid Modal environment name, or None."""
    if not name:
        return "environment name is empty"
    if len(name) > OBJECT_NAME_MAX:
        return f"environment name {name!r} is {len(name)} characters long; Modal allows at most {OBJECT_NAME_MAX}"
    if not _ENVIRONMENT_NAME.match(name):
        return (f"environment name {name!r} is not valid: start with a letter or digit, then use only "
                "letters, digits, '-' and '_'")
    if name.lower().startswith("en-"):
        return f"environment name {name!r} starts with 'en-', which Modal reserves for environment ids"
    return None


def is_env_var_name(name: str) -> bool:
    """True if `name` can be an environment variable / secret key name (`[A-Za-z_][A-Za-z0-9_]*`)."""
    return bool(_ENV_VAR.match(name))
