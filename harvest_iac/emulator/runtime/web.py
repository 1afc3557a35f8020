"""The web front: where deployed web endpoints (`@modal.fastapi_endpoint`, `@modal.asgi_app`,
`@modal.wsgi_app`, `@modal.web_server`) are served on this machine.

Each endpoint listens on a local port of its own, so its URL (`http://127.0.0.1:PORT`) works
in curl, browsers and Python alike, and the app lives at `/`, as on Modal. An HTTP/1.1
request there becomes an ASGI exchange: the request's scope and its body (`http.request`
messages, as they arrive) go to the handler the API layer registered, which runs them as a
call of the function; the ASGI messages it yields (`http.response.start`, then
`http.response.body`, streamed) become the HTTP response.

Plain ASGI dicts cross this interface; the API layer encodes them for the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("harvest.emulator.runtime")

Message = dict[str, Any]
Handler = Callable[[str, Message, AsyncIterator[Message]], AsyncIterator[Message]]
"""(endpoint key, ASGI scope, the request's `http.request` messages) -> the response's
ASGI messages."""

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
SHUTDOWN_S = 2.0


class WebError(Exception):
    """The exchange cannot go on: answered with `status` and `message` when the response has
    not started, else the connection is dropped."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class _Endpoint:
    app_id: str
    port: int
    runner: web.ServerRunner


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `port`, or on a free port when that one is taken (or 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError:
        if port == 0:
            raise
        log.warning("port %d is taken: a web endpoint moves to another port", port)
        return socket.create_server((host, 0), family=family)


def http_scope(request: web.BaseRequest) -> Message:
    """The ASGI `http` scope of a request."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    local = transport.get_extra_info("sockname") if transport is not None else None
    url = request.rel_url
    return {
        "type": "http", "asgi": dict(ASGI_VERSION),
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": "http",
        "path": url.path, "raw_path": url.raw_path.encode("latin-1"), "root_path": "",
        "query_string": url.raw_query_string.encode("latin-1"),
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        **({"client": (peer[0], peer[1])} if peer else {}),
        **({"server": (local[0], local[1])} if local else {}),
    }


async def _request_messages(request: web.BaseRequest) -> AsyncIterator[Message]:
    """The request's body as `http.request` messages, each chunk as it arrives."""
    more = True
    while more:
        chunk = await request.content.readany()
        more = bool(chunk) and not request.content.at_eof()
        yield {"type": "http.request", "body": chunk, "more_body": more}


def _plain(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class _Reply:
    """The HTTP response the ASGI messages of one exchange make."""

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.done = False

    @property
    def started(self) -> bool:
        return self.response is not None and self.response.prepared

    async def relay(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start" and self.response is None:
            self.response = web.StreamResponse(status=int(message.get("status", 200)))
            for name, value in message.get("headers", []):
                self.response.headers.add(_text(name), _text(value))
        elif kind == "http.response.body" and self.response is not None:
            if not self.response.prepared:
                await self.response.prepare(self.request)
            if message.get("body"):
                await self.response.write(message["body"])
            if not message.get("more_body"):
                await self.response.write_eof()
                self.done = True

    def cut(self) -> web.StreamResponse:
        """The response cannot be completed: the connection is dropped, so the client sees it
        cut short rather than a complete, truncated body."""
        assert self.response is not None
        if self.request.transport is not None:
            self.request.transport.abort()
        return self.response

    async def finish(self) -> web.StreamResponse:
        """The response, ended (an app that sent a start but no body gets an empty one)."""
        if self.response is None:
            return _plain(502, "Bad Gateway: the web endpoint sent no response")
        if not self.done:
            await self.relay({"type": "http.response.body"})
        return self.response


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class WebFront:
    """The listening web endpoints, each by a key the API layer chooses."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.handler: Handler | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._jobs: set[asyncio.Task[None]] = set()

    def open(self, key: str, app_id: str, port: int = 0) -> int:
        """Serve `key` from now on (on `port` when given and free); its port. Idempotent."""
        found = self._endpoints.get(key)
        if found is not None:
            return found.port
        sock = _listen(self.host, port)
        server = web.Server(functools.partial(self._serve, key), handler_cancellation=True)
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_S)
        endpoint = _Endpoint(app_id, int(sock.getsockname()[1]), runner)
        self._endpoints[key] = endpoint
        self._job(self._start(endpoint.runner, sock))
        return endpoint.port

    def port(self, key: str) -> int | None:
        endpoint = self._endpoints.get(key)
        return endpoint.port if endpoint is not None else None

    def close_app(self, app_id: str) -> None:
        """The app stopped: its endpoints stop listening."""
        for key, endpoint in list(self._endpoints.items()):
            if endpoint.app_id == app_id:
                del self._endpoints[key]
                self._job(endpoint.runner.cleanup())

    async def close(self) -> None:
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            await endpoint.runner.cleanup()

    def _job(self, coro: Any) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    @staticmethod
    async def _start(runner: web.ServerRunner, sock: socket.socket) -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    async def _serve(self, key: str, request: web.BaseRequest) -> web.StreamResponse:
        if self.handler is None:
            return _plain(503, "Service Unavailable: the local Modal is starting")
        reply = _Reply(request)
        messages = self.handler(key, http_scope(request), _request_messages(request))
        try:
            async for message in messages:
                await reply.relay(message)
        except WebError as exc:
            if reply.started:
                return reply.cut()
            return _plain(exc.status, exc.message)
        finally:
            with contextlib.suppress(Exception):
                await messages.aclose()  # type: ignore[attr-defined]
        return await reply.finish()
