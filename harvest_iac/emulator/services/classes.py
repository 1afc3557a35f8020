"""Classes (`@app.cls`): ClassCreate, ClassGet, and FunctionBindParams for instances.

A class is served by its *class service function* `Name.*` (an ordinary stored function
whose definition lists the methods); the class id names it in an app. `AppPublish` records
each class id under its name (`publish_classes`), so `Cls.from_name` finds it and a
redeploy keeps it.

An instance with parameters or `with_options(...)` is a *bound function*: its own function
id, the base function plus the serialized parameters and the option overrides. The same
binding always gets the same id, and the runtime runs each bound id in its own pool.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service
from harvest_iac.emulator.services.apps import app_row, deployed_app
from harvest_iac.emulator.services.functions import function_handle_metadata
from harvest_iac.emulator.store import new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS classes_by_app ON classes (app_id, name);
CREATE TABLE IF NOT EXISTS bound_functions (
    id TEXT PRIMARY KEY, base_id TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
    params BLOB NOT NULL, options BLOB NOT NULL, created_at REAL NOT NULL
);
"""


# -- the interface other services use ---------------------------------------------------
def publish_classes(emu: Emulator, app_id: str, class_ids: dict[str, str]) -> None:
    """Name the app's classes as the client published them."""
    for name, class_id in class_ids.items():
        emu.store.run("UPDATE classes SET name = ? WHERE id = ? AND app_id = ?", name, class_id, app_id)


def app_classes(emu: Emulator, app_id: str) -> dict[str, str]:
    """{class name: class id} of an app."""
    rows = emu.store.all("SELECT id, name FROM classes WHERE app_id = ? AND name != ''", app_id)
    return {str(r["name"]): str(r["id"]) for r in rows}


def binding(emu: Emulator, function_id: str) -> tuple[str, bytes, api_pb2.FunctionOptions] | None:
    """(base function id, serialized parameters, options) of a bound function id, else None."""
    row = emu.store.one("SELECT base_id, params, options FROM bound_functions WHERE id = ?", function_id)
    if row is None:
        return None
    return str(row["base_id"]), bytes(row["params"]), api_pb2.FunctionOptions.FromString(row["options"])


class ClassService(Service):
    """ClassCreate, ClassGet, FunctionBindParams."""

    schema = SCHEMA

    def ClassCreate(self, req: api_pb2.ClassCreateRequest, ctx: Ctx) -> api_pb2.ClassCreateResponse:
        app_row(self.emu, req.app_id)
        existing = self.store.one(
            "SELECT id FROM classes WHERE id = ? AND app_id = ?", req.existing_class_id, req.app_id
        ) if req.existing_class_id else None
        class_id = str(existing["id"]) if existing else new_id("cs")
        if existing is None:
            self.store.run("INSERT INTO classes (id, app_id, created_at) VALUES (?, ?, ?)",
                           class_id, req.app_id, time.time())
        return api_pb2.ClassCreateResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())

    def ClassGet(self, req: api_pb2.ClassGetRequest, ctx: Ctx) -> api_pb2.ClassGetResponse:
        env_id = self.emu.environment_id(req.environment_name)
        app = deployed_app(self.emu, env_id, req.app_name)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
        class_id = app_classes(self.emu, str(app["id"])).get(req.object_tag)
        if class_id is None:
            raise GRPCError(Status.NOT_FOUND, f"Class '{req.object_tag}' not found in app '{req.app_name}'")
        return api_pb2.ClassGetResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())

    def FunctionBindParams(
        self, req: api_pb2.FunctionBindParamsRequest, ctx: Ctx
    ) -> api_pb2.FunctionBindParamsResponse:
        metadata = function_handle_metadata(self.emu, req.function_id)
        options = req.function_options.SerializeToString(deterministic=True)
        digest = hashlib.sha256(
            b"\0".join((req.function_id.encode(), req.serialized_params, options))
        ).hexdigest()
        row = self.store.one("SELECT id FROM bound_functions WHERE digest = ?", digest)
        bound_id = str(row["id"]) if row else new_id("fu")
        if row is None:
            self.store.run(
                "INSERT INTO bound_functions (id, base_id, digest, params, options, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                bound_id, req.function_id, digest, req.serialized_params, options, time.time(),
            )
        metadata.base_function_id = req.function_id
        return api_pb2.FunctionBindParamsResponse(bound_function_id=bound_id, handle_metadata=metadata)
