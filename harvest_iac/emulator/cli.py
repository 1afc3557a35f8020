"""`harvest emulator serve`: the local Modal in the foreground; `harvest emulator trigger`:
run a scheduled function now."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harvest_iac.emulator.server import Emulator, Faults
from harvest_iac.errors import BackendError, TargetError

if TYPE_CHECKING:
    from harvest_iac.modal_rpc import Credentials


def serve(
    *,
    host: str,
    port: int,
    http_port: int,
    data_dir: str,
    latency_ms: float | None,
    error_rate: float | None,
    verbose: bool,
) -> None:
    _log_to_stderr(verbose)
    faults = Faults.from_env()
    if latency_ms is not None:
        faults.latency_ms = latency_ms
    if error_rate is not None:
        faults.error_rate = error_rate

    async def run() -> None:
        emu = Emulator(Path(data_dir).resolve(), host=host, port=port, http_port=http_port,
                       faults=faults)
        try:
            await emu.start()
        except OSError as exc:
            emu.store.close()
            raise TargetError(f"The local Modal cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if not emu.loopback_only:
            click.echo(f"warning: the local Modal listens on {host}, not only on this machine: anyone "
                       "who can reach it and has the token can run code here as you", err=True)
        api, files = emu.listening
        click.echo(f"# The local Modal is running on {api} (files on {files}). Point the modal client at it with:")
        for key, value in emu.client_env().items():
            click.echo(f"export {key}={shlex.quote(value)}")
        click.echo(f"# File bytes and RPC counts (/_stats) are served on {emu.http_url}")
        click.echo("# Stop with Ctrl-C.", err=False)
        await stop.wait()
        await emu.stop()

    asyncio.run(run())


def _log_to_stderr(verbose: bool) -> None:
    """The emulator's own lines (with -v every call: method, status, duration). Other
    libraries stay at WARNING: at DEBUG, hpack logs every header, tokens included."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("harvest").setLevel(logging.DEBUG if verbose else logging.INFO)


def trigger(*, app: str, function: str, environment: str, data_dir: str) -> None:
    """Run a scheduled function now, the way its next tick would (no arguments, a spawned
    call, the function's retries), wait for it and report how it ended. The local Modal is
    the running one `MODAL_SERVER_URL` names (`harvest emulator serve`), else one started
    here on `data_dir`."""
    from modal_proto import api_pb2

    from harvest_iac.modal_rpc import credentials_from_env

    if os.environ.get("MODAL_SERVER_URL"):
        call_id, result = asyncio.run(_trigger(credentials_from_env(), app, function, environment))
    else:
        from harvest_iac.emulator.server import LocalModal

        with LocalModal(Path(data_dir).resolve()) as local:
            creds = credentials_from_env(local.client_env())
            call_id, result = asyncio.run(_trigger(creds, app, function, environment))

    if result.status != api_pb2.GenericResult.GENERIC_STATUS_SUCCESS:
        why = result.exception or api_pb2.GenericResult.GenericStatus.Name(result.status)
        raise BackendError(f"{app}.{function} ({call_id}) failed: {why}")
    click.echo(f"{app}.{function} ran ({call_id}): success")


async def _trigger(creds: Credentials, app: str, function: str, environment: str) -> tuple[str, Any]:
    from modal_proto import api_pb2

    from harvest_iac.modal_rpc import RpcClient

    conn = await RpcClient(creds).open()
    try:
        found = await conn.call("FunctionGet", api_pb2.FunctionGetRequest(
            app_name=app, object_tag=function, environment_name=environment))
        where = f"environment {environment!r}" if environment else "the default environment"
        if found is None:
            raise TargetError(f"no function {function!r} in a deployed app {app!r} in {where}")
        if not found.function.HasField("schedule"):
            raise TargetError(f"{app}.{function} has no schedule: trigger runs scheduled "
                              "functions (call others with .remote())")
        empty = api_pb2.FunctionInput(data_format=api_pb2.DATA_FORMAT_PICKLE)
        started = await conn.call("FunctionMap", api_pb2.FunctionMapRequest(
            function_id=found.function_id, function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY,
            function_call_invocation_type=api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC,
            pipelined_inputs=[api_pb2.FunctionPutInputsItem(idx=0, input=empty)],
        ), missing_ok=False)
        call_id = started.function_call_id
        while True:
            got = await conn.call("FunctionGetOutputs", api_pb2.FunctionGetOutputsRequest(
                function_call_id=call_id, timeout=50, last_entry_id="0-0", start_idx=0, end_idx=0,
            ), missing_ok=False)
            if got.outputs:
                return call_id, got.outputs[0].result
    finally:
        conn.close()
