"""The caller's side of running functions: `.remote()`, `.remote_gen()`, `.spawn()`, `.map()`
and friends.

FunctionMap starts a call (with its first input pipelined for a unary call),
FunctionPutInputs adds inputs, FunctionGetOutputs long-polls for outputs (by index, or after
a cursor), FunctionCallGetDataOut streams a generator's items, FunctionCallCancel,
FunctionCallFromId, FunctionCallGetInfo, FunctionFinishInputs (spawn_map) and
FunctionRetryInputs. Retries are the server's (`sync_client_retries_enabled` is never set),
so outputs always carry retry count 0, the count the client expects then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service, streaming
from harvest_iac.emulator.runtime.calls import Call, DataStream, Input, Output
from harvest_iac.emulator.runtime.calls import Status as RunStatus
from harvest_iac.emulator.runtime.scheduler import Scheduler
from harvest_iac.emulator.services.function_runtime import function_config
from harvest_iac.emulator.services.limits import check_can_start
from harvest_iac.emulator.services.results import generic_result
from harvest_iac.emulator.tokens import issue_jwt, verify_jwt

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

OUTPUTS_POLL_MAX_S = 50.0
MAX_INPUTS_OUTSTANDING = 1000
DATA_OUT_POLL_S = 30.0
JWT_LIFETIME_S = 7 * 24 * 3600.0


def _entry(last_entry_id: str) -> int:
    head = last_entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


async def send_data(stream: Any, runtime: Scheduler, which: Callable[[Call], DataStream]) -> None:
    """Stream a call's data chunks (`which` of its streams) after the index asked for, for as
    long as the call lives."""
    req: api_pb2.FunctionCallGetDataRequest = await stream.recv_message()
    call = runtime.calls.get(req.function_call_id)
    last = int(req.last_index)
    while call is not None and call.call_id in runtime.calls:
        for index, body in which(call).after(last):
            await stream.send_message(api_pb2.DataChunk.FromString(body))
            last = index
        await call.changed.wait(DATA_OUT_POLL_S)


def output_item(output: Output) -> api_pb2.FunctionGetOutputsItem:
    return api_pb2.FunctionGetOutputsItem(
        result=generic_result(output.result), idx=output.idx, input_id=output.input_id,
        data_format=output.result.data_format,  # type: ignore[arg-type]
        task_id=output.task_id, input_started_at=output.started_at,
        output_created_at=output.finished_at, retry_count=0,
    )


def blobs_of(call: Call) -> Iterable[str]:
    """The blob ids a call still needs: its pending inputs' arguments, its results, and the
    generator items or web request bodies that went through blobs."""
    for inp in call.inputs.values():
        if not inp.done:
            yield api_pb2.FunctionInput.FromString(inp.body).args_blob_id
    for output in call.outputs:
        if output.result.body:
            yield api_pb2.GenericResult.FromString(output.result.body).data_blob_id
    for stream in (call.data_in, call.data_out):
        for body in stream.chunks.values():
            yield api_pb2.DataChunk.FromString(body).data_blob_id


class InvocationService(Service):
    """Function calls from the caller's side."""

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        # A spawned call's result is read when the caller wants it (maybe days later): the
        # blobs of the calls the local Modal still holds outlive the blobs' usual hour.
        emu.blob_roots.append(self._blobs_in_use)

    def _blobs_in_use(self) -> set[str]:
        return {b for call in list(self.emu.runtime.calls.values()) for b in blobs_of(call) if b}

    # -- tokens --------------------------------------------------------------------------
    def _input_jwt(self, inp: Input) -> str:
        return issue_jwt(self.emu.token_secret, {
            "idx": inp.idx, "input_id": inp.input_id, "function_call_id": inp.call.call_id,
            "retry_count": inp.retry_count,
        }, lifetime_s=JWT_LIFETIME_S)

    def _input_items(self, inputs: list[Input]) -> list[api_pb2.FunctionPutInputsResponseItem]:
        return [api_pb2.FunctionPutInputsResponseItem(
            idx=inp.idx, input_id=inp.input_id, input_jwt=self._input_jwt(inp)
        ) for inp in inputs]

    def _claims(self, token: str) -> dict[str, Any]:
        claims = verify_jwt(self.emu.token_secret, token)
        if claims is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "Invalid or expired function call token")
        return claims

    def _call(self, call_id: str) -> Call:
        call = self.emu.runtime.calls.get(call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call '{call_id}' not found (or expired)")
        return call

    # -- starting calls ------------------------------------------------------------------
    def FunctionMap(self, req: api_pb2.FunctionMapRequest, ctx: Ctx) -> api_pb2.FunctionMapResponse:
        runtime = self.emu.runtime
        config = function_config(self.emu, req.function_id)
        check_can_start(self.emu, config.environment_id, sandbox=False)
        runtime.configure(config)
        call = runtime.new_call(config.key, config.app_id, config.function_id,
                                req.function_call_invocation_type)
        inputs = runtime.add_inputs(
            call, [(item.idx, item.input.SerializeToString()) for item in req.pipelined_inputs]
        )
        retry = config.retry
        return api_pb2.FunctionMapResponse(
            function_call_id=call.call_id,
            function_call_jwt=issue_jwt(self.emu.token_secret, {
                "function_id": req.function_id, "function_call_id": call.call_id,
            }, lifetime_s=JWT_LIFETIME_S),
            pipelined_inputs=self._input_items(inputs),
            retry_policy=api_pb2.FunctionRetryPolicy(
                retries=retry.retries, backoff_coefficient=retry.backoff_coefficient,
                initial_delay_ms=int(retry.initial_delay_s * 1000), max_delay_ms=int(retry.max_delay_s * 1000),
            ),
            sync_client_retries_enabled=False,
            max_inputs_outstanding=MAX_INPUTS_OUTSTANDING,
        )

    def FunctionPutInputs(
        self, req: api_pb2.FunctionPutInputsRequest, ctx: Ctx
    ) -> api_pb2.FunctionPutInputsResponse:
        call = self._call(req.function_call_id)
        inputs = self.emu.runtime.add_inputs(
            call, [(item.idx, item.input.SerializeToString()) for item in req.inputs]
        )
        return api_pb2.FunctionPutInputsResponse(inputs=self._input_items(inputs))

    def FunctionFinishInputs(self, req: api_pb2.FunctionFinishInputsRequest, ctx: Ctx) -> empty_pb2.Empty:
        self.emu.runtime.finish_inputs(self._call(req.function_call_id), req.num_inputs)
        return empty_pb2.Empty()

    def FunctionRetryInputs(
        self, req: api_pb2.FunctionRetryInputsRequest, ctx: Ctx
    ) -> api_pb2.FunctionRetryInputsResponse:
        call = self._call(str(self._claims(req.function_call_jwt).get("function_call_id", "")))
        tokens = []
        for item in req.inputs:
            input_id = str(self._claims(item.input_jwt).get("input_id", ""))
            inp = self.emu.runtime.retry_input(input_id, item.input.SerializeToString(), item.retry_count)
            if inp is None or inp.call is not call:
                raise GRPCError(Status.NOT_FOUND, f"Input '{input_id}' not found in this call")
            tokens.append(self._input_jwt(inp))
        return api_pb2.FunctionRetryInputsResponse(input_jwts=tokens)

    # -- reading results -----------------------------------------------------------------
    async def FunctionGetOutputs(
        self, req: api_pb2.FunctionGetOutputsRequest, ctx: Ctx
    ) -> api_pb2.FunctionGetOutputsResponse:
        runtime = self.emu.runtime
        wait = min(max(req.timeout, 0.0), OUTPUTS_POLL_MAX_S)
        call = runtime.calls.get(req.function_call_id)
        if call is None:
            await asyncio.sleep(wait)  # gone (or never known): an answer, but not a busy loop
            return api_pb2.FunctionGetOutputsResponse(last_entry_id=req.last_entry_id or "0-0")
        ranged = req.HasField("start_idx")
        if req.clear_on_success and not ranged:  # a map's final acknowledgement
            runtime.clear(call)
            return api_pb2.FunctionGetOutputsResponse(last_entry_id=req.last_entry_id,
                                                      num_unfinished_inputs=call.unfinished)
        after = None if ranged else _entry(req.last_entry_id)
        outputs = await runtime.wait_outputs(
            call, after=after, start=req.start_idx, end=req.end_idx if req.HasField("end_idx") else req.start_idx,
            timeout=wait,
        )
        if req.clear_on_success and call.finished and all(
            o.result.status == RunStatus.SUCCESS for o in call.outputs
        ):
            runtime.clear(call)
        last = (after or 0) + len(outputs) if not ranged else _entry(req.last_entry_id)
        return api_pb2.FunctionGetOutputsResponse(
            outputs=[output_item(o) for o in outputs], idxs=[o.idx for o in outputs],
            last_entry_id=f"{last}-0", num_unfinished_inputs=call.unfinished,
        )

    @streaming
    async def FunctionCallGetDataOut(self, stream: Any, ctx: Ctx) -> None:
        await send_data(stream, self.emu.runtime, lambda call: call.data_out)

    # -- managing calls ------------------------------------------------------------------
    def FunctionCallCancel(self, req: api_pb2.FunctionCallCancelRequest, ctx: Ctx) -> empty_pb2.Empty:
        call = self.emu.runtime.calls.get(req.function_call_id)
        if call is not None:
            self.emu.runtime.cancel(call, terminate_containers=req.terminate_containers)
        return empty_pb2.Empty()

    def FunctionCallFromId(
        self, req: api_pb2.FunctionCallFromIdRequest, ctx: Ctx
    ) -> api_pb2.FunctionCallFromIdResponse:
        call = self._call(req.function_call_id)
        return api_pb2.FunctionCallFromIdResponse(
            function_call_id=call.call_id, num_inputs=call.num_inputs,
            metadata=api_pb2.FunctionCallHandleMetadata(app_id=call.app_id, function_id=call.function_id),
        )

    def FunctionCallGetInfo(
        self, req: api_pb2.FunctionCallGetInfoRequest, ctx: Ctx
    ) -> api_pb2.FunctionCallGetInfoResponse:
        call = self._call(req.function_call_id)
        counts = {status: 0 for status in RunStatus}
        for output in call.outputs:
            counts[output.result.status] += 1
        stats = api_pb2.InputCategoryInfo
        return api_pb2.FunctionCallGetInfoResponse(info=api_pb2.FunctionCallInfo(
            function_call_id=call.call_id, created_at=call.created_at, total_inputs=call.num_inputs,
            pending_inputs=stats(total=call.unfinished),
            succeeded_inputs=stats(total=counts[RunStatus.SUCCESS]),
            failed_inputs=stats(total=counts[RunStatus.FAILURE] + counts[RunStatus.INTERNAL_FAILURE]),
            timeout_inputs=stats(total=counts[RunStatus.TIMEOUT]),
            cancelled_inputs=stats(total=counts[RunStatus.TERMINATED]),
        ))
