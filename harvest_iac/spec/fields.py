"""Field types of the environment format: each a validator with a message a user can act on.

Every validator raises `fail(...)` (a pydantic custom error of type ``harvest``) whose message is
shown as is. `fail(message, field=...)` raised from a model validator names the sub-key the
problem is about, so the loader can point at it rather than at the whole mapping.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from harvest_iac.naming import NO_BUDGET, RESERVED_NAMES
from harvest_iac.spec import names
from harvest_iac.spec.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    UnitError,
    describe,
    format_duration,
    format_size,
    parse_duration,
    parse_size_mib,
)

FORMAT_VERSION = 1
MAX_TIMEOUT_S = 24 * 3600
CPU_MIN, CPU_MAX = 0.125, 64.0
MEMORY_MIN_MIB, MEMORY_MAX_MIB = 128, 336 * 1024
MAX_RETRIES = 10
BUILTIN_BASES = ("debian_slim", "micromamba", "registry", "dockerfile")
TASKS = ("refresh-snapshots", "reload-volumes")
_PYTHON = re.compile(r"^3\.(1[0-5])(\.[0-9]+|t)?$")


def fail(message: str, field: str | int | None = None) -> PydanticCustomError:
    """A validation error whose text is `message`; `field` names the sub-key it is about."""
    return PydanticCustomError("harvest", "{message}", {"message": message, "field": field})


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise fail(f"{what} must be a string, got {describe(value)}")
    return value


# -- names ------------------------------------------------------------------------------
def _object_name(kind: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        name = _str(value, f"a {kind} name")
        problem = names.object_name_problem(name, kind)
        if problem:
            raise fail(problem)
        if kind == "image" and name in BUILTIN_BASES:
            raise fail(f"{name!r} is a built-in base (from: {name}); give the image another name")
        if kind in ("volume", "secret") and name in RESERVED_NAMES:
            raise fail(f"{kind} name {name!r} is reserved by harvest (it keeps its state record and lock "
                       "under this name); choose another name")
        return name

    return check


_NAME_SCHEMA = WithJsonSchema({"type": "string", "pattern": names.OBJECT_NAME_PATTERN})
_UNRESERVED_NAME_SCHEMA = WithJsonSchema({"type": "string", "pattern": names.OBJECT_NAME_PATTERN,
                                          "not": {"enum": list(RESERVED_NAMES)}})
ImageName = Annotated[str, PlainValidator(_object_name("image")), _NAME_SCHEMA]
VolumeName = Annotated[str, PlainValidator(_object_name("volume")), _UNRESERVED_NAME_SCHEMA]
SecretName = Annotated[str, PlainValidator(_object_name("secret")), _UNRESERVED_NAME_SCHEMA]
SnapshotName = Annotated[str, PlainValidator(_object_name("snapshot")), _NAME_SCHEMA]
SandboxName = Annotated[str, PlainValidator(_object_name("sandbox")), _NAME_SCHEMA]
CronName = Annotated[str, PlainValidator(_object_name("cron")), _NAME_SCHEMA]
AppName = Annotated[str, PlainValidator(_object_name("app")), _NAME_SCHEMA]


#: What a `moved` entry can rename, and what a `removed` entry can stop managing.
MOVABLE_KINDS = ("volume", "secret", "cron", "sandbox", "image")
REMOVABLE_KINDS = ("volume", "secret", "app")


def _address(kinds: tuple[str, ...], key: str, why: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        address = _str(value, f"an address (such as {kinds[0]}.NAME)")
        kind, dot, name = address.partition(".")
        if not dot or kind not in kinds:
            raise fail(f"{address!r} is not an address `{key}` takes: write KIND.NAME with KIND one of "
                       f"{', '.join(kinds)}{why}")
        problem = names.object_name_problem(name, kind)
        if problem:
            raise fail(problem)
        return address

    return check


def _address_schema(kinds: tuple[str, ...]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": f"^({'|'.join(kinds)})\\.[A-Za-z0-9._-]{{1,64}}$"})


MovedAddress = Annotated[str, PlainValidator(_address(MOVABLE_KINDS, "moved", "")),
                         _address_schema(MOVABLE_KINDS)]
RemovedAddress = Annotated[
    str,
    PlainValidator(_address(REMOVABLE_KINDS, "removed", " (crons, sandbox profiles, images and snapshots "
                                                        "go away when they leave the YAML)")),
    _address_schema(REMOVABLE_KINDS),
]


def _reference(value: object) -> str:
    name = _str(value, "a reference")
    if not name:
        raise fail("a reference must not be empty")
    return name


RefName = Annotated[str, PlainValidator(_reference), WithJsonSchema({"type": "string", "minLength": 1})]


def _environment_name(value: object) -> str:
    name = _str(value, "environment")
    problem = names.environment_name_problem(name)
    if problem:
        raise fail(problem)
    return name


EnvironmentName = Annotated[
    str,
    PlainValidator(_environment_name),
    WithJsonSchema({"type": "string", "pattern": names.ENVIRONMENT_NAME_PATTERN}),
]


def _env_var_name(value: object) -> str:
    name = _str(value, "an environment variable name")
    if not names.is_env_var_name(name):
        raise fail(f"{name!r} is not a valid environment variable name: use letters, digits and '_', "
                   "not starting with a digit")
    return name


EnvVarName = Annotated[
    str, PlainValidator(_env_var_name), WithJsonSchema({"type": "string", "pattern": names.ENV_VAR_PATTERN})
]


def _env_var_reference(value: object) -> str:
    # The value is never echoed: a user who pasted a secret here must not see it in CI logs.
    if not isinstance(value, str) or not names.is_env_var_name(value):
        raise fail("from_env maps a key to the NAME of an environment variable to read at apply time "
                   "(like OPENAI_API_KEY); this value is not a variable name. Never write secret values "
                   "in YAML")
    return value


EnvVarReference = Annotated[
    str, PlainValidator(_env_var_reference), WithJsonSchema({"type": "string", "pattern": names.ENV_VAR_PATTERN})
]


def check_format_version(value: object) -> int:
    """The format version, or a `harvest` error when it is not one this harvest reads."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"`harvest:` is the format version and must be the number {FORMAT_VERSION}, "
                   f"got {describe(value)}")
    if value != FORMAT_VERSION:
        raise fail(f"format version {value} is not supported: this harvest reads version {FORMAT_VERSION} "
                   "(upgrade harvest to read newer files)")
    return value


FormatVersion = Annotated[int, PlainValidator(check_format_version), WithJsonSchema({"const": FORMAT_VERSION})]


# -- strings and paths ------------------------------------------------------------------
def _non_empty(value: object) -> str:
    text = _str(value, "this value")
    if not text.strip():
        raise fail("must not be empty")
    return text


NonEmptyStr = Annotated[str, PlainValidator(_non_empty), WithJsonSchema({"type": "string", "minLength": 1})]


def _abs_path(value: object) -> str:
    path = _str(value, "a path")
    if not path.startswith("/"):
        raise fail(f"{path!r} must be an absolute path (starting with /)")
    if "\n" in path or "\x00" in path:
        raise fail("a path must not contain newlines or NUL characters")
    return path


AbsPath = Annotated[str, PlainValidator(_abs_path), WithJsonSchema({"type": "string", "pattern": "^/"})]


def _mount_path(value: object) -> str:
    path = _abs_path(value)
    if path == "/":
        raise fail("a volume cannot be mounted at /; choose a directory such as /mnt/data")
    if path.endswith("/") or "//" in path or any(part in (".", "..") for part in path.split("/")):
        raise fail(f"mount path {path!r} must be a plain absolute path without '..', '//' or a trailing '/'")
    return path


def _container_path(value: object) -> str:
    path = _abs_path(value)
    if path == "/" or path.endswith("/") or "//" in path or any(part in (".", "..") for part in path.split("/")):
        raise fail(f"{path!r} must be a plain absolute path in the container, not / and without '..', '//' "
                   "or a trailing '/', such as /root/jobs")
    return path


ContainerPath = Annotated[str, PlainValidator(_container_path), WithJsonSchema({"type": "string", "pattern": "^/."})]
MountPath = Annotated[str, PlainValidator(_mount_path), WithJsonSchema({"type": "string", "pattern": "^/."})]


def _module_name(value: object) -> str:
    name = _str(value, "a module name")
    if not name.isidentifier() or not name.isascii():
        raise fail(f"{name!r} is not a top-level Python module or package name (as in `import jobs`); "
                   "list the package, not a path or a dotted name")
    return name


ModuleName = Annotated[str, PlainValidator(_module_name),
                       WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"})]


def _python_version(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        raise fail(f"write the Python version as a quoted string, like \"3.11\" (unquoted, YAML reads it as "
                   f"the number {value!r})")
    version = _str(value, "python")
    if not _PYTHON.match(version):
        raise fail(f"Python {version!r} is not supported by Modal's image builder: use \"3.10\" to \"3.15\"")
    return version


PythonVersion = Annotated[
    str, PlainValidator(_python_version), WithJsonSchema({"type": "string", "pattern": r"^3\.1[0-5](\.[0-9]+|t)?$"})
]


# -- numbers, durations, sizes ----------------------------------------------------------
def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{what} must be a number, got {describe(value)}")
    if not math.isfinite(value):
        raise fail(f"{what} must be a finite number")
    return value


def _cpu(value: object) -> float:
    cores = _number(value, "cpu")
    if not CPU_MIN <= cores <= CPU_MAX:
        raise fail(f"cpu {cores:g} is outside Modal's range of {CPU_MIN:g} to {CPU_MAX:g} cores")
    return float(cores)


Cpu = Annotated[float, PlainValidator(_cpu), WithJsonSchema({"type": "number", "minimum": CPU_MIN, "maximum": CPU_MAX})]


def _memory(value: object) -> int:
    try:
        mib = parse_size_mib(value)
    except UnitError as exc:
        raise fail(str(exc)) from None
    if not MEMORY_MIN_MIB <= mib <= MEMORY_MAX_MIB:
        raise fail(f"memory {value} is outside Modal's range of {format_size(MEMORY_MIN_MIB)} to "
                   f"{format_size(MEMORY_MAX_MIB)}")
    return mib


Memory = Annotated[int, PlainValidator(_memory), WithJsonSchema({"type": "string", "pattern": SIZE_PATTERN})]


def _duration(what: str, low: float, high: float | None, limit: str = "Modal's limit") -> Callable[[object], int | float]:
    def check(value: object) -> int | float:
        try:
            seconds = parse_duration(value)
        except UnitError as exc:
            raise fail(str(exc)) from None
        if seconds < low:
            raise fail(f"{what} {value} is under the minimum of {format_duration(low) if low else '0s'}")
        if high is not None and seconds > high:
            raise fail(f"{what} {value} is over {limit} of {format_duration(high)}")
        return seconds

    return check


_DURATION_SCHEMA = WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN})
FunctionTimeout = Annotated[int | float, PlainValidator(_duration("timeout", 1, MAX_TIMEOUT_S)), _DURATION_SCHEMA]
SandboxTimeout = Annotated[int | float, PlainValidator(_duration("timeout", 1, MAX_TIMEOUT_S)), _DURATION_SCHEMA]
IdleTimeout = Annotated[int | float, PlainValidator(_duration("idle_timeout", 1, MAX_TIMEOUT_S)), _DURATION_SCHEMA]
RunDuration = Annotated[int | float, PlainValidator(_duration("duration", 1, MAX_TIMEOUT_S)), _DURATION_SCHEMA]
SnapshotAge = Annotated[int | float, PlainValidator(_duration("max_age", 60, None)), _DURATION_SCHEMA]


def _snapshot_ttl(value: object) -> int | float | str:
    if value == "none":
        return "none"
    try:
        seconds = parse_duration(value)
    except UnitError as exc:
        raise fail(f"{exc}; or `none` to keep snapshots for ever") from None
    if seconds < 3600:
        raise fail(f"ttl {value} is under the minimum of 1h")
    return seconds


SnapshotTtl = Annotated[
    int | float | str, PlainValidator(_snapshot_ttl),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": "none"}]}),
]
InitialDelay = Annotated[
    int | float, PlainValidator(_duration("initial_delay", 0, 60, "Modal's retry limit")), _DURATION_SCHEMA
]
MaxDelay = Annotated[int | float, PlainValidator(_duration("max_delay", 1, 60, "Modal's retry limit")), _DURATION_SCHEMA]


def _period(value: object) -> str:
    try:
        seconds = parse_duration(value)
    except UnitError as exc:
        raise fail(str(exc)) from None
    if seconds < 1:
        raise fail(f"every {value} is too short: the shortest period is 1s")
    return str(value)


Period = Annotated[str, PlainValidator(_period), WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN})]


def _volume_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2):
        shown = repr(value) if isinstance(value, int | str) and len(repr(value)) < 20 else describe(value)
        raise fail(f"expected 1 or 2, got {shown}")
    return value


VolumeVersion = Annotated[int, PlainValidator(_volume_version), WithJsonSchema({"enum": [1, 2]})]


def _bounded_int(what: str, low: int, high: int, note: str = "") -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"{what} must be a whole number, got {describe(value)}")
        if not low <= value <= high:
            raise fail(f"{what} {value} is outside {low} to {high}{note}")
        return value

    return check


MaxRetries = Annotated[
    int,
    PlainValidator(_bounded_int("retries", 0, MAX_RETRIES, " (Modal allows at most 10 retries)")),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_RETRIES}),
]
Keep = Annotated[
    int, PlainValidator(_bounded_int("keep", 1, 100)), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100})
]


def _backoff(value: object) -> float:
    coefficient = _number(value, "backoff")
    if not 1.0 <= coefficient <= 10.0:
        raise fail(f"backoff {coefficient:g} is outside Modal's range of 1.0 (fixed delay) to 10.0")
    return float(coefficient)


Backoff = Annotated[float, PlainValidator(_backoff), WithJsonSchema({"type": "number", "minimum": 1, "maximum": 10})]


# -- hardware, placement and network ---------------------------------------------------------
#: Modal's GPU types (`gpu="T4"`, `"H100:8"`); `!` and `+` pin an exact H100 / B200 variant.
GPU_TYPES = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "H100", "H100!",
             "H200", "B200", "B200+")
MAX_GPU_COUNT = 8
CLOUDS = ("aws", "gcp", "oci", "auto")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_TAG = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


def _gpu(value: object) -> str:
    text = _str(value, "gpu")
    name, colon, count = text.partition(":")
    if name.upper() not in GPU_TYPES:
        import difflib

        close = difflib.get_close_matches(name.upper(), GPU_TYPES, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fail(f"unknown GPU {name!r}{hint} (Modal's GPUs: {', '.join(GPU_TYPES)}, with an optional "
                   f":count such as \"A100:2\")")
    if colon and not (count.isdigit() and 1 <= int(count) <= MAX_GPU_COUNT):
        raise fail(f"GPU count {count!r} must be a whole number from 1 to {MAX_GPU_COUNT} (e.g. \"{name}:2\")")
    return f"{name.upper()}{colon}{count}"


Gpu = Annotated[str, PlainValidator(_gpu), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9-]+[!+]?(:[1-8])?$"})]


def _regions(value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise fail("region is a region name (\"us-east\") or a non-empty list of them")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not _REGION.match(item):
            raise fail(f"region {item!r} is not a Modal region name such as \"us-east\" or \"eu-west-1\"",
                       field=None if isinstance(value, str) else index)
    return list(items)


Regions = Annotated[
    list[str], PlainValidator(_regions),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}),
]


def _domain(value: object) -> str:
    domain = _str(value, "a domain")
    if not _DOMAIN.match(domain):
        raise fail(f"{domain!r} is not a domain name such as \"api.openai.com\" or \"*.github.com\" "
                   "(lowercase, no scheme, port or path)")
    return domain


Domain = Annotated[str, PlainValidator(_domain), WithJsonSchema({"type": "string", "pattern": _DOMAIN.pattern})]


def _cidr(value: object) -> str:
    import ipaddress

    text = _str(value, "a CIDR block")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise fail(f"{text!r} is not a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\" ({exc})") from None
    return str(network)


Cidr = Annotated[str, PlainValidator(_cidr), WithJsonSchema({"type": "string"})]
Port = Annotated[int, PlainValidator(_bounded_int("port", 1, 65535)),
                 WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535})]


def _tag(what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _str(value, f"a tag {what}")
        if not _TAG.match(text):
            raise fail(f"tag {what} {text!r} must be 1-63 characters of letters, digits, '.', '_' and '-'")
        return text

    return check


_TAG_SCHEMA = WithJsonSchema({"type": "string", "pattern": _TAG.pattern})
TagKey = Annotated[str, PlainValidator(_tag("key")), _TAG_SCHEMA]
TagValue = Annotated[str, PlainValidator(_tag("value")), _TAG_SCHEMA]


# -- environment settings -----------------------------------------------------------------
INT32_MAX = 2**31 - 1
_WEB_SUFFIX = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$")
_BUILDER_VERSION = re.compile(r"^([0-9]{4}\.[0-9]{2}|PREVIEW)$")
KNOWN_BUILDER_VERSIONS = ("2023.12", "2024.04", "2024.10", "2025.06", "PREVIEW")


def _web_suffix(value: object) -> str:
    suffix = _str(value, "web_suffix")
    if not _WEB_SUFFIX.match(suffix):
        raise fail(f"web_suffix {suffix!r} is not valid in a URL: use up to 63 lowercase letters, digits "
                   "and '-', not starting or ending with '-' (or \"\" for none)")
    return suffix


WebSuffix = Annotated[str, PlainValidator(_web_suffix),
                      WithJsonSchema({"type": "string", "pattern": _WEB_SUFFIX.pattern})]
MaxContainers = Annotated[int, PlainValidator(_bounded_int("max_containers", 1, INT32_MAX)),
                          WithJsonSchema({"type": "integer", "minimum": 1, "maximum": INT32_MAX})]
_CAP_SCHEMA = WithJsonSchema({"type": "integer", "minimum": 0, "maximum": INT32_MAX})
TaskCap = Annotated[int, PlainValidator(_bounded_int("max_concurrent_tasks", 0, INT32_MAX)), _CAP_SCHEMA]
GpuCap = Annotated[int, PlainValidator(_bounded_int("max_concurrent_gpus", 0, INT32_MAX)), _CAP_SCHEMA]


def _budget(value: object) -> float | str:
    if value == NO_BUDGET:
        return NO_BUDGET
    if isinstance(value, str):
        raise fail(f"budget must be a number of US dollars per billing cycle (e.g. 500), or `none` for no "
                   f"budget; got {describe(value)}")
    dollars = _number(value, "budget")
    if dollars <= 0:
        raise fail(f"budget {dollars:g} must be a positive number of US dollars per billing cycle, e.g. 500 "
                   "(or `none` for no budget)")
    return float(dollars)


def _runs_per_day(value: object) -> float:
    runs = _number(value, "runs_per_day")
    if runs < 0:
        raise fail(f"runs_per_day {runs:g} must not be negative")
    return runs


RunsPerDay = Annotated[float, PlainValidator(_runs_per_day), WithJsonSchema({"type": "number", "minimum": 0})]
Budget = Annotated[float | str, PlainValidator(_budget), WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": NO_BUDGET}]})]


def _builder_version(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        raise fail(f"write the image builder version as a quoted string, like \"2025.06\" (unquoted, YAML "
                   f"reads it as the number {value!r})")
    version = _str(value, "image_builder_version")
    if not _BUILDER_VERSION.match(version):
        raise fail(f"image_builder_version {version!r} is not a Modal image builder version: use YYYY.MM "
                   f"(known: {', '.join(KNOWN_BUILDER_VERSIONS)})")
    return version


BuilderVersion = Annotated[str, PlainValidator(_builder_version),
                           WithJsonSchema({"type": "string", "pattern": _BUILDER_VERSION.pattern})]


# -- crons ------------------------------------------------------------------------------
def _cron_string(value: object) -> str:
    expression = _str(value, "schedule")
    fields = expression.split()
    if len(fields) != 5:
        count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
        raise fail(f"schedule {expression!r} has {count}; a cron string has 5: "
                   "minute hour day-of-month month day-of-week, e.g. \"*/30 * * * *\"")
    from croniter import croniter  # only files with crons pay for it

    if not croniter.is_valid(expression):
        raise fail(f"schedule {expression!r} is not a valid cron string "
                   "(minute hour day-of-month month day-of-week, e.g. \"*/30 * * * *\")")
    return expression


CronString = Annotated[str, PlainValidator(_cron_string), WithJsonSchema({"type": "string"})]


@functools.cache
def _all_timezones() -> tuple[str, ...]:
    from zoneinfo import available_timezones

    return tuple(sorted(available_timezones()))


def _timezone(value: object) -> str:
    name = _str(value, "timezone")
    try:
        if not name or name.startswith("/") or ".." in name:
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        import difflib

        close = difflib.get_close_matches(name, _all_timezones(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (an IANA name such as UTC or Europe/Paris)"
        raise fail(f"unknown timezone {name!r}{hint}") from None
    return name


TimeZone = Annotated[str, PlainValidator(_timezone), WithJsonSchema({"type": "string"})]


def _command(value: object) -> object:
    if isinstance(value, str):
        raise fail("write command as a list of arguments, e.g. [\"python\", \"-m\", \"jobs.refresh\"]")
    if isinstance(value, list) and not value:
        raise fail("command must not be empty")
    return value


CommandCheck = BeforeValidator(_command)
