"""Apps: create, look up, deploy (publish), list, info, history, rollback, stop, tags.

An app lives in one environment. `AppCreate` makes an app for a `modal run`/`modal deploy`;
`AppPublish` with state DEPLOYED gives it its deployment name and records a new *version*:
the functions (id and definition id of each) that version serves, its tag and commit.
`AppRollback` records a new version copying an older one's functions and definitions, so
`Function.from_name(...)` afterwards answers that older definition. A stopped app frees its
name: the next deploy of that name makes a new app.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.store import dumps, new_id

if TYPE_CHECKING:
    import sqlite3

    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    state INTEGER NOT NULL,
    created_at REAL NOT NULL,
    deployed_at REAL NOT NULL DEFAULT 0,
    stopped_at REAL NOT NULL DEFAULT 0,
    stopped_by TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 0,
    functions TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS apps_name ON apps (env_id, name);
CREATE TABLE IF NOT EXISTS app_versions (
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    deployed_at REAL NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    client_version TEXT NOT NULL DEFAULT '',
    commit_info BLOB,
    functions TEXT NOT NULL,
    rollback_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, version)
);
"""

DEPLOYED = api_pb2.APP_STATE_DEPLOYED
STOPPED = api_pb2.APP_STATE_STOPPED
_LIVE_STATES = (
    api_pb2.APP_STATE_DEPLOYED,
    api_pb2.APP_STATE_EPHEMERAL,
    api_pb2.APP_STATE_DETACHED,
    api_pb2.APP_STATE_INITIALIZING,
)
DEPLOYED_BY = "local"
_APP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_APP_ID = re.compile(r"^ap-[A-Za-z0-9]{22}$")
_TAG = re.compile(r"^[A-Za-z0-9._-]{1,63}$")

# A version's functions: {function name: [function id, definition id]}.
FunctionMap = dict[str, list[str]]


# -- the interface other services use ---------------------------------------------------
def app_row(emu: Emulator, app_id: str) -> sqlite3.Row:
    """The app's row, or NOT_FOUND."""
    row = emu.store.one("SELECT * FROM apps WHERE id = ?", app_id)
    if row is None:
        raise GRPCError(Status.NOT_FOUND, f"App '{app_id}' not found")
    return row


def deployed_app(emu: Emulator, env_id: str, name: str) -> sqlite3.Row | None:
    """The live (not stopped) app holding deployment name `name` in the environment."""
    return emu.store.one(
        "SELECT * FROM apps WHERE env_id = ? AND name = ? AND state != ?"
        " ORDER BY created_at DESC LIMIT 1", env_id, name, STOPPED,
    )


def app_functions(row: sqlite3.Row) -> FunctionMap:
    """The functions an app currently serves: {name: [function id, definition id]}."""
    return dict(json.loads(row["functions"]))


def check_app_name(name: str) -> None:
    if not _APP_NAME.match(name) or _APP_ID.match(name):
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            f"Invalid App name '{name}': up to 64 characters of letters, digits, '-', '_' and '.'",
        )


def _env_name(emu: Emulator, env_id: str) -> str:
    row = emu.store.one("SELECT name FROM environments WHERE id = ?", env_id)
    return str(row["name"]) if row else ""


def lifecycle(row: sqlite3.Row) -> api_pb2.AppLifecycle:
    return api_pb2.AppLifecycle(
        app_state=row["state"],
        created_at=row["created_at"],
        created_by=DEPLOYED_BY,
        deployed_at=row["deployed_at"],
        deployed_by=DEPLOYED_BY if row["deployed_at"] else "",
        version=row["version"],
        stopped_at=row["stopped_at"],
        stopped_by=row["stopped_by"],
    )


def handle_metadata(emu: Emulator, row: sqlite3.Row) -> api_pb2.AppHandleMetadata:
    return api_pb2.AppHandleMetadata(
        description=row["description"],
        app_id=row["id"],
        environment_name=_env_name(emu, row["env_id"]),
        lifecycle=lifecycle(row),
        functions={name: ids[0] for name, ids in app_functions(row).items()},
    )


class AppService(Service):
    """The App* RPCs."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        emu.environment_delete_hooks.append(self._drop_environment)

    def _drop_environment(self, env_id: str) -> None:
        self.store.run(
            "DELETE FROM app_versions WHERE app_id IN (SELECT id FROM apps WHERE env_id = ?)", env_id
        )
        self.store.run("DELETE FROM apps WHERE env_id = ?", env_id)

    def _new_app(self, env_id: str, *, name: str, description: str, state: int,
                 tags: dict[str, str] | None = None) -> str:
        app_id = new_id("ap")
        self.store.run(
            "INSERT INTO apps (id, env_id, name, description, state, created_at, tags)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            app_id, env_id, name, description, state, time.time(), dumps(tags or {}),
        )
        return app_id

    # -- creation and lookup -------------------------------------------------------------
    def AppCreate(self, req: api_pb2.AppCreateRequest, ctx: Ctx) -> api_pb2.AppCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        state = req.app_state or api_pb2.APP_STATE_EPHEMERAL
        app_id = self._new_app(env_id, name="", description=req.description, state=state,
                               tags=dict(req.tags))
        return api_pb2.AppCreateResponse(
            app_id=app_id,
            app_page_url=f"{self.emu.url}/apps/{app_id}",
            app_logs_url=f"{self.emu.url}/apps/{app_id}/logs",
        )

    def AppGetOrCreate(
        self, req: api_pb2.AppGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.AppGetOrCreateResponse:
        env_id = self.emu.environment_id(req.environment_name)
        if _APP_ID.match(req.app_name):
            row = app_row(self.emu, req.app_name)
        else:
            check_app_name(req.app_name)
            row = deployed_app(self.emu, env_id, req.app_name)
        if row is None:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
            app_id = self._new_app(env_id, name=req.app_name, description=req.app_name,
                                   state=DEPLOYED)
            self.store.run("UPDATE apps SET deployed_at = created_at WHERE id = ?", app_id)
            row = app_row(self.emu, app_id)
        return api_pb2.AppGetOrCreateResponse(
            app_id=row["id"], handle_metadata=handle_metadata(self.emu, row)
        )

    def AppGetByDeploymentName(
        self, req: api_pb2.AppGetByDeploymentNameRequest, ctx: Ctx
    ) -> api_pb2.AppGetByDeploymentNameResponse:
        env_id = self.emu.environment_id(req.environment_name)
        env_name = _env_name(self.emu, env_id)
        row = deployed_app(self.emu, env_id, req.name)
        if row is not None:
            return api_pb2.AppGetByDeploymentNameResponse(
                app_id=row["id"], environment_name=env_name, lifecycle=lifecycle(row)
            )
        stopped = self.store.one(
            "SELECT * FROM apps WHERE env_id = ? AND name = ? ORDER BY stopped_at DESC LIMIT 1",
            env_id, req.name,
        )
        if stopped is not None:
            return api_pb2.AppGetByDeploymentNameResponse(
                previous_app_id=stopped["id"], environment_name=env_name,
                lifecycle=lifecycle(stopped),
            )
        return api_pb2.AppGetByDeploymentNameResponse(environment_name=env_name)

    def AppGetLifecycle(
        self, req: api_pb2.AppGetLifecycleRequest, ctx: Ctx
    ) -> api_pb2.AppGetLifecycleResponse:
        return api_pb2.AppGetLifecycleResponse(lifecycle=lifecycle(app_row(self.emu, req.app_id)))

    def AppGetLayout(
        self, req: api_pb2.AppGetLayoutRequest, ctx: Ctx
    ) -> api_pb2.AppGetLayoutResponse:
        from harvest_iac.emulator.services.functions import function_handle_metadata

        from harvest_iac.emulator.services.classes import app_classes

        row = app_row(self.emu, req.app_id)
        objects = []
        function_ids = {}
        for name, (function_id, definition_id) in sorted(app_functions(row).items()):
            function_ids[name] = function_id
            objects.append(api_pb2.Object(
                object_id=function_id,
                function_handle_metadata=function_handle_metadata(
                    self.emu, function_id, definition_id
                ),
            ))
        class_ids = app_classes(self.emu, req.app_id)
        objects += [api_pb2.Object(object_id=class_id, class_handle_metadata=api_pb2.ClassHandleMetadata())
                    for class_id in sorted(class_ids.values())]
        return api_pb2.AppGetLayoutResponse(
            app_layout=api_pb2.AppLayout(objects=objects, function_ids=function_ids, class_ids=class_ids)
        )

    def AppHeartbeat(self, req: api_pb2.AppHeartbeatRequest, ctx: Ctx) -> empty_pb2.Empty:
        app_row(self.emu, req.app_id)
        return empty_pb2.Empty()

    def AppClientDisconnect(
        self, req: api_pb2.AppClientDisconnectRequest, ctx: Ctx
    ) -> empty_pb2.Empty:
        row = app_row(self.emu, req.app_id)
        if row["state"] in (api_pb2.APP_STATE_EPHEMERAL, api_pb2.APP_STATE_INITIALIZING):
            self._stop(row["id"], "")
        return empty_pb2.Empty()

    # -- deploys -------------------------------------------------------------------------
    def AppPublish(self, req: api_pb2.AppPublishRequest, ctx: Ctx) -> api_pb2.AppPublishResponse:
        row = app_row(self.emu, req.app_id)
        if row["state"] == STOPPED:
            raise GRPCError(Status.FAILED_PRECONDITION, f"App '{req.app_id}' is stopped")
        functions = self._published_functions(req)
        now = time.time()
        state = req.app_state or DEPLOYED
        if state != DEPLOYED:
            self.store.run(
                "UPDATE apps SET state = ?, functions = ? WHERE id = ?",
                state, dumps(functions), req.app_id,
            )
            self._refresh_runtime(req.app_id)
            return api_pb2.AppPublishResponse(url=self._url(req.app_id), deployed_at=now)
        name = req.name or row["name"]
        check_app_name(name)
        if len(req.deployment_tag) > 50:
            raise GRPCError(Status.INVALID_ARGUMENT, "Deployment tag must be at most 50 characters")
        other = deployed_app(self.emu, row["env_id"], name)
        if other is not None and other["id"] != req.app_id:
            raise GRPCError(
                Status.ALREADY_EXISTS,
                f"An App named '{name}' is already deployed in this environment ({other['id']})",
            )
        version = int(row["version"]) + 1
        tags = {**json.loads(row["tags"]), **dict(req.tags)}
        self.store.run(
            "UPDATE apps SET name = ?, description = ?, state = ?, deployed_at = ?, version = ?,"
            " functions = ?, tags = ? WHERE id = ?",
            name, name, DEPLOYED, now, version, dumps(functions), dumps(tags), req.app_id,
        )
        self._record_version(req.app_id, version, now, functions, tag=req.deployment_tag,
                             client_version=req.client_version or ctx.metadata.get(
                                 "x-modal-client-version", ""),
                             commit_info=req.commit_info if req.HasField("commit_info") else None)
        self._refresh_runtime(req.app_id)
        return api_pb2.AppPublishResponse(url=self._url(req.app_id), deployed_at=now)

    def _refresh_runtime(self, app_id: str) -> None:
        from harvest_iac.emulator.services.function_runtime import refresh_app

        refresh_app(self.emu, app_id)

    def _published_functions(self, req: api_pb2.AppPublishRequest) -> FunctionMap:
        from harvest_iac.emulator.services.classes import publish_classes
        from harvest_iac.emulator.services.functions import publish_function

        publish_classes(self.emu, req.app_id, dict(req.class_ids))
        functions: FunctionMap = {}
        for name, function_id in sorted(req.function_ids.items()):
            definition_id = req.definition_ids.get(function_id, "")
            functions[name] = [function_id, publish_function(
                self.emu, req.app_id, name, function_id, definition_id
            )]
        return functions

    def _record_version(self, app_id: str, version: int, now: float, functions: FunctionMap, *,
                        tag: str = "", client_version: str = "",
                        commit_info: api_pb2.CommitInfo | None = None,
                        rollback_version: int = 0) -> None:
        self.store.run(
            "INSERT INTO app_versions (app_id, version, deployed_at, tag, client_version,"
            " commit_info, functions, rollback_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            app_id, version, now, tag, client_version,
            commit_info.SerializeToString() if commit_info is not None else None,
            dumps(functions), rollback_version,
        )

    def _url(self, app_id: str) -> str:
        return f"{self.emu.url}/apps/{app_id}"

    def AppDeploymentHistory(
        self, req: api_pb2.AppDeploymentHistoryRequest, ctx: Ctx
    ) -> api_pb2.AppDeploymentHistoryResponse:
        row = app_row(self.emu, req.app_id)
        versions = self.store.all(
            "SELECT * FROM app_versions WHERE app_id = ? ORDER BY version DESC", req.app_id
        )
        items = []
        for v in versions:
            commit = api_pb2.CommitInfo.FromString(v["commit_info"]) if v["commit_info"] else None
            items.append(api_pb2.AppDeploymentHistory(
                app_id=req.app_id, version=v["version"], client_version=v["client_version"],
                deployed_at=v["deployed_at"], deployed_by=DEPLOYED_BY, tag=v["tag"],
                rollback_version=v["rollback_version"],
                rollback_allowed=v["version"] != row["version"], commit_info=commit,
            ))
        return api_pb2.AppDeploymentHistoryResponse(
            app_deployment_histories=items, production_app_version=row["version"]
        )

    def AppRollback(
        self, req: api_pb2.AppRollbackRequest, ctx: Ctx
    ) -> api_pb2.AppRollbackResponse:
        row = app_row(self.emu, req.app_id)
        if row["state"] != DEPLOYED:
            raise GRPCError(Status.FAILED_PRECONDITION, f"App '{req.app_id}' is not deployed")
        current = int(row["version"])
        target = current - 1 if req.version < 0 else req.version
        if target == current:
            raise GRPCError(Status.INVALID_ARGUMENT, f"App is already at version v{target}")
        old = self.store.one(
            "SELECT * FROM app_versions WHERE app_id = ? AND version = ?", req.app_id, target
        )
        if old is None:
            raise GRPCError(Status.NOT_FOUND, f"App version v{target} not found")
        functions: FunctionMap = json.loads(old["functions"])
        from harvest_iac.emulator.services.functions import publish_function

        for name, (function_id, definition_id) in functions.items():
            publish_function(self.emu, req.app_id, name, function_id, definition_id)
        now = time.time()
        version = current + 1
        self.store.run(
            "UPDATE apps SET deployed_at = ?, version = ?, functions = ? WHERE id = ?",
            now, version, dumps(functions), req.app_id,
        )
        commit = api_pb2.CommitInfo.FromString(old["commit_info"]) if old["commit_info"] else None
        self._record_version(req.app_id, version, now, functions, tag=old["tag"],
                             client_version=old["client_version"], commit_info=commit,
                             rollback_version=target)
        self._refresh_runtime(req.app_id)
        return api_pb2.AppRollbackResponse(url=self._url(req.app_id), deployed_at=now)

    def _stop(self, app_id: str, by: str) -> None:
        self.store.run(
            "UPDATE apps SET state = ?, stopped_at = ?, stopped_by = ? WHERE id = ?",
            STOPPED, time.time(), by, app_id,
        )
        self.emu.runtime.stop_app(app_id)

    def AppStop(self, req: api_pb2.AppStopRequest, ctx: Ctx) -> empty_pb2.Empty:
        row = app_row(self.emu, req.app_id)
        if row["state"] != STOPPED:
            self._stop(req.app_id, DEPLOYED_BY)
        return empty_pb2.Empty()

    # -- reading -------------------------------------------------------------------------
    def AppList(self, req: api_pb2.AppListRequest, ctx: Ctx) -> api_pb2.AppListResponse:
        env_id = self.emu.environment_id(req.environment_name)
        rows = self.store.all(
            "SELECT * FROM apps WHERE env_id = ? AND (state != ? OR stopped_at > ?)"
            " ORDER BY created_at", env_id, STOPPED, time.time() - 3600,
        )
        return api_pb2.AppListResponse(apps=[
            api_pb2.AppListResponse.AppListItem(
                app_id=r["id"], description=r["description"], state=r["state"],
                created_at=r["created_at"], stopped_at=r["stopped_at"], name=r["name"],
                metadata=handle_metadata(self.emu, r),
                n_running_tasks=len(self.emu.runtime.tasks_of(r["id"])),
            )
            for r in rows
        ])

    def AppGetInfo(self, req: api_pb2.AppGetInfoRequest, ctx: Ctx) -> api_pb2.AppGetInfoResponse:
        from harvest_iac.emulator.services.functions import function_summary

        row = app_row(self.emu, req.app_id)
        summaries = {
            function_id: function_summary(self.emu, definition_id)
            for function_id, definition_id in app_functions(row).values()
        }
        return api_pb2.AppGetInfoResponse(
            info=handle_metadata(self.emu, row), function_info_summaries=summaries
        )

    # -- tags ----------------------------------------------------------------------------
    def AppGetTags(self, req: api_pb2.AppGetTagsRequest, ctx: Ctx) -> api_pb2.AppGetTagsResponse:
        row = app_row(self.emu, req.app_id)
        return api_pb2.AppGetTagsResponse(tags=json.loads(row["tags"]))

    def AppSetTags(self, req: api_pb2.AppSetTagsRequest, ctx: Ctx) -> empty_pb2.Empty:
        for key, value in req.tags.items():
            if not _TAG.match(key) or not (value == "" or _TAG.match(value)):
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"Invalid app tag {key!r}: keys and values are up to 63 characters of"
                    " letters, digits, '-', '_' and '.'",
                )
        app_row(self.emu, req.app_id)  # the complete set replaces the previous tags
        self.store.run("UPDATE apps SET tags = ? WHERE id = ?", dumps(dict(req.tags)), req.app_id)
        return empty_pb2.Empty()
