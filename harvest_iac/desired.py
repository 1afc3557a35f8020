"""The desired state of one environment file, as resources the diff can compare. Pure.

Each resource has a `spec` (normalised, JSON-able: recorded as last-applied in the state
record) and a `live_view` (the part Modal can show back, in the terms the backend reads).
"""

from __future__ import annotations

import math
from typing import Any

from harvest_iac.diff import Desired
from harvest_iac.naming import function_tag
from harvest_iac.paths import project_path
from harvest_iac.plan import fingerprint
from harvest_iac.spec.models import LIFECYCLE, Cron, EnvironmentSpec, Image, Sandbox, Snapshot


def _num(x: float | int) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def schedule_view(cron: Cron) -> str:
    """How Modal shows the schedule the generated code deploys (see `function_from_proto`)."""
    if cron.schedule is not None:
        return f"Cron({cron.schedule!r}, {cron.timezone or 'UTC'})"
    seconds = cron.every_seconds or 0
    return f"Period(seconds={_num(seconds)})"


def image_spec(image: Image) -> dict[str, Any]:
    """An image's recipe; `files` and `python_source` only when used (so recipes written before
    they existed keep their digests), local paths relative to the project."""
    data = image.model_dump(mode="json", by_alias=True, exclude_defaults=False)
    data["files"] = {remote: project_path(local) for remote, local in sorted(image.files.items())}
    return {k: v for k, v in data.items() if v or k not in ("files", "python_source")}


def image_chain(spec: EnvironmentSpec, name: str) -> list[dict[str, Any]]:
    """The recipe of an image with the recipes it is layered on (base first)."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current in spec.images and current not in seen:
        seen.add(current)
        img = spec.images[current]
        chain.append({"name": current, **image_spec(img)})
        current = img.parent
    return list(reversed(chain))


def image_recipe_digest(spec: EnvironmentSpec, ref: str) -> str:
    """A digest of what a sandbox or snapshot starts from: an image's chain, or a snapshot's
    own recipe."""
    if ref in spec.images:
        return fingerprint(image_chain(spec, ref))
    if ref in spec.snapshots:
        return fingerprint({"snapshot": ref, **snapshot_recipe(spec, spec.snapshots[ref])})
    return fingerprint(ref)


def snapshot_recipe(spec: EnvironmentSpec, snap: Snapshot) -> dict[str, Any]:
    return {
        "image": snap.image,
        "image_recipe": image_recipe_digest(spec, snap.image),
        "setup": list(snap.setup),
        "volumes": dict(sorted(snap.volumes.items())),
    }


#: Snapshot lifetimes when `ttl` is not written: at least a week with `max_age`, else 30 days.
MIN_DEFAULT_TTL_S = 7 * 86400
NO_MAX_AGE_TTL_S = 30 * 86400


def refresh_interval(spec: EnvironmentSpec) -> float | None:
    """The longest time between two runs of the `refresh-snapshots` crons (the shortest of
    them, when several); None without one."""
    from harvest_iac.estimate import run_gap

    gaps = [run_gap(cron.schedule, cron.timezone, cron.every_seconds)
            for cron in spec.crons.values() if cron.task == "refresh-snapshots"]
    return min(gaps) if gaps else None


def snapshot_ttl(spec: EnvironmentSpec, name: str) -> int | None:
    """How long each image of snapshot `name` lives, in seconds (None: for ever): its `ttl`, else
    twice the time `keep` snapshots span (each re-made after `max_age` plus at most one
    refresh interval), and at least a week; without `max_age`, 30 days."""
    snap = spec.snapshots[name]
    if snap.ttl == "none":
        return None
    if snap.ttl is not None:
        return int(math.ceil(float(snap.ttl)))
    if snap.max_age is None:
        return NO_MAX_AGE_TTL_S
    period = float(snap.max_age) + (refresh_interval(spec) or 0.0)
    return max(MIN_DEFAULT_TTL_S, int(math.ceil(2 * snap.keep * period)))


def cron_spec(cron: Cron) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schedule": cron.schedule,
        "timezone": cron.timezone,
        "every": cron.every,
        "every_seconds": cron.every_seconds,
        "retries": None if cron.retries is None else cron.retries.model_dump(mode="json"),
        "timeout": cron.timeout,
        "image": cron.image,
        "volumes": dict(sorted(cron.volumes.items())),
        "secrets": sorted(cron.secrets),
        "task": cron.task,
        "command": cron.command,
        "cpu": cron.cpu,
        "memory_mib": cron.memory,
        "gpu": cron.gpu,
        "region": cron.region,
        "max_containers": cron.max_containers,
    }
    return {k: v for k, v in data.items() if v is not None}


def gpu_view(gpu: str | None) -> str | None:
    """A GPU as a deployed function shows it: `TYPE:COUNT`."""
    if gpu is None:
        return None
    name, _, count = gpu.partition(":")
    return f"{name}:{count or 1}"


#: Keys of a cron's live view that are compared only when the cron sets them, so crons that
#: do not use them keep the view recorded before they existed.
_VIEW_KEYS_WHEN_SET = ("cpu", "memory_mib", "gpu", "region", "max_containers")


def cron_live_view(cron: Cron) -> dict[str, Any]:
    view = {
        "schedule": schedule_view(cron),
        "max_retries": None if cron.retries is None else cron.retries.max_retries,
        "timeout": cron.timeout,
        "volumes": dict(sorted(cron.volumes.items())),
        "secrets": sorted(cron.secrets),
        "cpu": cron.cpu,
        "memory_mib": cron.memory,
        "gpu": gpu_view(cron.gpu),
        "region": cron.region,
        "max_containers": cron.max_containers,
    }
    return {k: v for k, v in view.items() if v is not None or k not in _VIEW_KEYS_WHEN_SET}


#: Sandbox keys recorded only when set, so a profile that does not use them keeps its record.
_SANDBOX_KEYS_WHEN_SET = ("encrypted_ports", "env", "include_oidc_identity_token", "tags")


def sandbox_spec(spec: EnvironmentSpec, sb: Sandbox) -> dict[str, Any]:
    data = sb.model_dump(mode="json")
    data["memory_mib"] = data.pop("memory")
    data["volumes"] = dict(sorted(sb.volumes.items()))
    data["secrets"] = sorted(sb.secrets)
    data["image_recipe"] = image_recipe_digest(spec, sb.image)
    return {k: v for k, v in data.items()
            if v is not None and not (k in _SANDBOX_KEYS_WHEN_SET and not v)}


def desired_resources(spec: EnvironmentSpec) -> dict[str, Desired]:
    """Every resource of the file by address (`volume.agent-state`, ...)."""
    out: dict[str, Desired] = {}

    def add(kind: str, name: str, data: dict[str, Any], live_view: dict[str, Any] | None = None) -> None:
        address = f"{kind}.{name}"
        out[address] = Desired(address, kind, name, data, live_view or {})

    settings = spec.settings.declared()
    if settings:
        add("settings", spec.environment, settings, settings)
    for name, vol in spec.volumes.items():
        add("volume", name, {"version": vol.version, "protect": vol.protect})
    for name, sec in spec.secrets.items():
        data: dict[str, Any] = {"keys": sec.keys}
        if sec.from_dotenv is not None:
            data["from_dotenv"] = sec.from_dotenv
        else:
            data["from_env"] = dict(sorted((sec.from_env or {}).items()))
        add("secret", name, data)
    for name in spec.image_order():
        img = spec.images[name]
        own = {k: v for k, v in image_spec(img).items() if v not in (None, [], {}, False)}
        if img.parent is not None:
            own["parent_recipe"] = image_recipe_digest(spec, img.parent)
        add("image", name, own)
    for name, snap in spec.snapshots.items():
        add("snapshot", name, {**snapshot_recipe(spec, snap), "max_age": snap.max_age,
                               "keep": snap.keep, "ttl": snapshot_ttl(spec, name)})
    for name, cron in spec.crons.items():
        view = cron_live_view(cron)
        add("cron", name, {**cron_spec(cron), "live_view": view}, view)
    for name, sb in spec.sandboxes.items():
        add("sandbox", name, sandbox_spec(spec, sb))
    return out


def function_tags(spec: EnvironmentSpec) -> tuple[str, ...]:
    return tuple(sorted([function_tag("cron", n) for n in spec.crons]
                        + [function_tag("sandbox", n) for n in spec.sandboxes]))


def spec_digest(spec: EnvironmentSpec) -> str:
    """A digest of everything the file says; `moved` and `removed` count only when used, so a
    file without them keeps the digest it had before harvest knew them."""
    data = spec.model_dump(mode="json", by_alias=True)
    return fingerprint({k: v for k, v in data.items() if v or k not in LIFECYCLE})
