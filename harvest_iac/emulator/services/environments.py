"""Client hello and environments: every other object is scoped to one environment."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import IMAGE_BUILDER_VERSION, Ctx, Service
from harvest_iac.emulator.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS environment_settings (
    env_id TEXT PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    web_suffix TEXT, max_concurrent_tasks INTEGER, max_concurrent_gpus INTEGER, budget REAL,
    image_builder_version TEXT, block_unauthenticated_resources INTEGER
);
"""
_BLOCK = api_pb2.ENVIRONMENT_BLOCK_UNAUTHENTICATED_RESOURCES_BLOCK
_ALLOW = api_pb2.ENVIRONMENT_BLOCK_UNAUTHENTICATED_RESOURCES_ALLOW
_INHERIT = api_pb2.ENVIRONMENT_BLOCK_UNAUTHENTICATED_RESOURCES_INHERIT


def environment_settings(store: Store, env_id: str) -> dict[str, Any]:
    """What an environment's settings hold (a column is None when never set)."""
    row = store.one("SELECT * FROM environment_settings WHERE env_id = ?", env_id)
    return {} if row is None else {k: row[k] for k in row.keys() if k != "env_id"}


def _set(store: Store, env_id: str, column: str, value: Any) -> None:
    store.run("INSERT OR IGNORE INTO environment_settings (env_id) VALUES (?)", env_id)
    store.run(f"UPDATE environment_settings SET {column} = ? WHERE env_id = ?", value, env_id)


def _builder_version(settings: dict[str, Any]) -> str:
    return str(settings.get("image_builder_version") or IMAGE_BUILDER_VERSION)


def environment_metadata(store: Store, env_id: str, name: str) -> api_pb2.EnvironmentMetadata:
    settings = environment_settings(store, env_id)
    meta = api_pb2.EnvironmentSettings(
        image_builder_version=_builder_version(settings),
        webhook_suffix=_web_suffix(settings, name),
    )
    for key in ("max_concurrent_tasks", "max_concurrent_gpus"):
        if settings.get(key) is not None:
            setattr(meta, key, settings[key])
    if settings.get("block_unauthenticated_resources") is not None:
        meta.block_unauthenticated_resources = bool(settings["block_unauthenticated_resources"])
    return api_pb2.EnvironmentMetadata(name=name, settings=meta)


def _web_suffix(settings: dict[str, Any], name: str) -> str:
    suffix = settings.get("web_suffix")
    return name if suffix is None else str(suffix)


_VALID_ENV_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def check_environment_name(name: str) -> None:
    ok = (
        0 < len(name) <= 64
        and name[0].isascii()
        and name[0].isalnum()
        and set(name) <= _VALID_ENV_CHARS
        and not name.startswith("en-")
    )
    if not ok:
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            f"Invalid environment name: '{name}'. Environment names can only start with "
            "alphanumeric characters, may contain only alphanumeric characters, dashes and "
            "underscores, and must be shorter than 64 characters.",
        )


class EnvironmentService(Service):
    schema = SCHEMA

    def ClientHello(self, req: empty_pb2.Empty, ctx: Ctx) -> api_pb2.ClientHelloResponse:
        return api_pb2.ClientHelloResponse(image_builder_version=IMAGE_BUILDER_VERSION)

    def EnvironmentCreate(self, req: api_pb2.EnvironmentCreateRequest, ctx: Ctx) -> empty_pb2.Empty:
        check_environment_name(req.name)
        if self.store.one("SELECT 1 FROM environments WHERE name = ?", req.name):
            raise GRPCError(Status.ALREADY_EXISTS, f"Environment '{req.name}' already exists")
        self.emu.ensure_environment(req.name)
        return empty_pb2.Empty()

    def EnvironmentGetOrCreate(
        self, req: api_pb2.EnvironmentGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.EnvironmentGetOrCreateResponse:
        name = req.deployment_name
        create = req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
        if name and create:
            check_environment_name(name)
        env_id = self.emu.environment_id(name, create=create)
        row = self.store.one("SELECT name FROM environments WHERE id = ?", env_id)
        assert row is not None
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=env_id, metadata=environment_metadata(self.store, env_id, str(row["name"]))
        )

    def EnvironmentList(self, req: empty_pb2.Empty, ctx: Ctx) -> api_pb2.EnvironmentListResponse:
        rows = self.store.all("SELECT * FROM environments ORDER BY created_at, name")
        return api_pb2.EnvironmentListResponse(items=[self._item(r) for r in rows])

    def _item(self, row: Any, name: str | None = None) -> api_pb2.EnvironmentListItem:
        """An environment as EnvironmentList (and EnvironmentUpdate) show it: its settings and
        this billing cycle's metered spend."""
        from harvest_iac.emulator.services.billing import cycle_usage
        from harvest_iac.emulator.services.limits import running_tasks

        env_id = str(row["id"])
        name = name or str(row["name"])
        settings = environment_settings(self.store, env_id)
        usage = cycle_usage(self.emu, env_id)
        item = api_pb2.EnvironmentListItem(
            name=name, webhook_suffix=_web_suffix(settings, name), created_at=row["created_at"],
            default=bool(row["is_default"]), environment_id=env_id,
            image_builder_version=_builder_version(settings), current_cycle_usage=usage,
            current_concurrent_tasks=running_tasks(self.emu, env_id),
        )
        for key in ("max_concurrent_tasks", "max_concurrent_gpus"):
            if settings.get(key) is not None:
                setattr(item, key, settings[key])
        if settings.get("budget") is not None:
            item.cycle_budget_dollars = settings["budget"]
            item.effective_cycle_spend_limit = settings["budget"]
            item.spend_limit_reached = usage >= settings["budget"]
        if settings.get("block_unauthenticated_resources") is not None:
            item.block_unauthenticated_resources = bool(settings["block_unauthenticated_resources"])
        return item

    def EnvironmentDelete(self, req: api_pb2.EnvironmentDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        row = self.store.one("SELECT id, is_default FROM environments WHERE name = ?", req.name)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{req.name}' not found")
        if row["is_default"]:
            raise GRPCError(Status.FAILED_PRECONDITION, "The default environment cannot be deleted")
        for hook in self.emu.environment_delete_hooks:
            hook(str(row["id"]))
        self.store.run("DELETE FROM environments WHERE id = ?", row["id"])
        return empty_pb2.Empty()

    def EnvironmentUpdate(
        self, req: api_pb2.EnvironmentUpdateRequest, ctx: Ctx
    ) -> api_pb2.EnvironmentListItem:
        row = self.store.one("SELECT * FROM environments WHERE name = ?", req.current_name)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{req.current_name}' not found")
        name = str(row["name"])
        if req.HasField("name"):
            check_environment_name(req.name.value)
            if self.store.one("SELECT 1 FROM environments WHERE name = ?", req.name.value):
                raise GRPCError(Status.ALREADY_EXISTS, f"Environment '{req.name.value}' already exists")
            name = req.name.value
            self.store.run("UPDATE environments SET name = ? WHERE id = ?", name, row["id"])
        env_id = str(row["id"])
        if req.HasField("web_suffix"):
            _set(self.store, env_id, "web_suffix", req.web_suffix.value)
        for key in ("max_concurrent_tasks", "max_concurrent_gpus"):
            if req.HasField(key):
                if getattr(req, key) < 0:
                    raise GRPCError(Status.INVALID_ARGUMENT, f"{key} must not be negative")
                _set(self.store, env_id, key, getattr(req, key))
        if req.HasField("image_builder_version"):
            _set(self.store, env_id, "image_builder_version", req.image_builder_version or None)
        if req.HasField("block_unauthenticated_resources"):
            choice = req.block_unauthenticated_resources
            value = None if choice == _INHERIT else {_BLOCK: 1, _ALLOW: 0}.get(choice)
            if choice not in (_BLOCK, _ALLOW, _INHERIT):
                raise GRPCError(Status.INVALID_ARGUMENT, "block_unauthenticated_resources is unspecified")
            _set(self.store, env_id, "block_unauthenticated_resources", value)
        return self._item(row, name)

    # -- budgets ------------------------------------------------------------------------
    def _environment_row(self, env_id: str) -> Any:
        row = self.store.one("SELECT * FROM environments WHERE id = ?", env_id)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{env_id}' not found")
        return row

    def EnvironmentSetBudget(self, req: api_pb2.EnvironmentSetBudgetRequest, ctx: Ctx) -> empty_pb2.Empty:
        self._environment_row(req.environment_id)
        if req.clear_budget:
            _set(self.store, req.environment_id, "budget", None)
        elif req.HasField("cycle_budget_dollars"):
            if req.cycle_budget_dollars <= 0:
                raise GRPCError(Status.INVALID_ARGUMENT, "The budget must be a positive number of dollars")
            _set(self.store, req.environment_id, "budget", req.cycle_budget_dollars)
        return empty_pb2.Empty()

    def EnvironmentGetBudget(
        self, req: api_pb2.EnvironmentGetBudgetRequest, ctx: Ctx
    ) -> api_pb2.EnvironmentGetBudgetResponse:
        item = self._item(self._environment_row(req.environment_id))
        resp = api_pb2.EnvironmentGetBudgetResponse(
            effective_cycle_spend_limit=item.effective_cycle_spend_limit,
            current_cycle_usage=item.current_cycle_usage, spend_limit_reached=item.spend_limit_reached,
        )
        if item.HasField("cycle_budget_dollars"):
            resp.cycle_budget_dollars = item.cycle_budget_dollars
        return resp
