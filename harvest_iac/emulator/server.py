"""The local Modal: a grpclib server speaking Modal's own control-plane protocol.

The generated `modal_proto` base classes tell us every method, its cardinality and its
message types. Services (`harvest_iac.emulator.services.*`) implement methods by name:

* a plain method `def Name(self, req, ctx) -> Response` is a unary RPC run inside one
  SQLite transaction, with its response cached under the client's `x-idempotency-key`,
  so the client's automatic retries never double an effect;
* `async def Name(self, req, ctx) -> Response` is a unary RPC that manages its own
  transactions (long polls);
* a method decorated with `@streaming` gets the raw grpclib stream: `(self, stream, ctx)`.

Every method no service implements answers UNIMPLEMENTED, naming the method. Every call is
authorized first (`auth.py`: only credentials this server issued, each for its own calls)
and logged with its method, status and duration, never its headers or messages.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import os
import random
import secrets
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_grpc, task_command_router_grpc

from harvest_iac.emulator.auth import CLIENT_API, TASK_ROUTER, Authority, Caller, Unauthenticated
from harvest_iac.emulator.base import DEFAULT_ENVIRONMENT, Ctx, Service
from harvest_iac.emulator.runtime.launcher import Launcher, choose_launcher
from harvest_iac.emulator.runtime.scheduler import Scheduler
from harvest_iac.emulator.store import Store, new_id, write_private

log = logging.getLogger("harvest.emulator")

GC_INTERVAL_S = 600.0
GC_GRACE_S = 3600.0
"""Unreferenced file bytes younger than this are kept: an upload may be about to be used."""

_SURFACES = (
    (api_grpc.ModalClientBase, CLIENT_API),
    (task_command_router_grpc.TaskCommandRouterBase, TASK_ROUTER),
)

@dataclass
class Faults:
    """Fault injection, off by default: latency per RPC and a transient error rate (for
    every method, or only those in `methods`)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_codes: tuple[Status, ...] = (Status.UNAVAILABLE, Status.INTERNAL)
    seed: int | None = None
    methods: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        env = os.environ if environ is None else environ
        methods = env.get("HARVEST_EMULATOR_ERROR_METHODS", "")
        return cls(
            latency_ms=float(env.get("HARVEST_EMULATOR_LATENCY_MS", "0") or 0),
            error_rate=float(env.get("HARVEST_EMULATOR_ERROR_RATE", "0") or 0),
            methods=frozenset(m.strip() for m in methods.split(",") if m.strip()),
        )

    def hits(self, method: str) -> bool:
        """Whether errors are injected into `method` at all."""
        return bool(self.error_rate) and (not self.methods or method in self.methods)


@dataclass
class Stats:
    """RPC counts since start, by method (for benchmarks and tests)."""

    calls: Counter[str] = field(default_factory=Counter)
    injected_errors: int = 0
    idempotent_replays: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "total": sum(self.calls.values()),
            "injected_errors": self.injected_errors,
            "idempotent_replays": self.idempotent_replays,
        }


def _abstract_base_mapping(base: type) -> dict[str, grpclib.const.Handler]:
    """Instantiate the generated abstract base with stubs to read its method table."""

    async def _stub(self: Any, stream: Any) -> None:  # pragma: no cover - replaced below
        raise NotImplementedError

    names = {n: _stub for n in getattr(base, "__abstractmethods__", ())}
    concrete = type(f"_Concrete{base.__name__}", (base,), names)
    return dict(concrete().__mapping__())


class _Servable:
    """What grpclib's Server wants: an object with `__mapping__()`."""

    def __init__(self, mapping: dict[str, grpclib.const.Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return self._mapping


class Emulator:
    """State, services and server of one local Modal."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http_port: int = 0,
        faults: Faults | None = None,
        token_id: str | None = None,
        token_secret: str | None = None,
        gc_interval_s: float = GC_INTERVAL_S,
        fire_schedules: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.fire_schedules = fire_schedules
        self.host = host
        self.port = port
        self.http_port = http_port
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self.store = Store(self.data_dir)
        self.token_id, self.token_secret = self._credentials(token_id, token_secret)
        self.authority = Authority(self.token_id, self.token_secret)
        self.gc_interval_s = gc_interval_s
        self.stats = Stats()
        self.runtime = Scheduler(self.data_dir, choose_launcher(), new_id=new_id,
                                 max_containers=int(os.environ.get("HARVEST_MAX_CONTAINERS", "8")),
                                 web_host=host)
        self._control: grpclib.server.Server | None = None
        self._control_socket: Path | None = None
        self._control_temp: Path | None = None
        self.services: list[Service] = []
        self._server: grpclib.server.Server | None = None
        self._http: Any = None
        self.background: set[asyncio.Task[Any]] = set()
        # Called (inside the transaction) with an environment id before it is deleted,
        # so each service can drop the objects it scopes to that environment.
        self.environment_delete_hooks: list[Callable[[str], None]] = []
        # What the garbage collector keeps: each service registers the sha256 digests of the
        # file bytes it references (`content_roots`) and the blob ids it still needs
        # (`blob_roots`; other blob ids live an hour). Called inside a transaction.
        self.content_roots: list[Callable[[], Iterable[str]]] = []
        self.blob_roots: list[Callable[[], Iterable[str]]] = []
        from harvest_iac.emulator.services import SERVICE_CLASSES

        for cls in SERVICE_CLASSES:
            svc = cls(self)
            if svc.schema:
                self.store.add_schema(svc.schema)
            self.services.append(svc)
        with self.store.tx():
            self.ensure_environment(DEFAULT_ENVIRONMENT, default=True)

    # -- credentials and addresses -------------------------------------------------
    def _credentials(self, token_id: str | None, token_secret: str | None) -> tuple[str, str]:
        if token_id and token_secret:
            return token_id, token_secret
        stored = self.store.meta_get("credentials")
        if stored:
            data = json.loads(stored)
            return str(data["token_id"]), str(data["token_secret"])
        tid = "ak-local" + secrets.token_hex(8)
        tsecret = "as-local" + secrets.token_hex(16)
        with self.store.tx():
            self.store.meta_set("credentials", json.dumps({"token_id": tid, "token_secret": tsecret}))
        return tid, tsecret

    @property
    def launcher(self) -> Launcher:
        """How containers (sandboxes, function containers, image builds) are started."""
        return self.runtime.launcher

    @launcher.setter
    def launcher(self, launcher: Launcher) -> None:
        self.runtime.launcher = launcher

    @property
    def url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def control_socket(self) -> Path | None:
        """The API on a unix socket (for containers without network), once started."""
        return self._control_socket

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host}:{self.http_port}"

    def local_url(self, port: int) -> str:
        """The URL of another port of this local Modal (a web endpoint's)."""
        return f"http://{self._url_host}:{port}"

    @property
    def _url_host(self) -> str:
        """The host clients on this machine use: loopback when bound to every interface."""
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def listening(self) -> tuple[str, str]:
        """Where the API and the file endpoint are bound: `host:port`, comma-separated if several."""
        assert self._server is not None
        sockets = self._server._server.sockets  # type: ignore[union-attr]
        grpc = ", ".join(_address(sock.getsockname()) for sock in sockets)
        return grpc, ", ".join(_address(addr) for addr in self._http.addresses)

    @property
    def loopback_only(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "modal.toml"

    def client_env(self) -> dict[str, str]:
        """Environment variables that point the real `modal` client at this emulator."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": self.token_id,
            "MODAL_TOKEN_SECRET": self.token_secret,
            "MODAL_CONFIG_PATH": str(self.config_path),
        }

    # -- environments (every object is scoped to one) -------------------------------
    def ensure_environment(self, name: str, *, default: bool = False) -> str:

        row = self.store.one("SELECT id FROM environments WHERE name = ?", name)
        if row:
            return str(row["id"])
        env_id = new_id("en")
        self.store.run(
            "INSERT INTO environments (id, name, created_at, is_default) VALUES (?, ?, ?, ?)",
            env_id,
            name,
            time.time(),
            int(default),
        )
        return env_id

    def environment_id(self, name: str, *, create: bool = False) -> str:
        """Resolve a request's `environment_name` ('' = the default) to its id, or NOT_FOUND."""
        if not name:
            row = self.store.one("SELECT id FROM environments WHERE is_default = 1")
            if row:
                return str(row["id"])
            name = DEFAULT_ENVIRONMENT
        row = self.store.one("SELECT id FROM environments WHERE name = ?", name)
        if row:
            return str(row["id"])
        if create:
            return self.ensure_environment(name)
        raise GRPCError(Status.NOT_FOUND, f"Environment '{name}' not found")

    # -- the method table ------------------------------------------------------------
    def _implementation(self, name: str) -> Callable[..., Any] | None:
        for svc in self.services:
            fn = getattr(svc, name, None)
            if fn is not None and callable(fn):
                return fn  # type: ignore[no-any-return]
        return None

    def mapping(self) -> list[_Servable]:
        servables = []
        for base, surface in _SURFACES:
            table = {}
            for path, handler in _abstract_base_mapping(base).items():
                name = path.rsplit("/", 1)[1]
                impl = self._implementation(name)
                func = self._logged(name, surface, self._handler(name, impl, handler.cardinality,
                                                                  handler.reply_type))
                table[path] = grpclib.const.Handler(
                    func, handler.cardinality, handler.request_type, handler.reply_type
                )
            servables.append(_Servable(table))
        return servables

    def _authorize(self, surface: str, metadata: Mapping[str, str]) -> Caller:
        try:
            return self.authority.authorize(surface, metadata)
        except Unauthenticated as exc:
            raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None

    async def _inject_before(self, name: str) -> bool:
        """Sleep the injected latency; return True when this call should fail."""
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000.0)
        return self.faults.hits(name) and self._rng.random() < self.faults.error_rate

    def _injected_error(self, name: str) -> GRPCError:
        self.stats.injected_errors += 1
        code = self._rng.choice(self.faults.error_codes)
        return GRPCError(code, f"injected fault in {name}")

    def _logged(self, name: str, surface: str, handler: Callable[[Any, Ctx], Any]) -> Callable[[Any], Any]:
        """Count, authorize and log one call: its method, status and duration, nothing else."""
        emu = self

        async def call(stream: Any) -> None:
            emu.stats.calls[name] += 1
            start = time.perf_counter()
            status = Status.UNKNOWN
            try:
                md = dict(stream.metadata or {})
                ctx = Ctx(name, md, emu, caller=emu._authorize(surface, md))
                await handler(stream, ctx)
                status = Status.OK
            except GRPCError as err:
                status = err.status
                raise
            except asyncio.CancelledError:
                status = Status.CANCELLED
                raise
            finally:
                level = logging.INFO if status is Status.UNIMPLEMENTED else logging.DEBUG
                log.log(level, "rpc %s %s %.1f ms", name, status.name,
                        (time.perf_counter() - start) * 1000)

        return call

    def _handler(
        self,
        name: str,
        impl: Callable[..., Any] | None,
        cardinality: grpclib.const.Cardinality,
        reply_type: Any,
    ) -> Callable[[Any, Ctx], Any]:
        emu = self

        if impl is None:

            async def unimplemented(stream: Any, ctx: Ctx) -> None:
                raise GRPCError(Status.UNIMPLEMENTED, f"The local Modal does not implement {name}")

            return unimplemented

        if getattr(impl, "__harvest_streaming__", False) or cardinality.value.client_streaming or (
            cardinality.value.server_streaming
        ):

            async def raw(stream: Any, ctx: Ctx) -> None:
                if await emu._inject_before(name):
                    raise emu._injected_error(name)
                await impl(stream, ctx)

            return raw

        is_async = inspect.iscoroutinefunction(impl)

        async def unary(stream: Any, ctx: Ctx) -> None:
            req = await stream.recv_message()
            fail = await emu._inject_before(name)
            fail_after = fail and emu._rng.random() < 0.5
            if fail and not fail_after:
                raise emu._injected_error(name)
            key = ctx.metadata.get("x-idempotency-key")
            if is_async:
                resp = await impl(req, ctx)
            else:
                with emu.store.tx():
                    cached = emu.store.cached_response(name, key) if key else None
                    if cached is not None:
                        emu.stats.idempotent_replays += 1
                        resp = reply_type.FromString(cached)
                    else:
                        resp = impl(req, ctx)
                        if key:
                            emu.store.cache_response(name, key, resp.SerializeToString())
            if fail_after:
                # The effect landed but the answer is "lost": the client retries with the
                # same idempotency key and must get the cached answer, not a second effect.
                raise emu._injected_error(name)
            await stream.send_message(resp)

        return unary

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        from harvest_iac.emulator.http import start_http

        self._http = await start_http(self)
        self.collect_garbage()
        self._server = grpclib.server.Server(self.mapping())
        await self._server.start(self.host, self.port)
        sock = self._server._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        await self._serve_control_socket()
        self._write_client_config()
        self.spawn(self._collect_garbage_every(self.gc_interval_s))
        self.runtime.start()
        for svc in self.services:
            await svc.on_start()
        log.info("local Modal listening on %s (files on %s)", self.url, self.http_url)

    async def _serve_control_socket(self) -> None:
        """The API on a unix socket in a folder private to the user,
        `$TMPDIR/harvest-modal-<uid>` (short, so that the path fits a socket's address; that
        folder, not the data folder, is what containers see), or in a temporary folder of
        its own when that one is not the user's alone."""
        folder = _control_folder()
        if folder is None:
            folder = self._control_temp = Path(tempfile.mkdtemp(prefix="harvest-modal-"))
        self._control_socket = folder / f"modal-{os.getpid()}-{secrets.token_hex(4)}.sock"
        self._control = grpclib.server.Server(self.mapping())
        await self._control.start(path=str(self._control_socket))

    def _write_client_config(self) -> None:
        # An empty profile file of our own, so the user's ~/.modal.toml is never read.
        write_private(self.config_path, b"")

    def collect_garbage(self) -> int:
        """Forget blob ids past their hour and old idempotency entries, then delete the file
        bytes nothing references that are older than GC_GRACE_S; returns how many went."""
        from harvest_iac.emulator.http import expire_blobs

        now = time.time()
        with self.store.tx():
            expire_blobs(self.store, {b for root in self.blob_roots for b in root()}, now)
            self.store.prune_idempotency()
            referenced = {digest for root in self.content_roots for digest in root()}
        removed = self.store.remove_unreferenced(referenced, older_than=now - GC_GRACE_S)
        if removed:
            log.info("garbage collection removed %d unreferenced files", removed)
        return removed

    async def _collect_garbage_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.collect_garbage()
            except (OSError, sqlite3.Error) as exc:
                log.warning("garbage collection failed: %s", exc)

    async def stop(self) -> None:
        await self.runtime.shutdown()
        for task in list(self.background):
            task.cancel()
        for server in (self._server, self._control):
            if server is not None:
                server.close()
                await server.wait_closed()
        if self._control_socket is not None:
            self._control_socket.unlink(missing_ok=True)
        if self._control_temp is not None:
            shutil.rmtree(self._control_temp, ignore_errors=True)
        if self._http is not None:
            await self._http.cleanup()
        self.store.close()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background task tied to the server's lifetime."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


def _control_folder() -> Path | None:
    """`$TMPDIR/harvest-modal-<uid>`, made or found private to this user, its stale sockets
    removed; None when it exists but is not this user's own folder."""
    folder = Path(tempfile.gettempdir()) / f"harvest-modal-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        folder.chmod(0o700)
    for sock in folder.glob("modal-*.sock"):  # of local Modals killed outright
        try:
            os.kill(int(sock.name.split("-")[1]), 0)
        except ProcessLookupError:
            sock.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue
    return folder


class LocalModal:
    """A local Modal running in a background thread of this process, on a free port.

    >>> with LocalModal(tmp_path) as lm:
    ...     os.environ.update(lm.client_env())
    """

    def __init__(self, data_dir: Path, *, faults: Faults | None = None, host: str = "127.0.0.1",
                 port: int = 0, gc_interval_s: float = GC_INTERVAL_S,
                 fire_schedules: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self._fire_schedules = fire_schedules
        self._faults = faults
        self._host = host
        self._port = port
        self._gc_interval_s = gc_interval_s
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalModal:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.emulator = Emulator(self.data_dir, faults=self._faults, host=self._host,
                                         port=self._port, gc_interval_s=self._gc_interval_s,
                                         fire_schedules=self._fire_schedules)
                loop.run_until_complete(self.emulator.start())
            except BaseException as exc:  # surfaced in the caller's thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.emulator.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="harvest-local-modal", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None

    def __enter__(self) -> LocalModal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _emu(self) -> Emulator:
        assert self.emulator is not None, "LocalModal is not started"
        return self.emulator

    @property
    def url(self) -> str:
        return self._emu().url

    def client_env(self) -> dict[str, str]:
        return self._emu().client_env()

    @property
    def faults(self) -> Faults:
        return self._emu().faults

    def stats(self) -> dict[str, Any]:
        return self._emu().stats.as_dict()


def _address(sockname: tuple[Any, ...]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
