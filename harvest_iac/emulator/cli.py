"""`harvest emulator serve`: the local Modal in the foreground."""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
from pathlib import Path

import click

from harvest_iac.emulator.server import Emulator, Faults
from harvest_iac.errors import TargetError


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
