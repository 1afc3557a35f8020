"""The environment file format: models, units, naming rules and cross-reference checks (pure)."""

from __future__ import annotations

from harvest_iac.spec.models import (
    KINDS,
    SECTIONS,
    Cron,
    EnvironmentSpec,
    Image,
    RetryPolicy,
    Sandbox,
    Secret,
    Snapshot,
    Volume,
)

__all__ = [
    "KINDS",
    "SECTIONS",
    "Cron",
    "EnvironmentSpec",
    "Image",
    "RetryPolicy",
    "Sandbox",
    "Secret",
    "Snapshot",
    "Volume",
]
