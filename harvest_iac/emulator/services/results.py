"""Results between the protocol (`GenericResult`) and the runtime (`Result`, opaque bytes)."""

from __future__ import annotations

from modal_proto import api_pb2

from harvest_iac.emulator.runtime.calls import Result, Status

GS = api_pb2.GenericResult
_TO_RUNTIME = {
    GS.GENERIC_STATUS_SUCCESS: Status.SUCCESS,
    GS.GENERIC_STATUS_TERMINATED: Status.TERMINATED,
    GS.GENERIC_STATUS_TIMEOUT: Status.TIMEOUT,
    GS.GENERIC_STATUS_INTERNAL_FAILURE: Status.INTERNAL_FAILURE,
}
_TO_PROTO = {
    Status.SUCCESS: GS.GENERIC_STATUS_SUCCESS,
    Status.FAILURE: GS.GENERIC_STATUS_FAILURE,
    Status.TERMINATED: GS.GENERIC_STATUS_TERMINATED,
    Status.TIMEOUT: GS.GENERIC_STATUS_TIMEOUT,
    Status.INTERNAL_FAILURE: GS.GENERIC_STATUS_INTERNAL_FAILURE,
}


def runtime_result(result: api_pb2.GenericResult, data_format: int = 0) -> Result:
    """A container's result, kept whole (data, exception, traceback) for the caller."""
    status = _TO_RUNTIME.get(result.status, Status.FAILURE)
    return Result(status, body=result.SerializeToString(), message=result.exception,
                  data_format=data_format)


def generic_result(result: Result) -> api_pb2.GenericResult:
    """The caller's view of a result: the container's own, or one the runtime made."""
    if result.body:
        decoded: api_pb2.GenericResult = api_pb2.GenericResult.FromString(result.body)
        return decoded
    return api_pb2.GenericResult(status=_TO_PROTO[result.status], exception=result.message)
