"""The environment file format: models, units, naming rules and cross-reference checks (pure).

The models are imported on first use (`harvest_iac.spec.EnvironmentSpec`), so light parts such
as `harvest_iac.spec.units` can be used without loading pydantic.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KINDS",
    "LIFECYCLE",
    "SECTIONS",
    "Cron",
    "EnvironmentSpec",
    "Image",
    "Moved",
    "Removed",
    "RetryPolicy",
    "Sandbox",
    "Secret",
    "Settings",
    "Snapshot",
    "Volume",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harvest_iac.spec import models

        return getattr(models, name)
    raise AttributeError(f"module 'harvest_iac.spec' has no attribute {name!r}")
