"""Where web endpoints are: each web function (and each web method of a class) of a running
app listens on a local port of its own, kept across restarts of the local Modal while it is
free; its URL is `http://127.0.0.1:PORT`.

The URL is not part of the stored definition: it is filled in when a definition is read
(FunctionCreate's answer, FunctionGet, handle metadata), which is also when the endpoint
starts listening. A stopped app's endpoints stop (the runtime closes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modal_proto import api_pb2

from harvest_iac.emulator.services.apps import STOPPED

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_endpoints (
    key TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    method TEXT NOT NULL,
    app_id TEXT NOT NULL,
    port INTEGER NOT NULL
);
"""


def endpoint_key(function_id: str, method: str = "") -> str:
    return f"{function_id}.{method}" if method else function_id


def is_web(webhook: api_pb2.WebhookConfig) -> bool:
    return webhook.type != api_pb2.WEBHOOK_TYPE_UNSPECIFIED


def open_endpoint(emu: Emulator, app_id: str, function_id: str, method: str = "") -> str:
    """The endpoint's URL, listening from now on (on the port it had, when free); "" when its
    app has stopped."""
    app = emu.store.one("SELECT state FROM apps WHERE id = ?", app_id)
    if app is None or app["state"] == STOPPED:
        return ""
    key = endpoint_key(function_id, method)
    row = emu.store.one("SELECT port FROM web_endpoints WHERE key = ?", key)
    port = emu.runtime.web.open(key, app_id, int(row["port"]) if row is not None else 0)
    if row is None or int(row["port"]) != port:
        emu.store.run(
            "INSERT OR REPLACE INTO web_endpoints (key, function_id, method, app_id, port)"
            " VALUES (?, ?, ?, ?, ?)", key, function_id, method, app_id, port,
        )
    return emu.local_url(port)


def fill_web_urls(emu: Emulator, app_id: str, function_id: str, definition: Any) -> None:
    """Set `web_url` in a `Function` or `FunctionData` and in its web methods."""
    if is_web(definition.webhook_config):
        definition.web_url = open_endpoint(emu, app_id, function_id)
    for name, method in definition.method_definitions.items():
        if is_web(method.webhook_config):
            method.web_url = open_endpoint(emu, app_id, function_id, name)


def reopen_endpoints(emu: Emulator) -> None:
    """At start: the endpoints of running apps listen again; those of stopped apps go."""
    for row in emu.store.all("SELECT key, function_id, method, app_id FROM web_endpoints"):
        if not open_endpoint(emu, str(row["app_id"]), str(row["function_id"]), str(row["method"])):
            emu.store.run("DELETE FROM web_endpoints WHERE key = ?", row["key"])
