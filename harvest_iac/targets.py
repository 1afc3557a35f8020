"""Which Modal harvest talks to: real Modal (`modal`) or the embedded local Modal (`local`).

Resolution, as ARCHITECTURE.md fixes it: `--target`, else `HARVEST_TARGET`, else `modal` when
credentials exist (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, or a profile in the modal config
file), else `local` with a one-line notice. In CI (`CI=true`) with no credentials, harvest
refuses instead of silently planning against an empty local Modal.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harvest_iac.errors import TargetError

TARGETS = ("modal", "local")
LOCAL_DATA_DIR = Path(".harvest") / "local"


@dataclass(frozen=True)
class TargetChoice:
    name: str  # "modal" | "local"
    notice: str | None = None  # a line to print (e.g. the fallback to local)
    server_url: str | None = None  # for "modal": MODAL_SERVER_URL if set (any Modal API)


def has_modal_credentials(environ: Mapping[str, str]) -> bool:
    if environ.get("MODAL_TOKEN_ID") and environ.get("MODAL_TOKEN_SECRET"):
        return True
    path = Path(environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    profiles = [v for v in data.values() if isinstance(v, dict)]
    wanted = environ.get("MODAL_PROFILE")
    if wanted:
        profiles = [data[wanted]] if isinstance(data.get(wanted), dict) else []
    return any(p.get("token_id") and p.get("token_secret") for p in profiles)


def resolve_target(flag: str | None, environ: Mapping[str, str] | None = None) -> TargetChoice:
    env = os.environ if environ is None else environ
    name = flag or env.get("HARVEST_TARGET") or None
    if name is not None:
        if name not in TARGETS:
            raise TargetError(
                f"unknown target {name!r}: use --target modal (your Modal workspace) or "
                "--target local (the embedded local Modal)"
            )
        if name == "modal" and not has_modal_credentials(env):
            raise TargetError(
                "--target modal needs Modal credentials: set MODAL_TOKEN_ID and "
                "MODAL_TOKEN_SECRET, or run `modal token new`"
            )
        return TargetChoice(name, server_url=env.get("MODAL_SERVER_URL"))
    if has_modal_credentials(env):
        return TargetChoice("modal", server_url=env.get("MODAL_SERVER_URL"))
    if env.get("CI", "").lower() in ("1", "true", "yes"):
        raise TargetError(
            "no Modal credentials in CI: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET as CI "
            "secrets, or pass --target local explicitly to use the local Modal"
        )
    return TargetChoice(
        "local",
        notice=f"No Modal credentials found: using the local Modal (state in {LOCAL_DATA_DIR}/). "
        "Pass --target modal to use your Modal workspace.",
    )
