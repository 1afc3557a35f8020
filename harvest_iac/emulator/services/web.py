"""Serving web endpoints: an HTTP request on an endpoint's port (see `runtime/web.py`) becomes
a call of its function, the way Modal's web tier makes one.

The input is the request's ASGI scope (`((scope,), {})`, pickled); Modal's container
entrypoint wraps the user's app (`asgi_app`, `wsgi_app`, `fastapi_endpoint`, or its proxy to
a `web_server`) and reads the request body from the call's data-in stream
(FunctionCallGetDataIn) and sends the response's ASGI messages to its data-out stream
(FunctionCallPutDataOut), both as `Asgi` messages; the call ends with the generator's end, or
a failure (a 500 when no response has started).

Endpoints that ask for proxy auth (`requires_proxy_auth=True`, or every endpoint of an
environment with `block_unauthenticated_resources`) need the headers `Modal-Key` and
`Modal-Secret`: the local Modal's token id and secret.
"""

from __future__ import annotations

import asyncio
import hmac
import pickle
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import Service
from harvest_iac.emulator.http import blob_bytes
from harvest_iac.emulator.runtime.calls import Call
from harvest_iac.emulator.runtime.calls import Status as RunStatus
from harvest_iac.emulator.runtime.web import Message, WebError
from harvest_iac.emulator.services.environments import environment_settings
from harvest_iac.emulator.services.function_runtime import function_config
from harvest_iac.emulator.services.functions import function_data
from harvest_iac.emulator.services.web_endpoints import SCHEMA, is_web, reopen_endpoints

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

RESPONSE_POLL_S = 30.0
PUBLISH_WAIT_S = 10.0
PUBLISH_POLL_S = 0.05
PICKLE_PROTOCOL = 4
AUTH_HEADERS = (b"modal-key", b"modal-secret")
_UNAVAILABLE = {Status.NOT_FOUND: 404, Status.FAILED_PRECONDITION: 503}


def encode_asgi(message: Message) -> api_pb2.Asgi:
    """A request message (`http.request`, `http.disconnect`) as the container reads it."""
    if message["type"] == "http.disconnect":
        return api_pb2.Asgi(http_disconnect=api_pb2.Asgi.HttpDisconnect())
    return api_pb2.Asgi(http_request=api_pb2.Asgi.HttpRequest(
        body=message.get("body", b""), more_body=bool(message.get("more_body")),
    ))


def decode_asgi(asgi: api_pb2.Asgi) -> Message | None:
    """A response message the container sent (others, e.g. trailers, are dropped)."""
    kind = asgi.WhichOneof("type")
    if kind == "http_response_start":
        start = asgi.http_response_start
        pairs = list(start.headers)
        return {"type": "http.response.start", "status": start.status,
                "headers": list(zip(pairs[::2], pairs[1::2]))}
    if kind == "http_response_body":
        body = asgi.http_response_body
        return {"type": "http.response.body", "body": body.body, "more_body": body.more_body}
    return None


def _request_input(scope: Message, method: str) -> bytes:
    """The call's input: the scope as the user's app gets it (without proxy auth headers)."""
    scope = {**scope, "headers": [h for h in scope["headers"] if h[0] not in AUTH_HEADERS]}
    args = pickle.dumps(((scope,), {}), protocol=PICKLE_PROTOCOL)
    return api_pb2.FunctionInput(args=args, data_format=api_pb2.DATA_FORMAT_PICKLE,
                                 method_name=method).SerializeToString()


class WebService(Service):
    """Runs each request to a web endpoint as a call of its function."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        emu.runtime.web.handler = self.exchange

    async def on_start(self) -> None:
        with self.store.tx():
            reopen_endpoints(self.emu)

    async def exchange(self, key: str, scope: Message,
                       requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
        call = await self._start_call(key, scope)
        runtime = self.emu.runtime
        feeder = asyncio.get_running_loop().create_task(self._feed(call, requests))
        responded = False
        try:
            async for message in self._responses(call):
                yield message
                responded = message["type"] == "http.response.body" and not message["more_body"]
        finally:
            feeder.cancel()
            if not call.finished and not responded:  # the client went away mid-request
                self._put_in(call, {"type": "http.disconnect"})
                runtime.cancel(call, terminate_containers=False)
            runtime.clear(call)

    async def _start_call(self, key: str, scope: Message) -> Call:
        row = self.store.one("SELECT function_id, method FROM web_endpoints WHERE key = ?", key)
        if row is None:
            raise WebError(404, "Not Found: no web endpoint here")
        function_id, method = str(row["function_id"]), str(row["method"])
        await self._published(function_id)
        try:
            config = function_config(self.emu, function_id)
            webhook = self._webhook(function_id, method)
        except GRPCError as exc:
            raise WebError(_UNAVAILABLE.get(exc.status, 500), str(exc.message)) from None
        self._authorize(webhook, config.app_id, scope)
        runtime = self.emu.runtime
        runtime.configure(config)
        call = runtime.new_call(config.key, config.app_id, config.function_id,
                                api_pb2.FUNCTION_CALL_INVOCATION_TYPE_SYNC)
        runtime.add_inputs(call, [(0, _request_input(scope, method))])
        return call

    async def _published(self, function_id: str) -> None:
        """Wait (briefly) for a function just created to be published: `modal serve` and
        `modal run` print its URL before the app is."""
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while time.monotonic() < deadline:
            row = self.store.one("SELECT definition_id FROM functions WHERE id = ?", function_id)
            if row is None or row["definition_id"]:
                return
            await asyncio.sleep(PUBLISH_POLL_S)

    def _webhook(self, function_id: str, method: str) -> api_pb2.WebhookConfig:
        """What the served definition says of the endpoint (NOT_FOUND if it is one no more)."""
        row = self.store.one("SELECT definition_id FROM functions WHERE id = ?", function_id)
        definition = function_data(self.emu, str(row["definition_id"])) if row is not None else None
        webhook = api_pb2.WebhookConfig()
        if definition is not None and not method:
            webhook = definition.webhook_config
        elif definition is not None and method in definition.method_definitions:
            webhook = definition.method_definitions[method].webhook_config
        if not is_web(webhook):
            raise GRPCError(Status.NOT_FOUND, "Not Found: this function is no longer a web endpoint")
        return webhook

    def _authorize(self, webhook: api_pb2.WebhookConfig, app_id: str, scope: Message) -> None:
        row = self.store.one("SELECT env_id FROM apps WHERE id = ?", app_id)
        blocked = row is not None and environment_settings(self.store, str(row["env_id"])).get(
            "block_unauthenticated_resources")
        if not (webhook.requires_proxy_auth or blocked):
            return
        headers = dict(scope["headers"])
        key, secret = (headers.get(name, b"").decode("latin-1") for name in AUTH_HEADERS)
        if not (hmac.compare_digest(key, self.emu.token_id)
                and hmac.compare_digest(secret, self.emu.token_secret)):
            raise WebError(401, "Unauthorized: this endpoint needs the headers Modal-Key and"
                                " Modal-Secret (the local Modal's token id and secret)")

    @staticmethod
    def _put_in(call: Call, message: Message) -> None:
        index = len(call.data_in.chunks) + 1
        chunk = api_pb2.DataChunk(data_format=api_pb2.DATA_FORMAT_ASGI, index=index,
                                  data=encode_asgi(message).SerializeToString())
        call.data_in.put([(index, chunk.SerializeToString())])

    async def _feed(self, call: Call, requests: AsyncIterator[Message]) -> None:
        async for message in requests:
            self._put_in(call, message)

    async def _responses(self, call: Call) -> AsyncIterator[Message]:
        """The response's messages as the container sends them, until the call ends."""
        last = 0
        while True:
            finished = call.finished
            for index, body in call.data_out.after(last):
                last = index
                message = decode_asgi(api_pb2.Asgi.FromString(self._chunk_bytes(body)))
                if message is not None:
                    yield message
            if finished:
                break
            await call.changed.wait(RESPONSE_POLL_S)
        result = call.outputs[-1].result if call.outputs else None
        if result is None or result.status != RunStatus.SUCCESS:
            raise WebError(500, "Internal Server Error")

    def _chunk_bytes(self, body: bytes) -> bytes:
        chunk = api_pb2.DataChunk.FromString(body)
        return blob_bytes(self.emu, chunk.data_blob_id) if chunk.data_blob_id else chunk.data
