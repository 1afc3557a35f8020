"""The environment file format as frozen pydantic v2 models (the desired state).

Units are normalised: durations are seconds (int when whole, else float), sizes are MiB (int),
`retries` is always a `RetryPolicy`, a secret's `from_env` is always a map (key -> variable).
Maps keep the order the files declare them in (a base file's entries first).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from harvest_iac.spec.fields import (
    BUILTIN_BASES,
    AbsPath,
    AppName,
    Backoff,
    Budget,
    CLOUDS,
    BuilderVersion,
    Cidr,
    CommandCheck,
    ContainerPath,
    Cpu,
    CronName,
    CronString,
    Domain,
    EnvironmentName,
    EnvVarName,
    EnvVarReference,
    FormatVersion,
    FunctionTimeout,
    Gpu,
    GpuCap,
    IdleTimeout,
    ImageName,
    InitialDelay,
    Keep,
    MaxDelay,
    MaxContainers,
    MaxRetries,
    Memory,
    ModuleName,
    MountPath,
    MovedAddress,
    NonEmptyStr,
    Period,
    Port,
    PythonVersion,
    RefName,
    Regions,
    RemovedAddress,
    RunDuration,
    RunsPerDay,
    SandboxName,
    SandboxTimeout,
    SecretName,
    SnapshotAge,
    SnapshotName,
    SnapshotTtl,
    TagKey,
    TagValue,
    TaskCap,
    TimeZone,
    VolumeName,
    VolumeVersion,
    WebSuffix,
    fail,
)
from harvest_iac.spec.names import is_env_var_name
from harvest_iac.spec.units import parse_duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Mounts = dict[MountPath, RefName]


def _unique(items: list[str], what: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise fail(f"{what} {item!r} is listed twice", field=index)
        seen.add(item)


class Image(_Model):
    """A build recipe. `from` is a built-in base or the name of another image to layer on."""

    base: str = Field(alias="from", description="debian_slim | micromamba | registry | dockerfile | an image name")
    python: PythonVersion | None = Field(None, description="Python version, e.g. \"3.11\"")
    ref: NonEmptyStr | None = Field(None, description="registry only: the image reference, e.g. python:3.11-slim")
    registry_secret: RefName | None = Field(None, description="registry only: a secret with the registry login")
    path: NonEmptyStr | None = Field(None, description="dockerfile only: the Dockerfile, relative to this file")
    apt: list[NonEmptyStr] = Field(default_factory=list, description="Debian packages (apt_install), in order")
    pip: list[NonEmptyStr] = Field(default_factory=list, description="Python packages (uv_pip_install)")
    run: list[NonEmptyStr] = Field(default_factory=list, description="shell commands (run_commands), in order")
    env: dict[EnvVarName, str] = Field(default_factory=dict, description="environment variables (strings)")
    workdir: AbsPath | None = Field(None, description="working directory, absolute")
    force_build: bool = Field(False, description="rebuild the layers even when cached")
    files: dict[ContainerPath, NonEmptyStr] = Field(
        default_factory=dict, description="container path -> local file or folder, relative to this file")
    python_source: list[ModuleName] = Field(
        default_factory=list, description="local Python modules or packages, added under /root")

    @property
    def parent(self) -> str | None:
        """The image this one is layered on, or None for a built-in base."""
        return None if self.base in BUILTIN_BASES else self.base

    @model_validator(mode="after")
    def _base_fields(self) -> Image:
        if not self.base:
            raise fail("`from` must not be empty", field="from")
        if self.base == "registry" and self.ref is None:
            raise fail("a registry image needs `ref:`, e.g. ref: python:3.11-slim", field="from")
        if self.base == "dockerfile" and self.path is None:
            raise fail("a dockerfile image needs `path:`, the Dockerfile relative to this file", field="from")
        if self.ref is not None and self.base != "registry":
            raise fail("`ref` only applies to `from: registry`", field="ref")
        if self.registry_secret is not None and self.base != "registry":
            raise fail("`registry_secret` only applies to `from: registry`", field="registry_secret")
        if self.path is not None and self.base != "dockerfile":
            raise fail("`path` only applies to `from: dockerfile`", field="path")
        if self.python is not None and self.parent is not None:
            raise fail(f"a layered image inherits Python from image {self.base!r}; remove `python`", field="python")
        twice = sorted({m for m in self.python_source if self.python_source.count(m) > 1})
        if twice:
            raise fail(f"module {twice[0]!r} is listed twice", field="python_source")
        return self

    @property
    def ships_local_files(self) -> bool:
        """Whether containers of this image get local files (added at start, after every build step)."""
        return bool(self.files or self.python_source)

    @property
    def builds(self) -> bool:
        """Whether this image adds build steps to what it starts from."""
        return bool(self.apt or self.pip or self.run or self.env or self.workdir is not None)


class Volume(_Model):
    """A Modal Volume. Its version is fixed at creation; protected volumes are never deleted."""

    version: VolumeVersion = Field(2, description="1 or 2; a change means replacing the volume")
    protect: bool = Field(True, description="never deleted by apply, whatever the flags")


def _from_env_list(value: object) -> object:
    if not isinstance(value, list):
        return value
    if not value:
        raise fail("from_env lists at least one environment variable")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise fail("from_env list items are environment variable names", field=index)
        if not is_env_var_name(item):
            raise fail(f"{item!r} is not a valid environment variable name", field=index)
    _unique(value, "variable")
    return {item: item for item in value}


FromEnv = Annotated[
    dict[EnvVarName, EnvVarReference],
    BeforeValidator(_from_env_list),
    WithJsonSchema({
        "anyOf": [
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
        ],
        "description": "[VAR, ...] (key = variable of the same name) or {KEY: VAR}",
    }),
]


class Secret(_Model):
    """A Modal Secret. Values never appear in YAML: they are read at apply time."""

    from_env: FromEnv | None = Field(None, description="keys read from the process environment at apply time")
    from_dotenv: NonEmptyStr | None = Field(None, description="a dotenv file, relative to the declaring file")

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if self.from_env is not None and self.from_dotenv is not None:
            raise fail("use either `from_env` or `from_dotenv`, not both", field="from_dotenv")
        if self.from_env is None and self.from_dotenv is None:
            raise fail("a secret needs `from_env: [VAR, ...]` or `from_dotenv: PATH` (values never go in YAML)")
        if self.from_env is not None and not self.from_env:
            raise fail("from_env maps at least one key", field="from_env")
        return self

    @property
    def keys(self) -> list[str]:
        """The key names the secret will hold (sorted), when known without reading values."""
        return sorted(self.from_env or {})


class Snapshot(_Model):
    """A sandbox filesystem snapshot: start `image`, run `setup`, snapshot the filesystem."""

    image: RefName = Field(description="the image to start from")
    setup: list[NonEmptyStr] = Field(default_factory=list, description="shell commands run before the snapshot")
    volumes: Mounts = Field(default_factory=dict, description="mount path -> volume name")
    max_age: SnapshotAge | None = Field(None, description="re-made when older than this (seconds)")
    keep: Keep = Field(1, description="how many past snapshots are kept (older ones are deleted)")
    ttl: SnapshotTtl | None = Field(None, description="how long each snapshot lives (seconds), or none "
                                                      "(for ever); default: see the README")


#: Sandbox keys that need the network (refused with `block_network: true`).
class ExpectedUsage(_Model):
    """How much a sandbox profile is expected to run, to price it per month."""

    runs_per_day: RunsPerDay = Field(description="sandboxes started a day")
    duration: RunDuration = Field(description="how long each runs (seconds)")


NETWORK_KEYS = ("outbound_domain_allowlist", "outbound_cidr_allowlist", "inbound_cidr_allowlist",
                "encrypted_ports")


class Sandbox(_Model):
    """A profile for running agent code in a Modal Sandbox."""

    image: RefName = Field(description="an image or snapshot name")
    volumes: Mounts = Field(default_factory=dict, description="mount path -> volume name")
    secrets: list[RefName] = Field(default_factory=list, description="secret names")
    timeout: SandboxTimeout = Field(300, description="seconds; at most 24h (default 5m)")
    idle_timeout: IdleTimeout | None = Field(None, description="seconds idle before the sandbox stops")
    cpu: Cpu | None = Field(None, description="cores (Modal's default 0.125)")
    memory: Memory | None = Field(None, description="MiB (Modal's default 128MiB)")
    block_network: bool = Field(False, description="no network access")
    gpu: Gpu | None = Field(None, description="a GPU type, e.g. T4, A100-80GB, H100:2")
    region: Regions | None = Field(None, description="a region or regions, e.g. us-east")
    cloud: Literal[CLOUDS] | None = Field(None, description="aws | gcp | oci | auto")  # type: ignore[valid-type]
    outbound_domain_allowlist: list[Domain] | None = Field(
        None, description="the only domains the sandbox may connect to")
    outbound_cidr_allowlist: list[Cidr] | None = Field(
        None, description="the only address blocks the sandbox may connect to")
    inbound_cidr_allowlist: list[Cidr] | None = Field(
        None, description="the only address blocks that may reach the sandbox's ports")
    encrypted_ports: list[Port] = Field(default_factory=list, description="ports exposed through TLS tunnels")
    workdir: AbsPath | None = Field(None, description="the working directory, absolute")
    env: dict[EnvVarName, str] = Field(default_factory=dict, description="environment variables (not secrets)")
    include_oidc_identity_token: bool = Field(False, description="give the sandbox an OIDC identity token")
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, description="tags on each sandbox")
    expected: ExpectedUsage | None = Field(None, description="expected usage, priced per month by plan")

    @model_validator(mode="after")
    def _checks(self) -> Sandbox:
        _unique(self.secrets, "secret")
        if self.idle_timeout is not None and self.idle_timeout > self.timeout:
            raise fail("idle_timeout is longer than timeout; it would never apply", field="idle_timeout")
        if self.expected is not None and self.expected.duration > self.timeout:
            raise fail("expected.duration is longer than timeout: a sandbox is stopped at its timeout",
                       field="expected")
        for key in NETWORK_KEYS:
            items = getattr(self, key) or []
            if self.block_network and items:
                raise fail(f"`{key}` cannot be used with `block_network: true` (no network at all); "
                           "remove one of them", field=key)
            twice = sorted({str(v) for v in items if items.count(v) > 1})
            if twice:
                raise fail(f"{twice[0]} is listed twice", field=key)
        return self



class RetryPolicy(_Model):
    """Modal's retry policy. `retries: 3` means 3 retries, 1s apart (backoff 1.0), as in Modal."""

    max_retries: MaxRetries = Field(alias="max", description="retries after the first failure (0-10)")
    backoff_coefficient: Backoff = Field(2.0, alias="backoff", description="1.0 = fixed delay; up to 10")
    initial_delay: InitialDelay = Field(1, description="before the first retry (0-60s)")
    max_delay: MaxDelay = Field(60, description="cap on the delay between retries (1-60s)")


def _retries_count(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"max": value, "backoff": 1.0, "initial_delay": "1s"}
    if not isinstance(value, dict):
        raise fail("retries is a count (3) or a mapping {max: 3, backoff: 2.0, initial_delay: 1s, max_delay: 60s}")
    return value


Retries = Annotated[
    RetryPolicy,
    BeforeValidator(_retries_count),
    WithJsonSchema({
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 10},
            {
                "type": "object",
                "properties": {
                    "max": {"type": "integer", "minimum": 0, "maximum": 10},
                    "backoff": {"type": "number", "minimum": 1, "maximum": 10},
                    "initial_delay": {"type": "string"},
                    "max_delay": {"type": "string"},
                },
                "required": ["max"],
                "additionalProperties": False,
            },
        ]
    }),
]


class Cron(_Model):
    """A scheduled function: a cron string (with a timezone) or a period, running a task or command."""

    schedule: CronString | None = Field(None, description="a 5-field cron string, e.g. \"*/30 * * * *\"")
    timezone: TimeZone | None = Field(None, description="IANA timezone of `schedule` (default UTC)")
    every: Period | None = Field(None, description="a period such as 30m (modal.Period), instead of schedule")
    retries: Retries | None = Field(None, description="a count, or {max, backoff, initial_delay, max_delay}")
    timeout: FunctionTimeout = Field(300, description="seconds; 1s to 24h (default 5m)")
    image: RefName | None = Field(None, description="an image name (default: Modal's debian_slim)")
    volumes: Mounts = Field(default_factory=dict, description="mount path -> volume name")
    secrets: list[RefName] = Field(default_factory=list, description="secret names")
    task: Literal["refresh-snapshots", "reload-volumes"] | None = Field(None, description="a built-in task")
    command: Annotated[list[NonEmptyStr], CommandCheck] | None = Field(None, description="argv to run instead")
    cpu: Cpu | None = Field(None, description="cores (Modal's default 0.125)")
    memory: Memory | None = Field(None, description="MiB (Modal's default 128MiB)")
    gpu: Gpu | None = Field(None, description="a GPU type, e.g. T4, A100-80GB, H100:2")
    region: Regions | None = Field(None, description="a region or regions, e.g. us-east")
    max_containers: MaxContainers | None = Field(None, description="at most this many runs at once")

    @model_validator(mode="before")
    @classmethod
    def _default_timezone(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schedule" in data and "timezone" not in data and "every" not in data:
            return {**data, "timezone": "UTC"}
        return data

    @model_validator(mode="after")
    def _checks(self) -> Cron:
        if self.schedule is None and self.every is None:
            raise fail("a cron needs `schedule:` (a cron string) or `every:` (a period such as 30m)")
        if self.schedule is not None and self.every is not None:
            raise fail("use either `schedule` or `every`, not both", field="every")
        if self.every is not None and self.timezone is not None:
            raise fail("`timezone` only applies to `schedule`; a period has no timezone", field="timezone")
        if self.task is None and self.command is None:
            raise fail("a cron needs `task:` (refresh-snapshots | reload-volumes) or `command: [...]`")
        if self.task is not None and self.command is not None:
            raise fail("use either `task` or `command`, not both", field="command")
        _unique(self.secrets, "secret")
        return self

    @property
    def every_seconds(self) -> int | float | None:
        """The period of `every:` in seconds, or None for a cron string."""
        return None if self.every is None else parse_duration(self.every)


class Settings(_Model):
    """The Modal environment's own settings. A key that is not written is not managed: harvest
    neither reads it into the plan nor changes it."""

    web_suffix: WebSuffix | None = Field(None, description="the suffix of the environment's web URLs")
    max_concurrent_tasks: TaskCap | None = Field(None, description="containers and sandboxes at once")
    max_concurrent_gpus: GpuCap | None = Field(None, description="GPUs in use at once")
    budget: Budget | None = Field(None, description="US dollars per billing cycle, or none")
    image_builder_version: BuilderVersion | None = Field(None, description="e.g. \"2025.06\"")
    block_unauthenticated_resources: bool | None = Field(
        None, description="web endpoints and tunnels need authentication")

    def declared(self) -> dict[str, Any]:
        """The keys the file writes, with their values."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}


class Moved(_Model):
    """A rename: the object harvest manages as `from` is declared as `to` now. Apply renames it
    in place where Modal can (a volume keeps its files), else makes it again without loss."""

    source: MovedAddress = Field(alias="from", description="the old address, e.g. volume.old-name")
    to: MovedAddress = Field(description="the new address, declared in this file, e.g. volume.new-name")

    @model_validator(mode="after")
    def _same_kind(self) -> Moved:
        if self.source.split(".", 1)[0] != self.to.split(".", 1)[0]:
            raise fail("`from` and `to` name the same kind of object (volume.a -> volume.b)", field="to")
        if self.source == self.to:
            raise fail("`from` and `to` are the same address; nothing moves", field="to")
        return self


class Removed(_Model):
    """An object harvest stops managing: deleted (`destroy: true`) or kept as it is (`false`)."""

    address: RemovedAddress = Field(description="volume.NAME, secret.NAME or app.NAME, no longer in this file")
    destroy: bool = Field(description="true: apply deletes it (never a protected volume); "
                                      "false: harvest forgets it and leaves it in Modal")


class EnvironmentSpec(_Model):
    """One Modal environment's desired state: the merge of a file and the files it extends."""

    harvest: FormatVersion = Field(description="format version; must be 1")
    environment: EnvironmentName = Field(description="the Modal environment everything lives in")
    app: AppName = Field(description="the Modal app the generated code is deployed as")
    settings: Settings = Field(default_factory=lambda: Settings.model_validate({}),
                               description="the Modal environment's settings")
    images: dict[ImageName, Image] = Field(default_factory=dict)
    volumes: dict[VolumeName, Volume] = Field(default_factory=dict)
    secrets: dict[SecretName, Secret] = Field(default_factory=dict)
    snapshots: dict[SnapshotName, Snapshot] = Field(default_factory=dict)
    sandboxes: dict[SandboxName, Sandbox] = Field(default_factory=dict)
    crons: dict[CronName, Cron] = Field(default_factory=dict)
    moved: list[Moved] = Field(default_factory=list, description="renames: [{from: volume.old, to: volume.new}]")
    removed: list[Removed] = Field(default_factory=list,
                                   description="no longer managed: [{address: volume.old, destroy: false}]")

    def image_order(self) -> list[str]:
        """Image names with every image after the image it is layered on (declared order otherwise)."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done or name in path or name not in self.images:
                return
            parent = self.images[name].parent
            if parent is not None:
                visit(parent, (*path, name))
            done.append(name)

        for image in self.images:
            visit(image, ())
        return done


SECTIONS: dict[str, type[_Model]] = {
    "images": Image,
    "volumes": Volume,
    "secrets": Secret,
    "snapshots": Snapshot,
    "sandboxes": Sandbox,
    "crons": Cron,
}
"""Each resource section of a file and the model of one entry."""

LIFECYCLE: dict[str, type[_Model]] = {"moved": Moved, "removed": Removed}
"""The lists of lifecycle entries and the model of one entry."""

KINDS: dict[str, str] = {
    "image": "images",
    "volume": "volumes",
    "secret": "secrets",
    "snapshot": "snapshots",
    "sandbox": "sandboxes",
    "cron": "crons",
}
"""Address kinds (`volume.agent-state`) and their section."""
