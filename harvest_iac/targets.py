"""Which Modal harvest talks to: real Modal (`modal`) or the embedded local Modal (`local`).

Resolution, as ARCHITECTURE.md fixes it: `--target`, else `HARVEST_TARGET`, else `modal` when
credentials exist (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, or a profile in the modal config
file), else `local` with a one-line notice. In CI (`CI=true`) with no credentials, harvest
refuses instead of silently planning against an empty local Modal.
"""

from __future__ import annotations

import os
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


def has_modal_credentials(environ: Mapping[str, str]) -> bool:
    """Whether the backend would find credentials (the same lookup it uses)."""
    from harvest_iac.modal_rpc import credentials_from_env

    try:
        credentials_from_env(environ)
    except TargetError:
        return False
    return True


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
        return TargetChoice(name)
    if has_modal_credentials(env):
        return TargetChoice("modal")
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
