"""Frozen models of the live state observed in Modal (or the local Modal).

Produced by `modal_backend.read_live` (an SDK call plus a pure converter); consumed by
`diff.compare`. Nothing here imports modal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harvest_iac.state import StateRecord


@dataclass(frozen=True)
class LiveVolume:
    name: str
    object_id: str
    version: int
    created_at: float = 0.0


@dataclass(frozen=True)
class LiveSecret:
    """Key names only: Modal never returns secret values."""

    name: str
    object_id: str
    keys: tuple[str, ...]
    created_at: float = 0.0


@dataclass(frozen=True)
class LiveFunction:
    """A deployed function as `Function.info()` describes it; ids mapped back to names
    where the backend could (an unknown id stays as the id)."""

    name: str
    object_id: str
    schedule: str | None
    max_retries: int | None
    timeout: int
    cpu: float | None
    memory_mib: int | None
    image_id: str | None
    volumes: dict[str, str] = field(default_factory=dict)  # mount path -> volume name
    secrets: tuple[str, ...] = ()
    block_network: bool = False
    gpu: str | None = None  # "TYPE:COUNT"
    region: list[str] | None = None
    max_containers: int | None = None


@dataclass(frozen=True)
class LiveApp:
    name: str
    app_id: str
    state: str  # "deployed", "stopped", ...
    tags: dict[str, str] = field(default_factory=dict)
    version: int | None = None  # latest deployment version
    deployed_by: str = ""
    deployment_tag: str = ""
    functions: dict[str, LiveFunction] = field(default_factory=dict)
    function_names: tuple[str, ...] = ()  # every function the serving version has


@dataclass(frozen=True)
class LiveDeployment:
    """One version of a deployed app (`modal app history`); a rollback's version names the
    version whose functions it serves again."""

    version: int
    tag: str = ""
    deployed_at: float = 0.0
    deployed_by: str = ""
    rollback_version: int = 0

    @property
    def serves(self) -> int:
        """The version whose functions this one serves (itself, unless a rollback)."""
        return self.rollback_version or self.version


@dataclass(frozen=True)
class LiveImage:
    """An image harvest recorded (e.g. a snapshot); `exists` says whether Modal knows it."""

    image_id: str
    exists: bool


@dataclass(frozen=True)
class LiveEnvironment:
    """The environment as EnvironmentList shows it: its settings (the keys of
    `spec.Settings`; None when Modal reports the setting unset) and this cycle's spend."""

    environment_id: str
    settings: dict[str, Any] = field(default_factory=dict)
    current_cycle_usage: float = 0.0


@dataclass(frozen=True)
class LiveBilling:
    """What the target publishes about money: its rates (WorkspaceBillingRates, per unit per
    hour) and the environment's spend in the last billing cycle (EnvironmentBillingSummary);
    None where it did not answer."""

    rates: dict[str, str] | None = None
    last_cycle: str = ""  # "2026-10"
    last_cycle_spend: float | None = None


@dataclass(frozen=True)
class Live:
    """Everything harvest read from one Modal environment for one plan."""

    environment: str
    environment_exists: bool
    volumes: dict[str, LiveVolume] = field(default_factory=dict)
    secrets: dict[str, LiveSecret] = field(default_factory=dict)
    app: LiveApp | None = None
    images: dict[str, LiveImage] = field(default_factory=dict)  # by image id
    state: StateRecord | None = None
    details: LiveEnvironment | None = None  # None when the environment does not exist
    billing: LiveBilling = field(default_factory=LiveBilling)  # not part of the fingerprint

    def fingerprint_data(self) -> dict[str, Any]:
        """What a saved plan pins: the live facts the plan's decisions rest on (not timings
        nor usage counters)."""
        return {
            "environment": self.environment,
            "environment_exists": self.environment_exists,
            "volumes": {n: [v.object_id, v.version] for n, v in sorted(self.volumes.items())},
            "secrets": {n: [s.object_id, list(s.keys)] for n, s in sorted(self.secrets.items())},
            "app": None
            if self.app is None
            else {
                "app_id": self.app.app_id,
                "state": self.app.state,
                "version": self.app.version,
                "tags": dict(sorted(self.app.tags.items())),
                "functions": {n: asdict(f) for n, f in sorted(self.app.functions.items())},
            },
            "images": {i: img.exists for i, img in sorted(self.images.items())},
            "state_serial": None if self.state is None else self.state.serial,
            **({"settings": dict(sorted(self.details.settings.items()))} if self.details else {}),
        }
