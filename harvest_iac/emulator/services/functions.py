"""Functions: precreate, create (one stored *definition* per distinct version), look up.

A function id is stable for an app's function name across redeploys. Each FunctionCreate
stores the definition the client sent (as a `FunctionData`, the shape `FunctionGet`
answers and `FunctionInfo` reads: schedule, retries, timeout, resources, volumes, secrets,
image) under a definition id; identical definitions share an id. `AppPublish` (apps.py)
records which definition each function serves in that app version, so history and
rollback can restore an older one. Calls are served by `invocations.py` and run by the
runtime (`emulator/runtime/`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.services.apps import app_functions, app_row, deployed_app
from harvest_iac.emulator.services.web_endpoints import fill_web_urls
from harvest_iac.emulator.store import new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    env_id TEXT NOT NULL,
    name TEXT NOT NULL,
    function_type INTEGER NOT NULL DEFAULT 0,
    precreate BLOB,
    definition_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS functions_app ON functions (app_id, name);
CREATE TABLE IF NOT EXISTS function_defs (
    id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS function_defs_digest ON function_defs (function_id, digest);
"""

# -- the interface apps.py uses ---------------------------------------------------------
def function_data(emu: Emulator, definition_id: str) -> api_pb2.FunctionData:
    """A stored definition, with the URLs of its web endpoints (which listen from then on)."""
    row = emu.store.one(
        "SELECT d.data, d.function_id, f.app_id FROM function_defs d"
        " JOIN functions f ON f.id = d.function_id WHERE d.id = ?", definition_id,
    )
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"Function definition '{definition_id}' not found")
    data = api_pb2.FunctionData.FromString(row["data"])
    fill_web_urls(emu, str(row["app_id"]), str(row["function_id"]), data)
    return data


def function_handle_metadata(
    emu: Emulator, function_id: str, definition_id: str = ""
) -> api_pb2.FunctionHandleMetadata:
    """Handle metadata of a function: from its definition, else from its precreate."""
    row = emu.store.one("SELECT * FROM functions WHERE id = ?", function_id)
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"Function '{function_id}' not found")
    definition_id = definition_id or str(row["definition_id"])
    if definition_id:
        data = function_data(emu, definition_id)
        return api_pb2.FunctionHandleMetadata(
            function_name=data.function_name or row["name"],
            function_type=data.function_type,
            web_url=data.web_url,
            is_method=data.is_method,
            definition_id=definition_id,
            function_schema=data.function_schema,
            supported_input_formats=data.supported_input_formats,
            supported_output_formats=data.supported_output_formats,
            app_id=row["app_id"],
            class_parameter_info=data.class_parameter_info,
            method_handle_metadata=_method_metadata(data.method_definitions, row["app_id"]),
        )
    pre = api_pb2.FunctionPrecreateRequest.FromString(row["precreate"] or b"")
    return api_pb2.FunctionHandleMetadata(
        function_name=row["name"],
        function_type=pre.function_type,
        function_schema=pre.function_schema,
        supported_input_formats=pre.supported_input_formats,
        supported_output_formats=pre.supported_output_formats,
        app_id=row["app_id"],
        method_handle_metadata=_method_metadata(pre.method_definitions, row["app_id"]),
    )


def _method_metadata(
    methods: Mapping[str, api_pb2.MethodDefinition], app_id: str
) -> dict[str, api_pb2.FunctionHandleMetadata]:
    """The handles of a class's methods: each calls the class function with its name."""
    return {
        name: api_pb2.FunctionHandleMetadata(
            function_name=m.function_name, function_type=m.function_type, web_url=m.web_url,
            is_method=True, use_method_name=name, function_schema=m.function_schema,
            supported_input_formats=m.supported_input_formats,
            supported_output_formats=m.supported_output_formats, app_id=app_id,
        )
        for name, m in methods.items()
    }


def publish_function(
    emu: Emulator, app_id: str, name: str, function_id: str, definition_id: str
) -> str:
    """Make `definition_id` (default: the function's newest) the one the function serves;
    returns it."""
    row = emu.store.one("SELECT * FROM functions WHERE id = ?", function_id)
    if row is None or row["app_id"] != app_id:
        raise GRPCError(Status.NOT_FOUND, f"Function '{function_id}' not found in app '{app_id}'")
    if not definition_id:
        newest = emu.store.one(
            "SELECT id FROM function_defs WHERE function_id = ? ORDER BY created_at DESC LIMIT 1",
            function_id,
        )
        if newest is None:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Function '{name}' was never created")
        definition_id = str(newest["id"])
    emu.store.run("UPDATE functions SET definition_id = ? WHERE id = ?", definition_id, function_id)
    return definition_id


def function_summary(
    emu: Emulator, definition_id: str
) -> api_pb2.AppGetInfoResponse.FunctionInfoSummary:
    data = function_data(emu, definition_id)
    first = data.ranked_functions[0].function if data.ranked_functions else api_pb2.Function()
    summary = api_pb2.AppGetInfoResponse.FunctionInfoSummary(
        web_function=data.webhook_config.type != api_pb2.WEBHOOK_TYPE_UNSPECIFIED,
        is_sessioned=data.is_sessioned,
    )
    if data.HasField("schedule"):
        summary.schedule.CopyFrom(data.schedule)
    if first.resources.gpu_config.count:
        summary.gpu_config.append(first.resources.gpu_config)
    return summary


# -- conversion -------------------------------------------------------------------------
def _as_function_data(req: api_pb2.FunctionCreateRequest) -> api_pb2.FunctionData:
    """The request's definition as a FunctionData (the client sends either shape)."""
    if req.HasField("function_data"):
        data = api_pb2.FunctionData()
        data.CopyFrom(req.function_data)
    else:
        data = _function_to_data(req.function)
    if req.HasField("schedule") and not data.HasField("schedule"):
        data.schedule.CopyFrom(req.schedule)
    return data


def _function_to_data(fn: api_pb2.Function) -> api_pb2.FunctionData:
    data = api_pb2.FunctionData()
    fn_fields = fn.DESCRIPTOR.fields_by_name
    for field in data.DESCRIPTOR.fields:
        source = fn_fields.get(field.name)
        if source is None or source.type != field.type or source.is_repeated != field.is_repeated:
            continue
        if field.message_type is not None and (
            source.message_type is None or not _same_type(source.message_type, field.message_type)
        ):
            continue
        value = getattr(fn, field.name)
        if field.is_repeated:
            _copy_repeated(getattr(data, field.name), value, field)
        elif field.message_type is not None:
            if source.has_presence and fn.HasField(field.name):
                getattr(data, field.name).CopyFrom(value)
        else:
            setattr(data, field.name, value)
    data.ranked_functions.append(api_pb2.FunctionData.RankedFunction(rank=0, function=fn))
    return data


def _same_type(a: Any, b: Any) -> bool:
    """Two message types hold the same data (map entries of two messages: same value type)."""
    if a.GetOptions().map_entry and b.GetOptions().map_entry:
        va, vb = a.fields_by_name["value"], b.fields_by_name["value"]
        return bool(va.type == vb.type and (va.message_type is None) == (vb.message_type is None) and (
            va.message_type is None or va.message_type.full_name == vb.message_type.full_name))
    return bool(a.full_name == b.full_name)


def _definition_digest(data: api_pb2.FunctionData) -> str:
    """Identity of a definition; the client lists mount ids in no stable order."""
    canonical = api_pb2.FunctionData()
    canonical.CopyFrom(data)
    for ranked in canonical.ranked_functions:
        ids = sorted(ranked.function.mount_ids)
        del ranked.function.mount_ids[:]
        ranked.function.mount_ids.extend(ids)
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def _copy_repeated(target: Any, value: Any, field: Any) -> None:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if entry.fields_by_name["value"].message_type is None:
            target.update(value)
        else:
            for key, item in value.items():
                target[key].CopyFrom(item)
    else:
        target.extend(value)


class FunctionService(Service):
    """FunctionPrecreate, FunctionCreate, FunctionGet, FunctionGetById and friends."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        emu.environment_delete_hooks.append(self._drop_environment)

    def _drop_environment(self, env_id: str) -> None:
        self.store.run(
            "DELETE FROM function_defs WHERE function_id IN"
            " (SELECT id FROM functions WHERE env_id = ?)", env_id,
        )
        self.store.run("DELETE FROM functions WHERE env_id = ?", env_id)

    def _function_id_for(self, app_id: str, name: str, existing: str) -> str | None:
        if existing:
            row = self.store.one(
                "SELECT id FROM functions WHERE id = ? AND app_id = ?", existing, app_id
            )
            if row is not None:
                return str(row["id"])
        current = app_functions(app_row(self.emu, app_id)).get(name)
        if current:
            return current[0]
        row = self.store.one(
            "SELECT id FROM functions WHERE app_id = ? AND name = ? ORDER BY created_at LIMIT 1",
            app_id, name,
        )
        return str(row["id"]) if row else None

    def FunctionPrecreate(
        self, req: api_pb2.FunctionPrecreateRequest, ctx: Ctx
    ) -> api_pb2.FunctionPrecreateResponse:
        app = app_row(self.emu, req.app_id)
        function_id = self._function_id_for(req.app_id, req.function_name, req.existing_function_id)
        if function_id is None:
            function_id = new_id("fu")
            self.store.run(
                "INSERT INTO functions (id, app_id, env_id, name, function_type, precreate,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                function_id, req.app_id, app["env_id"], req.function_name, req.function_type,
                req.SerializeToString(), time.time(),
            )
        else:
            self.store.run(
                "UPDATE functions SET precreate = ?, function_type = ? WHERE id = ?",
                req.SerializeToString(), req.function_type, function_id,
            )
        meta = api_pb2.FunctionHandleMetadata(
            function_name=req.function_name,
            function_type=req.function_type,
            function_schema=req.function_schema,
            supported_input_formats=req.supported_input_formats,
            supported_output_formats=req.supported_output_formats,
            app_id=req.app_id,
        )
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=meta)

    def FunctionCreate(
        self, req: api_pb2.FunctionCreateRequest, ctx: Ctx
    ) -> api_pb2.FunctionCreateResponse:
        app = app_row(self.emu, req.app_id)
        data = _as_function_data(req)
        if not data.ranked_functions:
            raise GRPCError(Status.INVALID_ARGUMENT, "FunctionCreate needs a function definition")
        name = data.function_name
        if not name:
            raise GRPCError(Status.INVALID_ARGUMENT, "FunctionCreate needs a function name")
        self._check_timeout(data)
        function_id = self._function_id_for(req.app_id, name, req.existing_function_id)
        if function_id is None:
            function_id = new_id("fu")
            self.store.run(
                "INSERT INTO functions (id, app_id, env_id, name, function_type, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                function_id, req.app_id, app["env_id"], name, data.function_type, time.time(),
            )
        definition_id = self._store_definition(function_id, data)
        function = data.ranked_functions[0].function
        for definition in (function, data):
            fill_web_urls(self.emu, req.app_id, function_id, definition)
        return api_pb2.FunctionCreateResponse(
            function_id=function_id,
            function=function,
            handle_metadata=function_handle_metadata(self.emu, function_id, definition_id),
            function_data=data,
        )

    @staticmethod
    def _check_timeout(data: api_pb2.FunctionData) -> None:
        timeout = data.timeout_secs or data.ranked_functions[0].function.timeout_secs
        if timeout and not 1 <= timeout <= 24 * 3600:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"Function timeout must be between 1s and 24h, got {timeout}s"
            )

    def _store_definition(self, function_id: str, data: api_pb2.FunctionData) -> str:
        body = data.SerializeToString(deterministic=True)
        digest = _definition_digest(data)
        row = self.store.one(
            "SELECT id FROM function_defs WHERE function_id = ? AND digest = ?", function_id, digest
        )
        if row is not None:
            return str(row["id"])
        definition_id = new_id("de")
        self.store.run(
            "INSERT INTO function_defs (id, function_id, digest, data, created_at)"
            " VALUES (?, ?, ?, ?, ?)", definition_id, function_id, digest, body, time.time(),
        )
        return definition_id

    def FunctionGet(self, req: api_pb2.FunctionGetRequest, ctx: Ctx) -> api_pb2.FunctionGetResponse:
        env_id = self.emu.environment_id(req.environment_name)
        app = deployed_app(self.emu, env_id, req.app_name)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
        functions = app_functions(app)
        if req.app_version:
            import json

            version = self.store.one(
                "SELECT functions FROM app_versions WHERE app_id = ? AND version = ?",
                app["id"], req.app_version,
            )
            if version is None:
                raise GRPCError(Status.NOT_FOUND, f"App version v{req.app_version} not found")
            functions = json.loads(version["functions"])
        entry = functions.get(req.object_tag)
        if entry is None:
            raise GRPCError(
                Status.NOT_FOUND, f"Function '{req.object_tag}' not found in app '{req.app_name}'"
            )
        function_id, definition_id = entry
        return api_pb2.FunctionGetResponse(
            function_id=function_id,
            handle_metadata=function_handle_metadata(self.emu, function_id, definition_id),
            function=function_data(self.emu, definition_id),
        )

    def FunctionGetById(
        self, req: api_pb2.FunctionGetByIdRequest, ctx: Ctx
    ) -> api_pb2.FunctionGetByIdResponse:
        meta = function_handle_metadata(self.emu, req.function_id)
        if not meta.definition_id:
            raise GRPCError(Status.NOT_FOUND, f"Function '{req.function_id}' is not deployed")
        return api_pb2.FunctionGetByIdResponse(
            function=function_data(self.emu, meta.definition_id), handle_metadata=meta
        )

    def FunctionGetCurrentStats(
        self, req: api_pb2.FunctionGetCurrentStatsRequest, ctx: Ctx
    ) -> api_pb2.FunctionStats:
        function_handle_metadata(self.emu, req.function_id)  # NOT_FOUND for unknown ids
        pool = self.emu.runtime.pools.get(req.function_id)
        if pool is None:
            return api_pb2.FunctionStats()
        return api_pb2.FunctionStats(
            backlog=len(pool.queue), num_total_tasks=len(pool.tasks),
            num_running_inputs=sum(len(t.running) for t in pool.tasks.values()),
        )
