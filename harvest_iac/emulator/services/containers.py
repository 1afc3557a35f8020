"""The container side of running functions: what Modal's container entrypoint calls.

ContainerHello, ContainerHeartbeat (a long poll that answers early with the inputs to
cancel), FunctionGetInputs (a long poll: inputs, or a kill switch when the container should
exit), FunctionPutOutputs, FunctionCallPutDataOut (generator items and web responses),
FunctionCallGetDataIn (a web request's body), TaskResult (the container failed as a whole)
and ContainerStop. A container is identified by its task token (`x-harvest-task-token`),
never by what it claims in a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.auth import CONTAINER
from harvest_iac.emulator.base import Ctx, Service, streaming
from harvest_iac.emulator.services.apps import app_row
from harvest_iac.emulator.services.container_volumes import LIVE, ContainerVolumes
from harvest_iac.emulator.services.function_runtime import refresh_deployed_apps, run_scheduled
from harvest_iac.emulator.services.invocations import send_data
from harvest_iac.emulator.services.results import runtime_result
from harvest_iac.emulator.services.volumes import VolumeService

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator
    from harvest_iac.emulator.services.sandboxes import SandboxService

S = TypeVar("S", bound=Service)
GET_INPUTS_POLL_S = 50.0
HEARTBEAT_HOLD_S = 13.5
"""Under the client's 15 s interval (and 15.1 s attempt timeout): a cancellation waits at
most the 1.5 s between two heartbeats."""
KILL_SWITCH = api_pb2.FunctionGetInputsResponse(inputs=[api_pb2.FunctionGetInputsItem(kill_switch=True)])


def task_of(ctx: Ctx) -> str:
    """The task id of the container making this call."""
    if ctx.caller.scope != CONTAINER:
        raise GRPCError(Status.PERMISSION_DENIED, f"{ctx.method} is for function containers only")
    return ctx.caller.subject


class ContainerService(Service):
    """The RPCs of a function container."""

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        # First, while the environment's apps are still there to be found.
        emu.environment_delete_hooks.insert(0, self._stop_environment)

    def _stop_environment(self, env_id: str) -> None:
        for row in self.store.all("SELECT id FROM apps WHERE env_id = ?", env_id):
            self.emu.runtime.stop_app(str(row["id"]))

    async def on_start(self) -> None:
        refresh_deployed_apps(self.emu)
        if self.emu.fire_schedules:
            self.emu.runtime.schedules.start(lambda entry: run_scheduled(self.emu, entry.function_id))

    async def ContainerHello(self, req: empty_pb2.Empty, ctx: Ctx) -> empty_pb2.Empty:
        task_of(ctx)
        return empty_pb2.Empty()

    async def ContainerHeartbeat(
        self, req: api_pb2.ContainerHeartbeatRequest, ctx: Ctx
    ) -> api_pb2.ContainerHeartbeatResponse:
        cancel = await self.emu.runtime.cancellations(task_of(ctx), HEARTBEAT_HOLD_S)
        if not cancel:
            return api_pb2.ContainerHeartbeatResponse()
        return api_pb2.ContainerHeartbeatResponse(
            cancel_input_event=api_pb2.CancelInputEvent(input_ids=cancel)
        )

    async def FunctionGetInputs(
        self, req: api_pb2.FunctionGetInputsRequest, ctx: Ctx
    ) -> api_pb2.FunctionGetInputsResponse:
        inputs = await self.emu.runtime.next_inputs(
            task_of(ctx), max(1, req.batch_max_size), GET_INPUTS_POLL_S, slots=req.input_concurrency
        )
        if inputs is None:
            return KILL_SWITCH
        return api_pb2.FunctionGetInputsResponse(inputs=[
            api_pb2.FunctionGetInputsItem(
                input_id=inp.input_id, input=api_pb2.FunctionInput.FromString(inp.body),
                function_call_id=inp.call.call_id,
                function_call_invocation_type=inp.call.invocation,  # type: ignore[arg-type]
                retry_count=inp.retry_count,
            )
            for inp in inputs
        ])

    async def FunctionPutOutputs(
        self, req: api_pb2.FunctionPutOutputsRequest, ctx: Ctx
    ) -> empty_pb2.Empty:
        task_id = task_of(ctx)
        for item in req.outputs:
            self.emu.runtime.put_output(
                task_id, item.input_id, item.retry_count, runtime_result(item.result, item.data_format)
            )
        return empty_pb2.Empty()

    async def FunctionCallPutDataOut(
        self, req: api_pb2.FunctionCallPutDataRequest, ctx: Ctx
    ) -> empty_pb2.Empty:
        task_of(ctx)
        self.emu.runtime.put_data(
            req.function_call_id, [(c.index, c.SerializeToString()) for c in req.data_chunks]
        )
        return empty_pb2.Empty()

    @streaming
    async def FunctionCallGetDataIn(self, stream: Any, ctx: Ctx) -> None:
        """A web request's body (ASGI messages), as the front receives it."""
        task_of(ctx)
        await send_data(stream, self.emu.runtime, lambda call: call.data_in)

    async def TaskResult(self, req: api_pb2.TaskResultRequest, ctx: Ctx) -> empty_pb2.Empty:
        self.emu.runtime.task_result(task_of(ctx), runtime_result(req.result))
        return empty_pb2.Empty()

    async def ContainerStop(
        self, req: api_pb2.ContainerStopRequest, ctx: Ctx
    ) -> api_pb2.ContainerStopResponse:
        """From a container: it stops taking inputs. From a user (`modal container stop`):
        that container stops, now or once its inputs are done (`--graceful`)."""
        if ctx.caller.scope == CONTAINER:
            self.emu.runtime.stop_task(task_of(ctx))
        elif not self.emu.runtime.stop_task(req.task_id, graceful=req.graceful):
            sandbox = self._sandbox_of(req.task_id)
            await self._sandboxes().SandboxTerminateV2(
                api_pb2.SandboxTerminateRequest(sandbox_id=sandbox["id"]), ctx
            )
        return api_pb2.ContainerStopResponse()

    def TaskGetCommandRouterAccess(
        self, req: api_pb2.TaskGetCommandRouterAccessRequest, ctx: Ctx
    ) -> api_pb2.TaskGetCommandRouterAccessResponse:
        """Where `modal container exec` reaches a function container: the task command router."""
        if req.task_id not in self.emu.runtime.tasks:
            raise GRPCError(Status.NOT_FOUND, f"Container '{req.task_id}' not found (or already stopped)")
        access = self._sandboxes().router_access(req.task_id)
        return api_pb2.TaskGetCommandRouterAccessResponse(url=access.url, jwt=access.jwt)

    def TaskGetInfo(self, req: api_pb2.TaskGetInfoRequest, ctx: Ctx) -> api_pb2.TaskGetInfoResponse:
        task = self.emu.runtime.tasks.get(req.task_id)
        if task is not None:
            return api_pb2.TaskGetInfoResponse(app_id=task.pool.config.app_id, info=api_pb2.TaskInfo(
                id=task.task_id, started_at=task.started_at, enqueued_at=task.started_at,
            ))
        sandbox = self._sandbox_of(req.task_id)
        return api_pb2.TaskGetInfoResponse(app_id=sandbox["app_id"], info=api_pb2.TaskInfo(
            id=req.task_id, sandbox_id=sandbox["id"], started_at=sandbox["created_at"],
            enqueued_at=sandbox["created_at"], finished_at=sandbox["finished_at"] or 0.0,
        ))

    def _sandbox_of(self, task_id: str) -> Any:
        row = self.store.one("SELECT * FROM sandboxes WHERE task_id = ?", task_id)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Container '{task_id}' not found (or already stopped)")
        return row

    def _sandboxes(self) -> SandboxService:
        from harvest_iac.emulator.services.sandboxes import SandboxService

        return self._service(SandboxService)

    def _service(self, kind: type[S]) -> S:
        """The emulator's service of a kind (whose methods of the same name this one wraps)."""
        return next(s for s in self.emu.services if isinstance(s, kind))

    # -- volumes in containers: `vol.commit()` and `vol.reload()` ------------------------
    def _container_volumes(self, ctx: Ctx) -> ContainerVolumes | None:
        return LIVE.get(task_of(ctx)) if ctx.caller.scope == CONTAINER else None

    async def VolumeCommit(
        self, req: api_pb2.VolumeCommitRequest, ctx: Ctx
    ) -> api_pb2.VolumeCommitResponse:
        """From a container: its changes to the volume are written back. Elsewhere, as
        the volume service answers."""
        volumes = self._container_volumes(ctx)
        if volumes is not None:
            await volumes.commit(req.volume_id)
        with self.store.tx():
            return self._service(VolumeService).VolumeCommit(req, ctx)

    async def VolumeReload(self, req: api_pb2.VolumeReloadRequest, ctx: Ctx) -> empty_pb2.Empty:
        volumes = self._container_volumes(ctx)
        if volumes is not None:
            await volumes.reload(req.volume_id)
        with self.store.tx():
            return self._service(VolumeService).VolumeReload(req, ctx)

    # -- listing (`modal container list`, the `modal app stop` prompt) -------------------
    def TaskList(self, req: api_pb2.TaskListRequest, ctx: Ctx) -> api_pb2.TaskListResponse:
        """Running containers: function containers, then sandboxes."""
        env_id = "" if req.app_id else self.emu.environment_id(req.environment_name)
        tasks = []
        for task in self.emu.runtime.tasks_of(req.app_id or None):
            app = app_row(self.emu, task.pool.config.app_id)
            if env_id and app["env_id"] != env_id:
                continue
            tasks.append(api_pb2.TaskStats(
                task_id=task.task_id, app_id=app["id"], app_description=app["description"] or app["name"],
                started_at=task.started_at, enqueued_at=task.started_at,
            ))
        return api_pb2.TaskListResponse(tasks=tasks + list(self._sandboxes().TaskList(req, ctx).tasks))
