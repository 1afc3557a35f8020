"""A deployed function as the runtime runs it: its `FunctionConfig` (timeout, retries,
autoscaling, concurrency) and, per container, its `ContainerPlan`: the `ContainerArguments`
Modal's workers give a container, the deployed code from its mounts, the image's env and
workdir, the secrets' values and Modal's container variables.

Protocol only: this module reads the stored definitions and speaks protobuf; the runtime
gets plain values and opaque bytes.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.auth import TASK_TOKEN_HEADER, issue_container_token
from harvest_iac.emulator.runtime.function_containers import CODE_DIR, ContainerPlan
from harvest_iac.emulator.runtime.scheduler import (
    DEFAULT_SCALEDOWN_S,
    DEFAULT_TIMEOUT_S,
    FunctionConfig,
    Resources,
    RetryPolicy,
)
from harvest_iac.emulator.runtime.schedules import Cron, Period, Schedule
from harvest_iac.emulator.services.apps import STOPPED, app_functions, app_row
from harvest_iac.emulator.services.classes import app_classes, binding
from harvest_iac.emulator.services.container_volumes import ContainerVolumes
from harvest_iac.emulator.services.functions import (
    function_data,
    function_handle_metadata,
)
from harvest_iac.emulator.services.images import layers_for
from harvest_iac.emulator.services.limits import budget_reached
from harvest_iac.emulator.services.mounts import mount_files
from harvest_iac.emulator.services.named import environment_name
from harvest_iac.emulator.services.secrets import secret_values_or_404

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

log = logging.getLogger("harvest.emulator")
def retry_policy(policy: api_pb2.FunctionRetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        retries=policy.retries,
        backoff_coefficient=policy.backoff_coefficient or 1.0,
        initial_delay_s=policy.initial_delay_ms / 1000.0,
        max_delay_s=(policy.max_delay_ms or 60_000) / 1000.0,
    )


def function_config(emu: Emulator, function_id: str) -> FunctionConfig:
    """How to run what `function_id` (a function, or a bound class instance) serves now."""
    bound = binding(emu, function_id)
    if bound is None:
        return _config(emu, function_id, function_id, b"", api_pb2.FunctionOptions())
    base_id, params, options = bound
    return _config(emu, function_id, base_id, params, options)


def _config(emu: Emulator, pool_key: str, function_id: str, serialized_params: bytes,
            options: api_pb2.FunctionOptions) -> FunctionConfig:
    row = emu.store.one("SELECT app_id, env_id, name, definition_id FROM functions WHERE id = ?", function_id)
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"Function '{function_id}' not found")
    if not row["definition_id"]:
        raise GRPCError(Status.FAILED_PRECONDITION, f"Function '{row['name']}' is not deployed")
    app = app_row(emu, str(row["app_id"]))
    if app["state"] == STOPPED:
        raise GRPCError(Status.FAILED_PRECONDITION, f"App '{app['id']}' is stopped")
    definition_id = str(row["definition_id"])
    fn = with_options(_definition(function_data(emu, definition_id)), options)
    scaling = fn.autoscaler_settings
    bound = serialized_params + options.SerializeToString(deterministic=True)
    version = definition_id + hashlib.sha256(bound).hexdigest()[:16]

    def plan(task_id: str, root: Path) -> ContainerPlan:
        return container_plan(emu, task_id, root, pool_key, function_id, fn, serialized_params)

    return FunctionConfig(
        key=pool_key, app_id=str(row["app_id"]), function_id=function_id, name=str(row["name"]),
        version=version, plan=plan,
        timeout_s=float(fn.timeout_secs or DEFAULT_TIMEOUT_S),
        startup_timeout_s=float(fn.startup_timeout_secs or fn.timeout_secs or DEFAULT_TIMEOUT_S),
        retry=retry_policy(fn.retry_policy) if fn.HasField("retry_policy") else RetryPolicy(),
        min_containers=scaling.min_containers or fn.warm_pool_size,
        max_containers=scaling.max_containers or fn.concurrency_limit or None,
        scaledown_window_s=float(scaling.scaledown_window or fn.task_idle_timeout_secs
                                 or DEFAULT_SCALEDOWN_S),
        concurrency=max(fn.max_concurrent_inputs, fn.target_concurrent_inputs, 1),
        single_use=fn.single_use_containers or fn.max_inputs == 1,
        environment_id=str(row["env_id"]), resources=resources_of(fn.resources),
    )


def resources_of(res: api_pb2.Resources) -> Resources:
    """What each container asks for (Modal's default where the definition says nothing)."""
    gpu = res.gpu_config
    return Resources(cpu=res.milli_cpu / 1000 if res.milli_cpu else None, memory_mib=res.memory_mb or None,
                     gpu=f"{gpu.gpu_type}:{gpu.count}" if gpu.count else None)


def refresh_app(emu: Emulator, app_id: str) -> None:
    """An app was (re)deployed or rolled back: functions with `min_containers` get their
    warm containers, running pools switch to the definitions now served, and its schedules
    follow."""
    keys = {function_id for function_id, _ in app_functions(app_row(emu, app_id)).values()}
    keys |= {key for key, pool in emu.runtime.pools.items() if pool.config.app_id == app_id}
    for key in sorted(keys):
        config = function_config(emu, key)
        if config.min_containers or key in emu.runtime.pools:
            emu.runtime.configure(config)


    refresh_schedules(emu, app_id)


def refresh_deployed_apps(emu: Emulator) -> None:
    """At start: warm the deployed apps' `min_containers`, load their schedules."""
    rows = emu.store.all("SELECT id FROM apps WHERE state = ?", api_pb2.APP_STATE_DEPLOYED)
    for row in rows:
        try:
            refresh_app(emu, str(row["id"]))
        except GRPCError as exc:  # one broken app must not keep the local Modal from starting
            log.warning("app %s not started: %s", row["id"], exc.message)


# -- schedules ----------------------------------------------------------------------------
def schedule_of(schedule: api_pb2.Schedule) -> Schedule | None:
    which = schedule.WhichOneof("schedule_oneof")
    if which == "cron":
        return Cron(schedule.cron.cron_string, schedule.cron.timezone or "UTC")
    if which == "period":
        p = schedule.period
        return Period(years=p.years, months=p.months, weeks=p.weeks, days=p.days, hours=p.hours,
                      minutes=p.minutes, seconds=p.seconds)
    return None


def refresh_schedules(emu: Emulator, app_id: str) -> None:
    """The schedules a deployed app's functions have now (none unless deployed)."""
    app = app_row(emu, app_id)
    found: dict[str, tuple[str, Schedule]] = {}
    if app["state"] == api_pb2.APP_STATE_DEPLOYED:
        for name, (function_id, definition_id) in app_functions(app).items():
            data = function_data(emu, definition_id)
            schedule = schedule_of(data.schedule) if data.HasField("schedule") else None
            if schedule is not None:
                found[function_id] = (name, schedule)
    emu.runtime.schedules.set_app(app_id, found)


def run_scheduled(emu: Emulator, function_id: str) -> None:
    """A tick: call the function with no arguments, as a spawned call (none while the
    environment is over its budget)."""
    config = function_config(emu, function_id)
    refused = budget_reached(emu, config.environment_id)
    if refused:
        log.warning("scheduled run of %s skipped: %s", config.name, refused)
        return
    emu.runtime.configure(config)
    call = emu.runtime.new_call(config.key, config.app_id, config.function_id,
                                api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC)
    empty = api_pb2.FunctionInput(data_format=api_pb2.DATA_FORMAT_PICKLE)
    emu.runtime.add_inputs(call, [(0, empty.SerializeToString())])


# FunctionOptions field -> the Function field (and the autoscaler setting) it overrides.
_OPTION_FIELDS = {
    "timeout_secs": ("timeout_secs", ""),
    "concurrency_limit": ("concurrency_limit", "max_containers"),
    "warm_pool_size": ("warm_pool_size", "min_containers"),
    "task_idle_timeout_secs": ("task_idle_timeout_secs", "scaledown_window"),
    "buffer_containers": ("_experimental_buffer_containers", "buffer_containers"),
    "max_concurrent_inputs": ("max_concurrent_inputs", ""),
    "target_concurrent_inputs": ("target_concurrent_inputs", ""),
    "batch_max_size": ("batch_max_size", ""),
    "batch_linger_ms": ("batch_linger_ms", ""),
}


def with_options(fn: api_pb2.Function, options: api_pb2.FunctionOptions) -> api_pb2.Function:
    """The definition with `with_options(...)` applied (what the container sees too)."""
    merged = api_pb2.Function()
    merged.CopyFrom(fn)
    for option, (field, scaling) in _OPTION_FIELDS.items():
        if options.HasField(option):  # type: ignore[arg-type]
            setattr(merged, field, getattr(options, option))
            if scaling:
                setattr(merged.autoscaler_settings, scaling, getattr(options, option))
    for message in ("retry_policy", "resources"):
        if options.HasField(message):
            getattr(merged, message).CopyFrom(getattr(options, message))
    if options.replace_secret_ids:
        merged.ClearField("secret_ids")
        merged.secret_ids.extend(options.secret_ids)
    if options.replace_volume_mounts:
        merged.ClearField("volume_mounts")
        merged.volume_mounts.extend(options.volume_mounts)
    return merged


def _definition(data: api_pb2.FunctionData) -> api_pb2.Function:
    if not data.ranked_functions:
        raise GRPCError(Status.FAILED_PRECONDITION, "The function has no definition to run")
    fn: api_pb2.Function = data.ranked_functions[0].function
    return fn


# -- the container ------------------------------------------------------------------------
def container_plan(emu: Emulator, task_id: str, root: Path, pool_key: str, function_id: str,
                   fn: api_pb2.Function, serialized_params: bytes) -> ContainerPlan:
    row = emu.store.one("SELECT app_id, env_id FROM functions WHERE id = ?", function_id)
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"Function '{function_id}' not found")
    env_name = environment_name(emu.store, str(row["env_id"]))
    arguments = api_pb2.ContainerArguments(
        task_id=task_id, function_id=pool_key, app_id=row["app_id"], function_def=fn,
        app_layout=app_layout(emu, str(row["app_id"]), fn), environment_name=env_name,
        serialized_params=serialized_params,
    )
    image_env, workdir = image_settings(emu, fn.image_id)
    layers = layers_for(emu, fn.image_id)[0] if fn.image_id else []
    env = {
        **image_env,
        "MODAL_SERVER_URL": emu.url,
        "MODAL_IS_REMOTE": "1",
        "MODAL_TASK_ID": task_id,
        "MODAL_ENVIRONMENT": env_name,
        "MODAL_IMAGE_ID": fn.image_id,
        "MODAL_OVERRIDE_HEADERS": f"{TASK_TOKEN_HEADER}:{issue_container_token(emu.token_secret, task_id)}",
    }
    for secret_id in fn.secret_ids:
        env.update(secret_values_or_404(emu.store, secret_id))
    volumes = ContainerVolumes.open(emu, task_id, root, fn.volume_mounts)
    return ContainerPlan(
        arguments=arguments.SerializeToString(), files=code_files(emu, fn), env=env,
        workdir=workdir or CODE_DIR, layers=layers, network=not fn.block_network,
        control_socket=emu.control_socket, mounts=volumes.mounts(), fill=volumes.fill,
        finish=volumes.close,
    )


def code_files(emu: Emulator, fn: api_pb2.Function) -> dict[str, Path]:
    """Container path -> the stored file, for every file of the function's mounts."""
    files: dict[str, Path] = {}
    for mount_id in fn.mount_ids:
        for entry in mount_files(emu, mount_id):
            files[str(entry["filename"])] = emu.store.blob_path(str(entry["sha256_hex"]))
    return files


def app_layout(emu: Emulator, app_id: str, fn: api_pb2.Function) -> api_pb2.AppLayout:
    """The app's functions and classes (the container hydrates those its module defines),
    and every object the function depends on."""
    layout = api_pb2.AppLayout()
    known: set[str] = set()
    for name, (fid, definition_id) in sorted(app_functions(app_row(emu, app_id)).items()):
        layout.function_ids[name] = fid
        layout.objects.append(api_pb2.Object(
            object_id=fid, function_handle_metadata=function_handle_metadata(emu, fid, definition_id),
        ))
        known.add(fid)
    for name, class_id in sorted(app_classes(emu, app_id).items()):
        layout.class_ids[name] = class_id
        layout.objects.append(
            api_pb2.Object(object_id=class_id, class_handle_metadata=api_pb2.ClassHandleMetadata())
        )
        known.add(class_id)
    for dep in fn.object_dependencies:
        if dep.object_id in known:
            continue
        known.add(dep.object_id)
        obj = api_pb2.Object(object_id=dep.object_id)
        if dep.object_id.startswith("fu-"):
            obj.function_handle_metadata.CopyFrom(function_handle_metadata(emu, dep.object_id))
        layout.objects.append(obj)
    return layout


def image_settings(emu: Emulator, image_id: str) -> tuple[dict[str, str], str]:
    """The env (`ENV` lines without shell expansion) and workdir an image's recipe sets,
    base images first."""
    chain: list[str] = []
    todo = [image_id] if image_id else []
    while todo:
        current = todo.pop()
        if current in chain:
            continue
        chain.append(current)
        row = emu.store.one("SELECT parent_ids FROM images WHERE id = ?", current)
        todo.extend(p for p in str(row["parent_ids"] if row else "").split(",") if p)
    env: dict[str, str] = {}
    workdir = ""
    for current in reversed(chain):
        row = emu.store.one("SELECT definition, workdir FROM images WHERE id = ?", current)
        if row is None:
            continue
        workdir = str(row["workdir"]) or workdir
        if row["definition"]:
            env.update(_env_lines(api_pb2.Image.FromString(row["definition"]).dockerfile_commands))
    return env, workdir


def _env_lines(commands: Iterable[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in commands:
        keyword, _, rest = command.strip().partition(" ")
        key, sep, raw = rest.partition("=")
        if keyword.upper() != "ENV" or not sep or "$" in raw:
            continue
        try:
            env[key.strip()] = " ".join(shlex.split(raw))
        except ValueError:
            continue
    return env
