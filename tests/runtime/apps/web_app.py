"""Web endpoints the runtime tests deploy: a hand-written ASGI app, a WSGI app, FastAPI
endpoints and a `web_server` (`python -m http.server`, on the port RT_WEB_PORT names)."""

import asyncio
import os
import subprocess
import sys

import modal

app = modal.App("rt-web")
WEB_PORT = int(os.environ.get("RT_WEB_PORT", "8000"))


async def asgi_echo(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return  # no lifespan support, which Modal's wrapper accepts
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/boom":
        raise RuntimeError("the endpoint failed")
    if scope["path"] == "/halfway":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the endpoint failed halfway")
    if scope["path"] == "/forever":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            print("the client went away", flush=True)
            raise
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    text = f"{scope['method']} {scope['path']} ?{scope['query_string'].decode()} {body.decode()}"
    await send({"type": "http.response.start", "status": 201 if body else 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-echo", b"yes"),
                            (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]})
    await send({"type": "http.response.body", "body": text.encode()})


def wsgi_hello(environ, start_response):  # type: ignore[no-untyped-def]
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size)
    start_response("202 Accepted", [("Content-Type", "text/plain"), ("X-Wsgi", "1")])
    return [f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']} {body.decode()}".encode()]


@app.function()
@modal.asgi_app()
def echo():  # type: ignore[no-untyped-def]
    return asgi_echo


@app.function()
@modal.wsgi_app()
def hello():  # type: ignore[no-untyped-def]
    return wsgi_hello


@app.function()
@modal.fastapi_endpoint(method="POST")
def add(item: dict) -> dict:  # type: ignore[type-arg]
    return {"sum": item["a"] + item["b"]}


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def secret_word() -> str:
    return "swordfish"


@app.function(secrets=[modal.Secret.from_dict({"RT_WEB_PORT": str(WEB_PORT)})])
@modal.web_server(WEB_PORT, startup_timeout=30)
def files() -> None:
    root = os.path.join(os.environ.get("HARVEST_CONTAINER_ROOT", "/"), "tmp", "site")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "hello.txt"), "w") as f:
        f.write("served by http.server\n")
    subprocess.Popen([sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", "0.0.0.0",
                      "--directory", root])
