"""The only module that talks to Modal (real, or the local Modal through MODAL_SERVER_URL).

Reads are raw RPCs on a client of our own, made concurrently in one asyncio loop, so the
number of sequential round trips does not grow with the number of resources (apart from
Modal's list pages of 100). Each read is an RPC plus a pure converter (`*_from_proto`),
tested on hand-built protos. Modal's SDK moves between releases: keep every use of it here,
and map its exceptions to harvest's here (`sdk_call`), so none escapes as a traceback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from harvest_iac.errors import BackendError, HarvestError, TargetError
from harvest_iac.modal_rpc import (
    AlreadyExists,
    RpcClient,
    credentials_from_env,
    http_get,
    http_put,
    one_line,
    unreachable,
)
from harvest_iac.naming import FUNCTION_KINDS, NO_BUDGET, function_tag
from harvest_iac.live import (
    Live,
    LiveApp,
    LiveBilling,
    LiveDeployment,
    LiveEnvironment,
    LiveFunction,
    LiveImage,
    LiveSecret,
    LiveVolume,
)
from harvest_iac.state import LOCK_DICT, STATE_VOLUME, StateRecord, state_path
from harvest_iac.targets import LOCAL_DATA_DIR, TargetChoice

T = TypeVar("T")

#: Names harvest itself owns in a Modal environment (never reported as unmanaged).
INTERNAL_VOLUMES = frozenset({STATE_VOLUME})
DEPLOY_TIMEOUT_S = 900


# -- pure converters (protos in, frozen live models out) -------------------------------
def volume_from_proto(item: Any) -> LiveVolume:
    version = int(item.metadata.version) if item.HasField("metadata") else 0
    # VOLUME_FS_VERSION_UNSPECIFIED (0) and V1 (1) both mean a v1 volume
    return LiveVolume(
        name=item.label,
        object_id=item.volume_id,
        version=2 if version == 2 else 1,
        created_at=float(item.created_at),
    )


def secret_from_proto(item: Any) -> LiveSecret:
    keys: tuple[str, ...] = ()
    if item.HasField("metadata"):
        keys = tuple(sorted(item.metadata.keys))
    return LiveSecret(name=item.label, object_id=item.secret_id, keys=keys,
                      created_at=float(item.created_at))


#: How EnvironmentUpdate spells `block_unauthenticated_resources` (an enum, not a bool).
_BLOCK_UNAUTHENTICATED = {True: 2, False: 3}  # ..._BLOCK, ..._ALLOW


def environment_from_proto(item: Any) -> LiveEnvironment:
    """An EnvironmentListItem to the environment's settings (the keys of `spec.Settings`)."""

    def optional(name: str) -> Any:
        return getattr(item, name) if item.HasField(name) else None

    return LiveEnvironment(
        environment_id=item.environment_id,
        settings={
            "web_suffix": item.webhook_suffix,
            "max_concurrent_tasks": optional("max_concurrent_tasks"),
            "max_concurrent_gpus": optional("max_concurrent_gpus"),
            "budget": optional("cycle_budget_dollars"),
            "image_builder_version": optional("image_builder_version"),
            "block_unauthenticated_resources": optional("block_unauthenticated_resources"),
        },
        current_cycle_usage=float(item.current_cycle_usage),
    )


def schedule_string(schedule: Any) -> str | None:
    """`Cron('*/30 * * * *', UTC)` / `Period(minutes=30)`, as `Function.info()` shows it."""
    which = schedule.WhichOneof("schedule_oneof")
    if which is None:
        return None
    if which == "cron":
        return f"Cron({schedule.cron.cron_string!r}, {schedule.cron.timezone or 'UTC'})"
    p = schedule.period
    if not (p.years or p.months):  # a fixed length: in seconds, however it was written
        seconds = (((p.weeks * 7 + p.days) * 24 + p.hours) * 60 + p.minutes) * 60 + p.seconds
        return f"Period(seconds={_whole(seconds)})"
    parts = [f"{unit}={_whole(getattr(p, unit))}" for unit in
             ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
             if getattr(p, unit)]
    return f"Period({', '.join(parts)})"


def _whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def function_from_proto(
    name: str,
    function_id: str,
    data: Any,
    volume_names: dict[str, str],
    secret_names: dict[str, str],
) -> LiveFunction:
    """A FunctionData (FunctionGet's answer) to a LiveFunction, ids mapped to names."""
    fn = data.ranked_functions[0].function if len(data.ranked_functions) else None
    schedule = schedule_string(data.schedule) if data.HasField("schedule") else None
    if fn is None:
        return LiveFunction(name=name, object_id=function_id, schedule=schedule,
                            max_retries=None, timeout=int(data.timeout_secs), cpu=None,
                            memory_mib=None, image_id=None)
    res = fn.resources
    retries = fn.retry_policy.retries if fn.HasField("retry_policy") else None
    return LiveFunction(
        name=name,
        object_id=function_id,
        schedule=schedule,
        max_retries=retries,
        timeout=int(fn.timeout_secs or data.timeout_secs),
        cpu=res.milli_cpu / 1000 if res.milli_cpu else None,
        memory_mib=int(res.memory_mb) if res.memory_mb else None,
        image_id=fn.image_id or None,
        volumes={vm.mount_path: volume_names.get(vm.volume_id, vm.volume_id)
                 for vm in fn.volume_mounts},
        secrets=tuple(sorted(secret_names.get(s, s) for s in fn.secret_ids)),
        block_network=bool(fn.block_network),
        gpu=f"{res.gpu_config.gpu_type}:{res.gpu_config.count}" if res.gpu_config.count else None,
        region=list(fn.scheduler_placement.regions) or None,
        max_containers=(fn.autoscaler_settings.max_containers
                        if fn.autoscaler_settings.HasField("max_containers") else None),
    )


# -- the connection --------------------------------------------------------------------
#: The RPC client (`modal_rpc.RpcClient`): `await conn.call(method, request)`; NOT_FOUND -> None.
Connection = RpcClient


async def open_connection() -> RpcClient:
    """A lean client of our own (no `import modal`), from the same credentials the modal
    client would use (MODAL_SERVER_URL / MODAL_TOKEN_ID / MODAL_TOKEN_SECRET, or the profile)."""
    return await RpcClient(credentials_from_env()).open()


# -- reading live state ----------------------------------------------------------------
@dataclass(frozen=True)
class ReadRequest:
    """What to read for one environment file."""

    environment: str
    app: str
    function_names: tuple[str, ...] = ()  # function tags the spec expects in the app
    image_ids: tuple[str, ...] = ()  # images to check for existence (beyond the state's)


async def _paged(conn: Connection, method: str, request_cls: Any, environment: str) -> list[Any]:
    from modal_proto import api_pb2

    items: list[Any] = []
    created_before = 0.0
    while True:
        pagination = api_pb2.ListPagination(max_objects=100, created_before=created_before)
        resp = await conn.call(method, request_cls(environment_name=environment,
                                                    pagination=pagination))
        if resp is None:
            return items
        page = list(resp.items)
        items.extend(page)
        if len(page) < 100:
            return items
        last = page[-1]
        created_before = float(last.metadata.creation_info.created_at or last.created_at)


async def read_state(conn: Connection, environment: str, app: str) -> StateRecord | None:
    """harvest's state record of `app` in `environment`, or None when there is none."""
    from modal_proto import api_pb2

    vol = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=STATE_VOLUME, environment_name=environment,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED))
    if vol is None:
        return None
    text = await _read_volume_file(conn, vol.volume_id, state_path(app))
    if text is None:
        return None
    return StateRecord.from_json(text.decode(), where=f"state record {STATE_VOLUME}:{state_path(app)}")


VOLUME_BLOCK_SIZE = 8 * 1024 * 1024


async def write_volume_file(conn: Connection, environment: str, volume: str, path: str,
                            data: bytes) -> None:
    """Write (or overwrite) one file of a v2 volume, made if missing, as the SDK's
    `batch_upload(force=True)` does: announce its 8 MiB blocks by sha256, upload the ones
    Modal lacks, announce again with their upload answers. Through the lean client, so a
    dead connection fails within its bounded retries."""
    try:
        await _put_volume_file(conn, environment, volume, path, data)
    except TargetError:
        raise
    except BackendError as exc:
        raise BackendError(f"writing {volume}:{path} in environment {environment!r}: {exc}"
                           ) from exc


async def _put_volume_file(conn: Connection, environment: str, volume: str, path: str,
                           data: bytes) -> None:
    import hashlib

    from modal_proto import api_pb2

    made = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=volume, environment_name=environment, version=api_pb2.VOLUME_FS_VERSION_V2,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING), missing_ok=False)
    blocks = [data[i:i + VOLUME_BLOCK_SIZE] for i in range(0, len(data), VOLUME_BLOCK_SIZE)]
    digests = [hashlib.sha256(block).digest() for block in blocks]
    answers: dict[bytes, bytes] = {}
    for _ in range(2):
        request = api_pb2.VolumePutFiles2Request(volume_id=made.volume_id, files=[
            api_pb2.VolumePutFiles2Request.File(path=path, mode=0o644, size=len(data), blocks=[
                api_pb2.VolumePutFiles2Request.Block(contents_sha256=d, put_response=answers[d])
                if d in answers else api_pb2.VolumePutFiles2Request.Block(contents_sha256=d)
                for d in digests])])
        resp = await conn.call("VolumePutFiles2", request, missing_ok=False)
        if not resp.missing_blocks:
            return
        missing = list(resp.missing_blocks)
        uploaded = await asyncio.gather(*(http_put(m.put_url, blocks[m.block_index])
                                          for m in missing))
        answers.update((digests[m.block_index], answer) for m, answer in zip(missing, uploaded,
                                                                              strict=True))
    raise BackendError("Modal still lacks blocks after the upload")


async def _read_volume_file(conn: Connection, volume_id: str, path: str) -> bytes | None:
    from modal_proto import api_pb2

    resp = await conn.call("VolumeGetFile2", api_pb2.VolumeGetFile2Request(
        volume_id=volume_id, path=path))
    if resp is None:
        return None
    return b"".join(await asyncio.gather(*(http_get(u) for u in resp.get_urls)))


async def _read_app(conn: Connection, req: ReadRequest, state: Awaitable[StateRecord | None],
                    names: Awaitable[tuple[dict[str, str], dict[str, str]]]) -> LiveApp | None:
    from modal_proto import api_pb2

    def function_get(tag: str) -> Any:
        return asyncio.ensure_future(conn.call("FunctionGet", api_pb2.FunctionGetRequest(
            app_name=req.app, object_tag=tag, environment_name=req.environment)))

    # the functions the spec expects are asked for at once, with the app itself
    fn_calls = {n: function_get(n) for n in sorted(set(req.function_names))}
    try:
        got = await conn.call("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(
            name=req.app, environment_name=req.environment))
        if got is None or not got.app_id:
            return None
        app_id = got.app_id
        tags_t = conn.call("AppGetTags", api_pb2.AppGetTagsRequest(app_id=app_id))
        hist_t = conn.call("AppDeploymentHistory",
                           api_pb2.AppDeploymentHistoryRequest(app_id=app_id))
        layout_t = conn.call("AppGetLayout", api_pb2.AppGetLayoutRequest(app_id=app_id))
        st = await state  # functions harvest deployed before but the spec no longer has
        if st is not None:
            for addr in st.resources:
                kind, name = addr.split(".", 1)
                if kind in FUNCTION_KINDS and function_tag(kind, name) not in fn_calls:
                    fn_calls[function_tag(kind, name)] = function_get(function_tag(kind, name))
        tags, hist, layout, *fn_resps = await asyncio.gather(tags_t, hist_t, layout_t, *fn_calls.values())
    finally:
        for call in fn_calls.values():
            call.cancel()
        await asyncio.gather(*fn_calls.values(), return_exceptions=True)
    volume_names, secret_names = await names
    functions = {}
    for name, resp in zip(fn_calls, fn_resps, strict=True):
        if resp is not None:
            functions[name] = function_from_proto(name, resp.function_id, resp.function,
                                                  volume_names, secret_names)
    latest = None
    if hist is not None and hist.app_deployment_histories:
        latest = max(hist.app_deployment_histories, key=lambda h: h.version)
    state_name = "deployed"
    if got.HasField("lifecycle"):
        state_name = api_pb2.AppState.Name(got.lifecycle.app_state).removeprefix("APP_STATE_").lower()
    return LiveApp(
        name=req.app,
        app_id=app_id,
        state=state_name,
        tags=dict(tags.tags) if tags is not None else {},
        version=latest.version if latest else None,
        deployed_by=latest.deployed_by if latest else "",
        deployment_tag=latest.tag if latest else "",
        functions=functions,
        function_names=tuple(sorted(layout.app_layout.function_ids)) if layout is not None else (),
    )


async def _answer(call: Awaitable[Any]) -> Any:
    """An RPC's answer, or None when the target refuses it (an older server, no permission)."""
    try:
        return await call
    except TargetError:
        raise
    except BackendError:
        return None


async def _read_billing(conn: Connection, envs: Awaitable[Any], environment: str) -> LiveBilling:
    """The published rates and the environment's spend in the last billing cycle."""
    from datetime import datetime, timezone

    from modal_proto import api_pb2

    rates_t = asyncio.ensure_future(_answer(conn.call("WorkspaceBillingRates",
                                                      api_pb2.WorkspaceBillingRatesRequest())))
    try:
        listed = await envs
        found = [e for e in (listed.items if listed is not None else []) if e.name == environment]
        this_cycle = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        last_cycle = (this_cycle - timedelta(days=1)).replace(day=1)
        summary = None
        if found:
            request = api_pb2.EnvironmentBillingSummaryRequest(environment_id=found[0].environment_id)
            request.start_timestamp.FromDatetime(last_cycle)
            summary = await _answer(conn.call("EnvironmentBillingSummary", request))
        rates = await rates_t
    finally:
        rates_t.cancel()
    return LiveBilling(
        rates=dict(rates.rates) if rates is not None and rates.rates else None,
        last_cycle=last_cycle.strftime("%Y-%m"),
        last_cycle_spend=_dollars(summary.metered_cost) if summary is not None else None,
    )


def _dollars(text: str) -> float | None:
    try:
        return float(text or 0)
    except ValueError:
        return None


async def read_live(req: ReadRequest) -> Live:
    """Everything a plan needs, read concurrently. Runs in the caller's event loop."""
    from modal_proto import api_pb2

    conn = await open_connection()
    tasks: list[asyncio.Future[Any]] = []

    def start(coro: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        tasks.append(task)
        return task

    try:
        envs_t = start(conn.call("EnvironmentList", _empty()))
        vols_t = start(_paged(conn, "VolumeList", api_pb2.VolumeListRequest, req.environment))
        secs_t = start(_paged(conn, "SecretList", api_pb2.SecretListRequest, req.environment))
        state_t = start(read_state(conn, req.environment, req.app))

        async def names() -> tuple[dict[str, str], dict[str, str]]:
            vols, secs = await asyncio.gather(vols_t, secs_t)
            return ({v.volume_id: v.label for v in vols}, {s.secret_id: s.label for s in secs})

        names_t = start(names())
        app_t = start(_read_app(conn, req, state_t, names_t))
        billing_t = start(_read_billing(conn, envs_t, req.environment))
        envs, vols, secs, state, app, billing = await asyncio.gather(
            envs_t, vols_t, secs_t, state_t, app_t, billing_t)
        image_ids = set(req.image_ids)
        if state is not None:
            for rec in state.resources.values():
                image_ids |= {s.image_id for s in rec.snapshots}
        images = await _check_images(conn, sorted(image_ids))
        found = [e for e in (envs.items if envs is not None else []) if e.name == req.environment]
        return Live(
            environment=req.environment,
            environment_exists=bool(found),
            details=environment_from_proto(found[0]) if found else None,
            volumes={v.label: volume_from_proto(v) for v in vols if v.label not in INTERNAL_VOLUMES},
            secrets={s.label: secret_from_proto(s) for s in secs},
            app=app,
            images=images,
            state=state,
            billing=billing,
        )
    except TargetError:
        raise
    except BackendError as exc:  # permanent errors, after retries
        raise BackendError(f"reading environment {req.environment!r}: {exc}") from exc
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()


async def _check_images(conn: Connection, image_ids: list[str]) -> dict[str, LiveImage]:
    from modal_proto import api_pb2

    resps = await asyncio.gather(*(conn.call("ImageFromId", api_pb2.ImageFromIdRequest(image_id=i))
                                   for i in image_ids))
    return {i: LiveImage(image_id=i, exists=r is not None) for i, r in zip(image_ids, resps, strict=True)}


def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()


# -- targets -----------------------------------------------------------------------------
class Session:
    """A target made ready: for `local`, an in-process local Modal under `.harvest/local/`
    with this process's environment pointed at it (before modal is imported)."""

    def __init__(self, choice: TargetChoice, project_dir: Path) -> None:
        self.choice = choice
        self.project_dir = project_dir
        self._local: Any = None

    def __enter__(self) -> Session:
        if self.choice.name == "local":
            from harvest_iac.emulator.server import LocalModal

            self._local = LocalModal(self.project_dir / LOCAL_DATA_DIR).start()
            os.environ.update(self._local.client_env())
            _repoint_modal_config()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._local is not None:
            self._local.stop()

    def read(self, req: ReadRequest) -> Live:
        return asyncio.run(read_live(req))

    def read_state(self, environment: str, app: str) -> StateRecord | None:
        """Only harvest's state record of `app` (None when there is none)."""

        async def go(conn: Connection) -> StateRecord | None:
            return await read_state(conn, environment, app)

        return self.with_connection(go)

    def with_connection(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `fn(conn)` with a fresh connection in a fresh event loop."""

        async def go() -> T:
            conn = await open_connection()
            try:
                return await fn(conn)
            finally:
                conn.close()

        return asyncio.run(go())


def _repoint_modal_config() -> None:
    """modal reads its config file path at import; if it is already imported, refresh."""
    import sys

    cfg = sys.modules.get("modal.config")
    if cfg is not None:
        cfg.user_config_path = os.environ["MODAL_CONFIG_PATH"]  # type: ignore[attr-defined]


# -- changing Modal ----------------------------------------------------------------------
async def create_environment(conn: Connection, name: str) -> None:
    from modal_proto import api_pb2

    try:
        await conn.call("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name=name))
    except AlreadyExists:
        pass


async def update_environment(conn: Connection, environment: str, settings: dict[str, Any]) -> None:
    """Set the given settings (keys of `spec.Settings`) of an environment; others are left as
    they are. The budget has its own RPC, which names the environment by id."""
    from google.protobuf.wrappers_pb2 import StringValue
    from modal_proto import api_pb2

    update = api_pb2.EnvironmentUpdateRequest(current_name=environment)
    if "web_suffix" in settings:
        update.web_suffix.CopyFrom(StringValue(value=settings["web_suffix"]))
    for key in ("max_concurrent_tasks", "max_concurrent_gpus", "image_builder_version"):
        if key in settings:
            setattr(update, key, settings[key])
    if "block_unauthenticated_resources" in settings:
        update.block_unauthenticated_resources = _BLOCK_UNAUTHENTICATED[  # type: ignore[assignment]
            bool(settings["block_unauthenticated_resources"])]
    if len(update.ListFields()) > 1:
        await conn.call("EnvironmentUpdate", update, missing_ok=False)
    if "budget" in settings:
        found = await conn.call("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(
            deployment_name=environment), missing_ok=False)
        budget = api_pb2.EnvironmentSetBudgetRequest(environment_id=found.environment_id)
        if settings["budget"] == NO_BUDGET:
            budget.clear_budget = True
        else:
            budget.cycle_budget_dollars = float(settings["budget"])
        await conn.call("EnvironmentSetBudget", budget, missing_ok=False)


async def create_volume(conn: Connection, environment: str, name: str, version: int) -> LiveVolume:
    from modal_proto import api_pb2

    fs = api_pb2.VOLUME_FS_VERSION_V2 if version == 2 else api_pb2.VOLUME_FS_VERSION_V1
    resp = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=name, environment_name=environment, version=fs,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING))
    if resp is None:
        raise BackendError(f"volume.{name}: Modal did not create it")
    return LiveVolume(name=name, object_id=resp.volume_id, version=version)


async def delete_volume(conn: Connection, environment: str, name: str) -> None:
    from modal_proto import api_pb2

    found = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=name, environment_name=environment,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED))
    if found is None:
        return
    await conn.call("VolumeDelete", api_pb2.VolumeDeleteRequest(
        volume_id=found.volume_id, environment_name=environment))


async def rename_volume(conn: Connection, environment: str, old: str, new: str) -> None:
    """Rename volume `old` to `new` in place (its files stay); nothing when `old` is gone (a
    rename done already)."""
    from modal_proto import api_pb2

    found = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=old, environment_name=environment,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED))
    if found is None:
        return
    await conn.call("VolumeRename", api_pb2.VolumeRenameRequest(volume_id=found.volume_id, name=new))


async def put_secret(conn: Connection, environment: str, name: str, values: dict[str, str]
                     ) -> LiveSecret:
    """Create or overwrite a secret with exactly these values (keys not given are dropped)."""
    from modal_proto import api_pb2

    resp = await conn.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
        deployment_name=name, environment_name=environment, env_dict=values,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS))
    if resp is None:
        raise BackendError(f"secret.{name}: Modal did not store it")
    return LiveSecret(name=name, object_id=resp.secret_id, keys=tuple(sorted(values)))


async def delete_secret(conn: Connection, environment: str, name: str) -> None:
    from modal_proto import api_pb2

    found = await conn.call("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(
        deployment_name=name, environment_name=environment,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED))
    if found is None:
        return
    await conn.call("SecretDelete", api_pb2.SecretDeleteRequest(secret_id=found.secret_id))


async def set_app_tags(conn: Connection, app_id: str, tags: dict[str, str]) -> None:
    from modal_proto import api_pb2

    await conn.call("AppSetTags", api_pb2.AppSetTagsRequest(app_id=app_id, tags=tags))


async def read_objects(conn: Connection, environment: str, volumes: list[str], secrets: list[str]
                       ) -> tuple[dict[str, LiveVolume], dict[str, LiveSecret]]:
    """Fresh ids and creation times after changes (for the state record)."""
    from modal_proto import api_pb2

    vols, secs = await asyncio.gather(
        _paged(conn, "VolumeList", api_pb2.VolumeListRequest, environment) if volumes else _none(),
        _paged(conn, "SecretList", api_pb2.SecretListRequest, environment) if secrets else _none(),
    )
    v = {i.label: volume_from_proto(i) for i in vols or [] if i.label in volumes}
    s = {i.label: secret_from_proto(i) for i in secs or [] if i.label in secrets}
    return v, s


async def _none() -> list[Any]:
    return []


# -- the SDK boundary: modal's exceptions become harvest's ----------------------------------
#: Attempts of an idempotent SDK operation that failed transiently (the SDK retries unary
#: calls itself, but not streams such as a Dict's key listing, nor volume block uploads).
SDK_ATTEMPTS = 4


def _connection_errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    from grpclib.exceptions import ProtocolError, StreamTerminatedError
    from h2.exceptions import ProtocolError as H2ProtocolError

    return (OSError, asyncio.TimeoutError, StreamTerminatedError, ProtocolError, H2ProtocolError,
            aiohttp.ClientError)


def sdk_error(exc: BaseException, what: str) -> HarvestError | None:
    """harvest's error for a failure of the modal SDK or of the connection under it (None for
    anything else: a bug must not be disguised as a Modal failure)."""
    import modal.exception as me
    from grpclib.exceptions import GRPCError

    if isinstance(exc, HarvestError):
        return exc
    if isinstance(exc, me.AuthError):
        return TargetError(f"{what}: Modal refused the credentials ({one_line(str(exc))}); check "
                           "MODAL_TOKEN_ID / MODAL_TOKEN_SECRET")
    if isinstance(exc, (me.ConnectionError, *_connection_errors())):
        return unreachable(credentials_from_env().server_url, exc)
    if isinstance(exc, (me.Error, GRPCError)):
        kind = "not found" if isinstance(exc, me.NotFoundError) else type(exc).__name__
        return BackendError(f"{what}: Modal answered {kind}: {one_line(str(exc)) or '(no message)'}")
    return None


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: Modal's transient answers and a connection lost mid-call (not a
    connection the SDK already failed to make after its own retries)."""
    import modal.exception as me

    return isinstance(exc, (me.ServiceError, me.InternalError, *_connection_errors()))


def sdk_call(what: str, fn: Callable[[], T], *, recover: Callable[[], T | None] | None = None,
             attempts: int = SDK_ATTEMPTS) -> T:
    """`fn()` (an idempotent SDK operation), retried on transient failures, its errors mapped
    to harvest's. After a failure, `recover()` may tell the result (did the write land?)."""
    import time

    delay = 0.1
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mapped, or re-raised when not Modal's
            error = sdk_error(exc, what)
            if error is None:
                raise
            if not _transient(exc) or attempt == attempts - 1:
                raise error from exc
        if recover is not None:
            known = recover()
            if known is not None:
                return known
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover


def ensure_reachable() -> None:
    """A TargetError, within the lean client's few bounded retries, when Modal does not
    answer. Called before the SDK (or the `modal` CLI) first connects: its own first
    connection keeps retrying for about a minute."""

    async def hello() -> None:
        conn = await open_connection()
        try:
            await conn.call("ClientHello", _empty())
        finally:
            conn.close()

    asyncio.run(hello())


class LockDict:
    """The Dict `harvest-locks` of one environment as the lock protocol (`lease.py`) uses it,
    through the SDK: transient failures retried, errors mapped to harvest's. Without `create`,
    a missing Dict (or environment) reads as empty: nothing is locked there."""

    def __init__(self, environment: str, *, create: bool) -> None:
        self.environment = environment
        self.create = create
        self.what = f"the lock Dict {LOCK_DICT!r} of environment {environment!r}"
        self._dict: Any = None
        self._missing = False

    def _hydrated(self) -> Any:
        if self._dict is None and not self._missing:
            import modal
            import modal.exception

            ensure_reachable()
            d = modal.Dict.from_name(LOCK_DICT, environment_name=self.environment,
                                     create_if_missing=self.create)
            try:
                sdk_call(self.what, d.hydrate)
            except BackendError as exc:
                if self.create or not isinstance(exc.__cause__, modal.exception.NotFoundError):
                    raise
                self._missing = True
                return None
            self._dict = d
        return self._dict

    def keys(self) -> list[Any]:
        d = self._hydrated()
        return [] if d is None else sdk_call(self.what, lambda: list(d.keys()))

    def get(self, key: str) -> Any:
        d = self._hydrated()
        return None if d is None else sdk_call(self.what, lambda: d.get(key))

    def pop(self, key: str, default: Any = None) -> Any:
        """Only the protocol's best-effort cleanup pops: one attempt (the SDK's retries)."""
        d = self._hydrated()
        return default if d is None else sdk_call(self.what, lambda: d.pop(key, default),
                                                  attempts=1)

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Put (if absent, with `skip_if_exists`). A put whose answer was lost is read back:
        our value there means it landed; another value means someone else's did."""
        d = self._hydrated()
        if d is None:
            raise BackendError(f"{self.what} does not exist")

        def landed() -> bool | None:
            found = self.get(key)
            if found == value:
                return True
            return False if found is not None and skip_if_exists else None

        return sdk_call(self.what, lambda: bool(d.put(key, value, skip_if_exists=skip_if_exists)),
                        recover=landed)


class ModalOps:
    """Synchronous operations through the public SDK (deploys, the lock Dict, sandboxes).
    The SDK runs them on its own loop; call these from plain (non-async) code."""

    def __init__(self, environment: str) -> None:
        self.environment = environment

    def lock_dict(self, *, create: bool = True) -> LockDict:
        """The Dict holding harvest's locks in this environment."""
        return LockDict(self.environment, create=create)

    # -- snapshots --------------------------------------------------------------------
    def make_snapshot(self, module_path: Path, name: str, timeout: int = 1800) -> tuple[str, float]:
        """Make snapshot `name` with the rendered module's own helper (the same code the
        refresh-snapshots cron runs in Modal): a sandbox from its image, the setup commands,
        `snapshot_filesystem()` kept without expiry, published under its name."""
        module = _import_rendered(module_path)
        try:
            image_id, created_at = module._make_snapshot(name, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never traced
            raise (sdk_error(exc, f"snapshot.{name}")
                   or BackendError(f"snapshot.{name}: {exc}".rstrip())) from exc
        return str(image_id), float(created_at)

    # -- deploys -----------------------------------------------------------------------
    def deploy(self, module_path: Path, app_name: str, tag: str) -> str:
        """`modal deploy` of the rendered module, exactly as a user would run it; returns
        the CLI's output. The module holds no secret values, so neither does the output."""
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "modal", "deploy", str(module_path), "--env",
               self.environment, "--name", app_name, "--tag", tag]
        ensure_reachable()
        log = module_path.with_suffix(".deploy.log")
        # from the project folder: paths in the module (Dockerfiles) are relative to it
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ),
                                  cwd=Path.cwd(), timeout=DEPLOY_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"app.{app_name}: `modal deploy` did not finish in "
                               f"{DEPLOY_TIMEOUT_S}s") from exc
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode != 0:
            raise BackendError(f"app.{app_name}: `modal deploy` failed: "
                               f"{_gist(proc.stdout + proc.stderr)} (its output: {log})")
        return proc.stdout


def _gist(output: str) -> str:
    """The last line of a command's output that says something (not box drawing)."""
    lines = [line.strip(" \t│┃╭╮╰╯─━") for line in output.splitlines()]
    said = [line for line in lines if line]
    return said[-1] if said else "no output"


async def app_identity(conn: Connection, environment: str, app: str) -> tuple[str, int | None]:
    """The deployed app's id and latest deployment version."""
    from modal_proto import api_pb2

    got = await conn.call("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(
        name=app, environment_name=environment))
    if got is None or not got.app_id:
        raise BackendError(f"app.{app}: not found in environment {environment!r} after deploy")
    hist = await conn.call("AppDeploymentHistory",
                           api_pb2.AppDeploymentHistoryRequest(app_id=got.app_id))
    version = None
    if hist is not None and hist.app_deployment_histories:
        version = max(h.version for h in hist.app_deployment_histories)
    return got.app_id, version


def _import_rendered(module_path: Path) -> Any:
    import importlib.util
    import sys

    name = f"_harvest_rendered_{module_path.stem}"
    spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise BackendError(f"cannot import the rendered app {module_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the module is generated by us: report, do not trace
        sys.modules.pop(name, None)
        raise BackendError(f"the rendered app {module_path} failed to import: {exc}") from exc
    return module


async def stop_app(conn: Connection, environment: str, app: str) -> None:
    from modal_proto import api_pb2

    got = await conn.call("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(
        name=app, environment_name=environment))
    if got is None or not got.app_id:
        return
    await conn.call("AppStop", api_pb2.AppStopRequest(app_id=got.app_id))


# -- lifecycle: history, rollback, images, import ----------------------------------------------
def deployment_from_proto(item: Any) -> LiveDeployment:
    return LiveDeployment(version=int(item.version), tag=item.tag, deployed_at=float(item.deployed_at),
                          deployed_by=item.deployed_by, rollback_version=int(item.rollback_version))


async def app_history(conn: Connection, environment: str, app: str
                      ) -> tuple[str, list[LiveDeployment]] | None:
    """The deployed app's id and its versions, newest first; None when it is not deployed."""
    from modal_proto import api_pb2

    got = await conn.call("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(
        name=app, environment_name=environment))
    if got is None or not got.app_id:
        return None
    hist = await conn.call("AppDeploymentHistory", api_pb2.AppDeploymentHistoryRequest(app_id=got.app_id))
    items = [deployment_from_proto(h) for h in (hist.app_deployment_histories if hist is not None else [])]
    return got.app_id, sorted(items, key=lambda d: -d.version)


async def rollback_app(conn: Connection, app_id: str, version: int) -> None:
    """Serve `version`'s functions again, as a new version (AppRollback)."""
    from modal_proto import api_pb2

    await conn.call("AppRollback", api_pb2.AppRollbackRequest(app_id=app_id, version=version),
                    missing_ok=False)


async def delete_image(conn: Connection, image_id: str) -> None:
    """Delete one image (a snapshot); nothing when it is gone already."""
    from modal_proto import api_pb2

    await conn.call("ImageDelete", api_pb2.ImageDeleteRequest(image_id=image_id))


async def delete_image_name(conn: Connection, environment: str, name: str) -> None:
    """Delete a published image name (`name:latest`); nothing when there is none."""
    from modal_proto import api_pb2

    await conn.call("ImageNameDelete", api_pb2.ImageNameDeleteRequest(tag=f"{environment}/{name}:latest"))


async def deployed_apps(conn: Connection, environment: str) -> list[str]:
    """The names of the apps deployed in `environment`."""
    from modal_proto import api_pb2

    resp = await conn.call("AppList", api_pb2.AppListRequest(environment_name=environment))
    return sorted({a.name for a in (resp.apps if resp is not None else [])
                   if a.name and a.state == api_pb2.APP_STATE_DEPLOYED})


async def app_function_names(conn: Connection, environment: str, app: str) -> list[str]:
    """The names of the deployed app's functions."""
    from modal_proto import api_pb2

    got = await conn.call("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(
        name=app, environment_name=environment))
    if got is None or not got.app_id:
        return []
    layout = await conn.call("AppGetLayout", api_pb2.AppGetLayoutRequest(app_id=got.app_id))
    return sorted(layout.app_layout.function_ids) if layout is not None else []


async def delete_state_record(conn: Connection, environment: str, app: str) -> None:
    """Delete harvest's state record of `app` (the file only: the volume may hold others)."""
    from modal_proto import api_pb2

    vol = await conn.call("VolumeGetOrCreate", api_pb2.VolumeGetOrCreateRequest(
        deployment_name=STATE_VOLUME, environment_name=environment,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED))
    if vol is not None:
        await conn.call("VolumeRemoveFile2", api_pb2.VolumeRemoveFile2Request(
            volume_id=vol.volume_id, path=state_path(app)))
