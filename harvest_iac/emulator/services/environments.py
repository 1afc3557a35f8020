"""Client hello and environments: every other object is scoped to one environment."""

from __future__ import annotations

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import IMAGE_BUILDER_VERSION, Ctx, Service


def environment_metadata(name: str) -> api_pb2.EnvironmentMetadata:
    return api_pb2.EnvironmentMetadata(
        name=name,
        settings=api_pb2.EnvironmentSettings(
            image_builder_version=IMAGE_BUILDER_VERSION, webhook_suffix=name
        ),
    )


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
            environment_id=env_id, metadata=environment_metadata(str(row["name"]))
        )

    def EnvironmentList(self, req: empty_pb2.Empty, ctx: Ctx) -> api_pb2.EnvironmentListResponse:
        rows = self.store.all("SELECT * FROM environments ORDER BY created_at, name")
        return api_pb2.EnvironmentListResponse(
            items=[
                api_pb2.EnvironmentListItem(
                    name=r["name"],
                    webhook_suffix=r["name"],
                    created_at=r["created_at"],
                    default=bool(r["is_default"]),
                    environment_id=r["id"],
                    image_builder_version=IMAGE_BUILDER_VERSION,
                )
                for r in rows
            ]
        )

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
        return api_pb2.EnvironmentListItem(
            name=name, webhook_suffix=name, created_at=row["created_at"],
            default=bool(row["is_default"]), environment_id=row["id"],
        )
