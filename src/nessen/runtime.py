"""Runtime: the user's object.

It wires the App (routes, middleware, lifecycle) to the Server, feeds the access log and the
request statistics, and handles signals and the drain.

Serving without a socket of its own goes through a public seam, which :meth:`Runtime.start`
uses too: :meth:`Runtime.prepare` (the handler and the server events), then
:meth:`Runtime.begin_serving` (READY), and :meth:`Runtime.stop`. :meth:`Runtime.delegate`
and ``stream_bodies`` let another handler take the requests a Runtime does not answer
itself. ``nessen.asgi`` builds on that seam and imports this module; this module imports
nothing of ``nessen.asgi`` (``Runtime.__call__`` goes through :func:`set_asgi_entry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from nessen._version import __version__
from nessen.app import App, Middleware, Router, State
from nessen.app.application import Hook
from nessen.app.lifecycle import Lifecycle, Readiness, ReadinessFn
from nessen.app.pipeline import compose
from nessen.config import Config
from nessen.errors import ConfigError
from nessen.http import Handler, Request, Response
from nessen.middleware import PROBE_PATHS, default_stack
from nessen.middleware.cors import cors_error_fields
from nessen.middleware.request_id import valid_request_id
from nessen.observability import (
    METRICS_PATH,
    OTHER_METHOD,
    STATUS_PATH,
    UNMATCHED,
    ProcessSampler,
    RequestStats,
    Telemetry,
    TelemetrySink,
    configure_logging_for,
    install_health_routes,
    install_metrics_route,
    install_status_routes,
)
from nessen.observability.admin import OpsGuard, allowlist_guard, not_served
from nessen.observability.health import worker_snapshot
from nessen.observability.logs import SAID_IN_MESSAGE
from nessen.observability.workers import WorkerSnapshots
from nessen.server import DrainResult, Server, ServerEvents
from nessen.server.server import bind_listeners, listeners, raise_open_file_limit
from nessen.server.state import warn_if_trusting_every_peer
from nessen.server.supervisor import WorkerLink
from nessen.server.tls import server_context
from nessen.websocket import WebSocketSettings

if TYPE_CHECKING:
    from nessen.observability.metrics import PrometheusMetrics
    from nessen.stores.redis import RedisStore

logger = logging.getLogger("nessen.runtime")
reject_logger = logging.getLogger("nessen.server")

EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3


class StartupError(Exception):
    """A startup hook failed or the address could not be bound; the runtime never got READY."""


DelegateHandler = Callable[[Request], Awaitable[Response | None]]
"""What :meth:`Runtime.delegate` hands requests to: ``async (Request) -> Response | None``.

``None`` is for the streaming mode only: the response went through ``request.channel``
(see :mod:`nessen.server.body`)."""

ASGIEntry = Callable[["Runtime", Any, Any, Any], Awaitable[None]]
"""``async (runtime, scope, receive, send) -> None``: what ``Runtime.__call__`` runs."""

_asgi_entry: ASGIEntry | None = None


def set_asgi_entry(entry: ASGIEntry) -> None:
    """Make ``entry`` what every :class:`Runtime`'s ``__call__`` (its ASGI 3 side) runs.

    ``nessen`` (the package) installs :func:`nessen.asgi.runtime_asgi_app` when it is
    imported, which is before any Runtime exists, so this module needs no import of
    ``nessen.asgi`` (which imports it).
    """
    global _asgi_entry
    _asgi_entry = entry


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :meth:`Runtime.prepare` hands to whoever serves the runtime's requests.

    Attributes:
        handler: ``async (Request) -> Response``, to call once per request: the built-in
            and ``use()`` middleware around the router, or, after :meth:`Runtime.delegate`,
            the dispatch between those and the delegate (which may give ``None`` in
            streaming mode, see :data:`DelegateHandler`).
        events: Where to report outcomes: statistics, Prometheus metrics, sinks, the
            rejection log; its ``handler_error`` builds (and logs) the 500 for an exception.
        config: The settings to serve with: the runtime's, with the probe and metrics
            paths added to ``probe_paths`` (exempt from ``allowed_hosts``).
        stream_bodies: Whether requests are to be built in the server's streaming mode.
    """

    handler: Handler
    events: ServerEvents
    config: Config
    stream_bodies: bool


class Servable(Protocol):
    """What ``nessen serve``, its workers and :class:`~nessen.testing.LiveServer` drive.

    A :class:`Runtime`, or an object that serves through one (``nessen.asgi.ASGIHost``);
    each method means what the Runtime's does.
    """

    @property
    def config(self) -> Config:
        """The settings."""

    @property
    def has_config(self) -> bool:
        """Whether settings were given or have been read already."""

    def configure(self, config: Config) -> None:
        """Replace the settings before serving (``RuntimeError`` while serving)."""

    async def start(
        self, sock: Any = None, link: WorkerLink | None = None, admin_sock: Any = None
    ) -> Server:
        """Bind, run the startup hooks, listen; see :meth:`Runtime.start`."""

    async def stop(self, grace_period: float | None = None) -> DrainResult:
        """Drain and close; see :meth:`Runtime.stop`."""

    async def serve(
        self,
        *,
        sock: Any = None,
        handle_signals: bool = True,
        link: WorkerLink | None = None,
        admin_sock: Any = None,
    ) -> int:
        """Serve until told to stop, then drain; the exit status (see :meth:`Runtime.serve`)."""

    def listen(self, port: int | None = None, host: str | None = None) -> int:
        """Serve in this thread until SIGTERM/SIGINT; the exit status."""


class Runtime:
    """A Nessen service: routes, middleware, health endpoints, lifecycle, and its server.

    Args:
        config: Settings; when ``None`` they are read with ``Config.from_env()`` the first
            time they are needed (not at construction, so a module can create its Runtime
            at import without reading the environment).
        health_endpoints: Serve ``/health``, ``/ready`` and ``/api/health``.
        middleware: The built-in middleware, installed outside ``use()``'s when serving
            starts. ``"default"``: :func:`nessen.middleware.default_stack` from the config
            (request id, access log, security headers, rate limit, compression); a mapping:
            ``default_stack``'s options (``{"rate_limit": False, "cors": {...}}``); a list:
            exactly those; ``None``: none (routing only).
        access_log: With the default stack, include its access log (one ``nessen.access``
            line per request); ``False`` leaves it out.
        metrics: Record Prometheus metrics and serve them at ``/metrics``.
        status_page: Serve the live status page at ``status_path``; ``None`` serves it
            unless ``config.production`` (needs ``health_endpoints``, which it polls).
        status_path: Where the status page is (its script and style sheet are at
            ``status_path + ".js"`` and ``".css"``).
        stream_bodies: Serve in the server's streaming mode (see :mod:`nessen.server.body`):
            a request is dispatched once its header section is in, its content comes
            through ``request.channel`` as it arrives and ``request.body`` stays empty. For
            a :meth:`delegate` handler written for it (the ASGI host's); routes that read
            ``ctx.body`` need the default, ``False``.

    Example::

        runtime = Runtime()

        @runtime.route.get("/users/{id:int}")
        async def get_user(ctx):
            return Response.json({"id": ctx.params["id"]})

        runtime.listen(3000)
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        health_endpoints: bool = True,
        middleware: str | Mapping[str, Any] | Sequence[Middleware] | None = "default",
        access_log: bool = True,
        metrics: bool = True,
        status_page: bool | None = None,
        status_path: str = STATUS_PATH,
        stream_bodies: bool = False,
    ) -> None:
        if status_page and not health_endpoints:
            raise ValueError("status_page=True needs health_endpoints=True: the page polls them")
        self._config = config
        self.app = App()
        self.stats = RequestStats(refresh=0.25)
        self.version = __version__
        self.access_log = access_log
        if isinstance(middleware, str) and middleware != "default":
            raise ValueError(f"middleware={middleware!r}: use 'default', a mapping, a list or None")
        self._builtins = middleware
        self.process = ProcessSampler(on_tick=self._on_tick)
        """CPU and event-loop lag, sampled every second while serving."""
        self.telemetry = Telemetry()
        """Every sink, Prometheus first once serving: ``runtime.telemetry.increment_counter(
        "orders_total", tags={"kind": "book"})`` counts your own events in all of them."""
        self._sinks = Telemetry()  # the sinks added with add_sink: the runtime's own events
        self._metrics_enabled = metrics
        self._prometheus: PrometheusMetrics | None = None
        self._status_page = status_page if health_endpoints else False
        self._status_path = status_path
        self._status_installed = False
        self._probe_paths: frozenset[str] = frozenset()
        self.worker_snapshots: WorkerSnapshots | None = None
        """As one of several workers: its status snapshot and the others' (see start())."""
        self._server: Server | None = None
        self._admin: Server | None = None  # the admin listener (ADMIN_PORT), when serving
        self._ops_gate: OpsGuard | None = None  # who gets the ops endpoints on the main port
        self._admin_gate: OpsGuard | None = None  # ... and on the admin listener
        self._health_endpoints = health_endpoints
        self._stop: asyncio.Event | None = None
        self._force_stop = False
        self._serving = False
        self._redis: RedisStore | None = None  # opened by start() when a *_STORE is redis
        self._stream_bodies = stream_bodies
        self._delegate: DelegateHandler | None = None  # see delegate()
        self._native_paths: frozenset[str] = frozenset()
        if health_endpoints:
            install_health_routes(
                self.app.router, self, guard=self._main_ops_guard, counts_itself=True
            )
            self._probe_paths |= {"/api/health"}
        if metrics:
            install_metrics_route(self.app.router, self._render_metrics, guard=self._main_ops_guard)
            self._probe_paths |= {METRICS_PATH}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI 3 entry point: ``uvicorn module:runtime`` (see :mod:`nessen.asgi.app`).

        Serves ``http`` and ``lifespan`` scopes; the host server then owns the connection
        limits, this runtime still enforces ``max_body_bytes`` and ``request_timeout``.
        It runs what :func:`set_asgi_entry` installed (``nessen`` installs
        :func:`nessen.asgi.runtime_asgi_app` on import).

        Raises:
            RuntimeError: No entry is installed (cannot happen once ``nessen`` is imported).
        """
        entry = _asgi_entry
        if entry is None:  # pragma: no cover - importing nessen.runtime imports nessen first
            raise RuntimeError("no ASGI entry installed: import nessen.asgi")
        await entry(self, scope, receive, send)

    # --- configuration and registration ---------------------------------------------------

    @property
    def error_details(self) -> bool:
        """Whether error text may go to clients: outside production (``NESSEN_ENV``)."""
        return not self.config.production

    @property
    def config(self) -> Config:
        """The settings (read from the environment on first use when none were given)."""
        config = self._config
        if config is None:
            config = self._config = Config.from_env()
        return config

    def configure(self, config: Config) -> None:
        """Replace the settings before serving.

        Raises:
            RuntimeError: The runtime is already serving.
        """
        if self._serving:
            raise RuntimeError("cannot change the configuration of a running runtime")
        self._config = config

    @property
    def has_config(self) -> bool:
        """Whether settings were given or have been read already."""
        return self._config is not None

    @property
    def route(self) -> Router:
        """The router: ``@runtime.route.get("/path")`` and friends."""
        return self.app.router

    @property
    def stream_bodies(self) -> bool:
        """Whether requests are served in the server's streaming mode (set at construction)."""
        return self._stream_bodies

    @property
    def serving(self) -> bool:
        """Whether :meth:`start` or :meth:`prepare` ran and :meth:`stop` has not yet."""
        return self._serving

    def delegate(
        self, handler: DelegateHandler | None, *, native_paths: Iterable[str] = ()
    ) -> None:
        """Send every request whose path is not in ``native_paths`` to ``handler``.

        Those requests skip the router and every middleware (the built-in ones included):
        ``handler`` answers them alone, and the server still applies its limits and
        deadlines, reports their outcome and turns an exception into a 500. Requests for
        ``native_paths`` go through the middleware and the router as usual. On the main
        port, the paths that ``ADMIN_PORT`` moves to the admin listener (``/api/health``,
        ``/metrics`` and the status page) are not native: they go to ``handler`` too.

        Args:
            handler: ``async (Request) -> Response | None`` (``None``: answered through
                ``request.channel``, in streaming mode); ``None`` undoes the delegation.
            native_paths: Exact request paths (``request.path``) the runtime answers itself.

        Raises:
            RuntimeError: The runtime is already serving (the handler is composed by
                :meth:`prepare`).
        """
        if self._serving:
            raise RuntimeError("cannot delegate the requests of a running runtime")
        self._delegate = handler
        self._native_paths = frozenset(native_paths)

    def use(self, middleware: Middleware) -> Middleware:
        """Add ``middleware`` (``async (ctx, next) -> Response``) inside those added before.

        Returns ``middleware``, so this also works as a decorator.
        """
        self.app.use(middleware)
        return middleware

    def readiness_check(self, name: str, check: ReadinessFn, timeout: float = 2.0) -> None:
        """Make ``/ready`` depend on ``check`` (an ``async () -> Any``; False or raising fails).

        Args:
            name: Shown in ``/ready``'s JSON.
            check: The check.
            timeout: Seconds before it counts as failed.
        """
        self.app.readiness.add(name, check, timeout)

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook`` before the socket accepts; if it raises, the runtime exits 3."""
        self.app.startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook`` after the drain, within what is left of the shutdown timeout."""
        self.app.shutdown_hooks.append(hook)
        return hook

    # --- state ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self.app.lifecycle.state

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle state machine (read by the health endpoints)."""
        return self.app.lifecycle

    @property
    def readiness(self) -> Readiness:
        """The readiness checks (read by ``/ready``)."""
        return self.app.readiness

    @property
    def ready_when_degraded(self) -> bool:
        """Whether DEGRADED still answers ``/ready`` with 200."""
        return self.config.ready_when_degraded

    def set_degraded(self, reason: str) -> None:
        """Enter DEGRADED (serving, but impaired); ``reason`` shows in /api/health and logs."""
        self.app.lifecycle.transition(State.DEGRADED, reason)

    def set_ready(self) -> None:
        """Leave DEGRADED for READY."""
        self.app.lifecycle.transition(State.READY)

    @property
    def active_requests(self) -> int:
        """Requests in handlers now."""
        return self._server.active_requests if self._server is not None else 0

    @property
    def server(self) -> Server | None:
        """The running server, if any."""
        return self._server

    @property
    def admin_server(self) -> Server | None:
        """The admin listener's server (``ADMIN_PORT``) while serving, else ``None``."""
        return self._admin

    def metrics(self) -> dict[str, float]:
        """Request metrics, as the original's ``getMetrics()``.

        Returns:
            ``{"total_requests", "active_requests", "p50", "p95", "p99"}``; the
            percentiles are milliseconds over the last 60-70 s, within 2 % of the exact
            nearest-rank value (see ``nessen.observability.stats``).
        """
        p50, p95, p99 = self.stats.percentiles_ms(0.5, 0.95, 0.99)
        return {
            "total_requests": self.stats.total,
            "active_requests": self.active_requests,
            "p50": p50,
            "p95": p95,
            "p99": p99,
        }

    # --- observability --------------------------------------------------------------------

    def add_sink(self, sink: TelemetrySink) -> TelemetrySink:
        """Send the runtime's measurements (and ``runtime.telemetry``'s) to ``sink`` too.

        See ``nessen.observability.sinks`` for the names and tags it receives.

        Returns:
            ``sink``.

        Raises:
            TypeError: ``sink`` lacks ``increment_counter``, ``record_timing`` or
                ``record_gauge``.
        """
        self._sinks.add(sink)
        self.telemetry.add(sink)
        return sink

    @property
    def prometheus(self) -> PrometheusMetrics | None:
        """The Prometheus metrics, once serving with ``metrics=True``."""
        return self._prometheus

    @property
    def status_path(self) -> str | None:
        """The status page's path while it is served, else ``None``."""
        return self._status_path if self._status_installed else None

    def _start_observability(self, config: Config, worker: int = 0) -> Config:
        """Create the Prometheus metrics, install the status page; return the server's config.

        The server's config exempts ``/api/health`` and ``/metrics`` from ``allowed_hosts``
        (as ``/health`` and ``/ready`` are), so scrapes addressed to the pod IP work.
        ``worker`` is the ``worker`` label of the process series with several workers.
        """
        if self._metrics_enabled and self._prometheus is None:
            from nessen.observability.metrics import EXPOSITION_REUSE, PrometheusMetrics

            prometheus = self._prometheus = PrometheusMetrics(
                config.allowed_methods, reuse_seconds=EXPOSITION_REUSE, worker=str(worker)
            )
            prometheus.before_render = self._refresh_gauges
            prometheus.set_state(str(self.state))
            self.app.lifecycle.on_change(lambda old, new: prometheus.set_state(str(new)))
            self.telemetry.sinks.insert(0, prometheus)
        status_page = self._status_page
        if status_page is None:
            status_page = not config.production
        if status_page and not self._status_installed:
            install_status_routes(self.app.router, self._status_path, guard=self._main_ops_guard)
            self._status_installed = True
        allowlist = allowlist_guard(config.admin_networks, _client_ip)
        self._admin_gate = allowlist
        self._ops_gate = not_served if config.admin_port is not None else allowlist
        if self._probe_paths <= config.probe_paths:
            return config
        return config.replace(probe_paths=config.probe_paths | self._probe_paths)

    def _on_tick(self) -> None:
        """Every second while serving: refresh gauges, flush metrics, feed the sinks."""
        server = self._server
        active = server.active_requests if server is not None else 0
        connections = server.connection_count if server is not None else 0
        lag = self.process.event_loop_lag
        prometheus = self._prometheus
        if prometheus is not None:
            prometheus.set_active(active, connections, server.websocket_count if server else 0)
            prometheus.set_event_loop_lag(lag)
            prometheus.sample_process()
            prometheus.flush()
        sinks = self._sinks
        if sinks.sinks:
            sinks.record_gauge("http_requests_active", active)
            sinks.record_gauge("nessen_connections_active", connections)
            sinks.record_gauge("nessen_event_loop_lag_seconds", lag)

    def _render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The ``/metrics`` exposition (reused for up to 250 ms, see ``EXPOSITION_REUSE``)."""
        prometheus = self._prometheus
        if prometheus is None:  # pragma: no cover - /metrics is only served once started
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        return prometheus.exposition(accept)

    def _refresh_gauges(self) -> None:
        """Read the gauges now, before the exposition is rendered."""
        prometheus = self._prometheus
        if prometheus is None:  # pragma: no cover - called by the metrics themselves
            return
        server = self._server
        if server is not None:
            prometheus.set_active(
                server.active_requests, server.connection_count, server.websocket_count
            )
        prometheus.set_event_loop_lag(self.process.event_loop_lag)

    def _main_ops_guard(self, request: Request) -> Response | None:
        """Who gets ``/api/health``, ``/metrics`` and the status page on the main port."""
        gate = self._ops_gate
        return None if gate is None else gate(request)

    # --- serving --------------------------------------------------------------------------

    async def prepare(self, *, worker: int = 0, run_hooks: bool = True) -> Prepared:
        """Do what :meth:`start` does short of binding and serving: for another server.

        Builds the built-in middleware from the config, runs the startup hooks, sets up the
        metrics and the status page, puts the built-ins in front of ``use()``'s and composes
        the handler. The state stays STARTING: call :meth:`begin_serving` once requests are
        taken, and :meth:`stop` to tear down (DRAINING, the shutdown hooks, STOPPING, the
        shared store closed), whether or not serving began. :meth:`start` runs the same
        steps, binding its addresses after the configuration is checked and before the
        startup hooks run.

        Args:
            worker: The ``worker`` label of the per-process metric series (a worker's slot).
            run_hooks: Run the startup hooks; ``False`` for a host server that skipped its
                lifespan protocol (the hooks then never run).

        Returns:
            The handler to call per request, the events to report to, the settings and
            whether to stream request bodies.

        Raises:
            RuntimeError: The runtime is already serving.
            ConfigError: The settings read from the environment are invalid, or the
                built-in middleware cannot be built from them (before any hook ran).
            StartupError: A startup hook raised; the state is STOPPING, what the built-ins
                opened is closed, and the failure is logged once.
        """
        config = self.config
        builtins = self._claim(config)
        return await self._prepare_claimed(config, builtins, worker, run_hooks)

    def begin_serving(self) -> None:
        """Requests are being taken: start the process sampler and enter READY.

        Call once, after :meth:`prepare` (:meth:`start` calls it once it listens).

        Raises:
            RuntimeError: The runtime is not serving (:meth:`prepare` was not called, or
                :meth:`stop` was).
        """
        if not self._serving:
            raise RuntimeError("begin_serving() needs prepare() first")
        self.process.start()
        self.app.lifecycle.transition(State.READY)

    def _claim(self, config: Config) -> list[Middleware]:
        """Mark the runtime as serving and build its built-in middleware from ``config``.

        Raises:
            RuntimeError: Already serving.
            ConfigError: The built-in middleware cannot be built.
        """
        if self._serving:
            raise RuntimeError("this runtime is already serving")
        self._serving = True
        self.app.expose_errors = not config.production
        settings = WebSocketSettings.from_config(config)
        for endpoint in self.app.router.websocket_endpoints():
            endpoint.settings = settings
        return self._builtin_middleware(config)  # a ConfigError here, before any hook

    async def _prepare_claimed(
        self, config: Config, builtins: list[Middleware], worker: int, run_hooks: bool
    ) -> Prepared:
        """:meth:`prepare` once :meth:`_claim` ran (so :meth:`start` can bind in between)."""
        if run_hooks:
            for hook in self.app.startup_hooks:
                try:
                    await hook()
                except Exception as exc:
                    await self._abort_start("startup failed", None)
                    if isinstance(exc, StartupError):  # it says what failed (ASGI lifespan)
                        raise self._startup_error(str(exc), exc.__cause__) from exc
                    message = f"startup hook {_name(hook)} failed: {type(exc).__name__}: {exc}"
                    raise self._startup_error(message, exc) from exc
        config = self._start_observability(config, worker)
        self.app.middleware[:0] = builtins
        return Prepared(self._dispatcher(config), _RuntimeEvents(self), config, self._stream_bodies)

    def _dispatcher(self, config: Config) -> Handler:
        """The handler per request: the pipeline, or the split of :meth:`delegate`."""
        pipeline = self.app.handler
        delegate = self._delegate
        if delegate is None:
            return pipeline
        native = self._native_paths
        if config.admin_port is not None:  # these are the admin listener's, not this port's
            native = native - self._ops_paths()

        def dispatch(request: Request) -> Awaitable[Response | None]:
            return pipeline(request) if request.path in native else delegate(request)

        # A None from the delegate is its streaming-mode answer (through request.channel).
        return cast(Handler, dispatch)

    def _ops_paths(self) -> frozenset[str]:
        """The ops endpoints ``ADMIN_PORT`` moves to the admin listener."""
        paths = self._probe_paths
        if self._status_installed:
            status = self._status_path
            paths = paths | {status, status + ".js", status + ".css"}
        return paths

    async def start(
        self, sock: Any = None, link: WorkerLink | None = None, admin_sock: Any = None
    ) -> Server:
        """Bind, run the startup hooks, listen and start accepting, enter READY.

        The addresses (the main one and ``ADMIN_PORT``'s) are bound before the hooks run, so
        a port in use fails the start before any hook has opened anything; they are listened
        on only once the hooks are done, so connection attempts meanwhile are refused rather
        than queued. If listening fails after the hooks ran, the shutdown hooks run (what the
        startup hooks opened is closed) before :class:`StartupError` is raised. Either
        failure is logged here, once.

        Args:
            sock: A bound socket, or several, to serve on (a worker's inherited one) instead
                of binding ``config.host:config.port``.
            link: A worker's pipe to its supervisor: heartbeats, ready, recycle requests.
            admin_sock: The admin listener's socket (a worker's inherited one) instead of
                binding ``config.admin_address``; used only when ``admin_port`` is set.

        Raises:
            StartupError: A startup hook raised, or the address could not be bound or
                listened on.
            ConfigError: The TLS certificate, key or CA file cannot be loaded.
        """
        config = self.config
        tls = server_context(config)  # before anything is bound or run: a bad file exits 2
        builtins = self._claim(config)
        owned = sock is None
        if owned:
            try:
                sock = listeners(config)
            except OSError as exc:
                await self._abort_start("bind failed", None)
                raise self._startup_error(
                    f"cannot listen on {_where(config)}: {exc}", None
                ) from exc
        admin_address = config.admin_address
        admin_owned = admin_sock is None and admin_address is not None
        if admin_owned:
            assert admin_address is not None
            try:
                admin_sock = bind_listeners(*admin_address)
            except OSError as exc:
                for listener in sock if owned else ():
                    listener.close()
                await self._abort_start("bind failed", None)
                raise self._startup_error(
                    f"cannot listen on {admin_address[0]}:{admin_address[1]} (ADMIN_PORT): {exc}",
                    None,
                ) from exc
        try:
            prepared = await self._prepare_claimed(
                config, builtins, link.slot if link is not None else 0, run_hooks=True
            )
            config = prepared.config
            on_tick = None
            if link is not None:
                if link.status_dir is not None:
                    self.worker_snapshots = WorkerSnapshots(link.status_dir, link.slot)
                on_tick = self._worker_tick_hook(link)
            server = Server(
                prepared.handler,
                config,
                prepared.events,
                on_tick=on_tick,
                stream_bodies=prepared.stream_bodies,
                service_stopping=link.service_stopping if link is not None else None,
                tls=tls,
            )
            try:
                await server.start(sock, owned=owned)
            except OSError as exc:
                await self._abort_start("bind failed", time.monotonic() + config.shutdown_timeout)
                raise self._startup_error(
                    f"cannot listen on {_where(config)}: {exc}", None
                ) from exc
            self._server = server
            if admin_address is not None:
                try:
                    await self._start_admin(config, admin_sock, admin_owned, link)
                except OSError as exc:
                    self._server = None
                    await server.close()  # the process is not serving: release the main port
                    await self._abort_start(
                        "bind failed", time.monotonic() + config.shutdown_timeout
                    )
                    raise self._startup_error(
                        f"cannot listen on {admin_address[0]}:{admin_address[1]} "
                        f"(ADMIN_PORT): {exc}",
                        None,
                    ) from exc
        except BaseException:
            if owned:
                for listener in sock:
                    listener.close()
            if admin_owned:
                for listener in admin_sock:
                    listener.close()
            raise
        self._log_ready(server, config, link)
        if link is None:  # a supervisor warns once for all its workers
            warn_if_trusting_every_peer(config)
        self.begin_serving()
        if self._redis is not None:  # connect and load the script; DEGRADED if it fails
            await self._redis.load_script()
        if link is not None:
            link.ready()
        return server

    def _log_ready(self, server: Server, config: Config, link: WorkerLink | None) -> None:
        """Log that the process serves: uvicorn's short line, then one with the limits.

        ``Nessen running on http://127.0.0.1:3000 (Press CTRL+C to quit)`` (``https`` with
        TLS, ``unix:PATH`` on a Unix socket, ``from fd N`` after the address of an
        inherited socket), with the field ``address``; then the version, pid, env, worker
        and the limits and timeouts in force, each also a field of JSON lines (sizes in
        bytes, times as ``*_ms``; readable lines leave the fields out, the message says
        them).
        """
        where = server.shown
        if config.listen_fd is not None:
            where += f" from fd {config.listen_fd}"
        logger.info(
            "Nessen running on %s (Press CTRL+C to quit)",
            where,
            extra={"address": server.shown, SAID_IN_MESSAGE: True},
        )
        pid = os.getpid()
        process = f"pid {pid}, env {config.env}, workers {config.workers}"
        worker: dict[str, int] = {}
        if link is not None:
            process += f" (this is worker {link.slot})"
            worker["worker"] = link.slot
        logger.info(
            "nessen %s, %s; limits: connections %d, requests in handlers %d, target %d B, "
            "header section %d B / %d fields, body %d B; timeouts: headers %gs, body %gs, "
            "request %gs, idle %gs, send %gs",
            self.version,
            process,
            config.max_connections,
            config.max_concurrent_requests,
            config.max_target_bytes,
            config.max_header_bytes,
            config.max_header_count,
            config.max_body_bytes,
            config.headers_timeout,
            config.body_timeout,
            config.request_timeout,
            config.idle_timeout,
            config.send_timeout,
            extra={
                SAID_IN_MESSAGE: True,
                "version": self.version,
                "pid": pid,
                **worker,
                "env": config.env,
                "workers": config.workers,
                "max_connections": config.max_connections,
                "max_concurrent_requests": config.max_concurrent_requests,
                "max_target_bytes": config.max_target_bytes,
                "max_header_bytes": config.max_header_bytes,
                "max_header_count": config.max_header_count,
                "max_body_bytes": config.max_body_bytes,
                "headers_timeout_ms": round(config.headers_timeout * 1000),
                "body_timeout_ms": round(config.body_timeout * 1000),
                "request_timeout_ms": round(config.request_timeout * 1000),
                "idle_timeout_ms": round(config.idle_timeout * 1000),
                "send_timeout_ms": round(config.send_timeout * 1000),
            },
        )

    async def _start_admin(
        self, config: Config, sock: Any, owned: bool, link: WorkerLink | None
    ) -> None:
        """Serve the ops endpoints and the probes on ``config.admin_address``.

        Its own router (``/health``, ``/ready``, ``/api/health``, ``/metrics``, the status
        page; 404 for anything else) behind the built-in request id, access log, security
        headers and compression, none of the app's middleware; ``ADMIN_ALLOW`` applies.

        Args:
            config: The settings (``admin_address`` is set).
            sock: The bound socket(s) to listen on (see :func:`bind_listeners`).
            owned: Whether they are this process's alone (else a supervisor's, shared).
            link: A worker's pipe to its supervisor.

        Raises:
            OSError: The admin address could not be listened on.
        """
        address = config.admin_address
        assert address is not None
        router = Router()
        router.on_error = self.app.error_response
        guard = self._admin_gate
        if self._health_endpoints:
            install_health_routes(router, self, guard=guard)
        if self._metrics_enabled:
            install_metrics_route(router, self._render_metrics, guard=guard)
        if self._status_installed:
            install_status_routes(router, self._status_path, guard=guard)
        host, port = address
        admin = Server(
            compose(router.dispatch, self._admin_middleware(config)),
            config.replace(host=host, port=port, admin_port=None, unix_socket=None, listen_fd=None),
            _RuntimeEvents(self),
            stream_bodies=False,
            service_stopping=link.service_stopping if link is not None else None,
        )
        await admin.start(sock, owned=owned)
        self._admin = admin
        bound_host, bound_port = admin.address
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        paths = sorted(route.template for route in router.routes)
        logger.info(
            "admin listener on http://%s:%d serving %s (of these the main port keeps only "
            "/health and /ready)",
            shown,
            bound_port,
            ", ".join(paths),
            extra={"admin_address": f"http://{shown}:{bound_port}"},
        )

    def _admin_middleware(self, config: Config) -> list[Middleware]:
        """The built-ins in front of the admin listener: no CORS, rate limit or cache."""
        options = self._stack_options()
        if options is None:
            return self._middleware_list()
        options.update(cors=False, rate_limit=False, cache=False)
        return default_stack(config, **options)

    def _middleware_list(self) -> list[Middleware]:
        """The built-ins given as a list at construction (empty for ``None``)."""
        chosen = self._builtins
        return [] if chosen is None or isinstance(chosen, str | Mapping) else list(chosen)

    def _stack_options(self) -> dict[str, Any] | None:
        """``default_stack``'s options as chosen at construction (``None``: a list, or none)."""
        chosen = self._builtins
        if not isinstance(chosen, str | Mapping):
            return None
        options: dict[str, Any] = {} if isinstance(chosen, str) else dict(chosen)
        if not self.access_log:
            options["access_log"] = False
        return options

    async def _abort_start(self, reason: str, shutdown_deadline: float | None) -> None:
        """A start failed: enter STOPPING, close what was opened.

        The shutdown hooks run when the startup hooks did (``shutdown_deadline`` given,
        ``time.monotonic()`` seconds); the shared store is closed.
        """
        self.app.lifecycle.transition(State.STOPPING, reason)
        if shutdown_deadline is not None:
            await self._run_shutdown_hooks(shutdown_deadline)
        if self._redis is not None:
            await self._redis.aclose()

    @staticmethod
    def _startup_error(message: str, cause: BaseException | None) -> StartupError:
        """Log a failed start once (with ``cause``'s traceback) and build its error."""
        logger.error("%s", message, exc_info=cause)
        return StartupError(message)

    def _builtin_middleware(self, config: Config) -> list[Middleware]:
        """The built-in middleware chosen at construction, built from ``config``."""
        options = self._stack_options()
        if options is not None:
            status_on = self._status_page
            if status_on is None:
                status_on = not config.production
            status = self._status_path
            rate_limit = options.get("rate_limit", True)
            if status_on and rate_limit is not False:
                # The status page polls /api/health every second per viewer; it and its
                # assets are as exempt from the rate limit as the probes are.
                rate_limit = {} if rate_limit is True else dict(rate_limit)
                skip = PROBE_PATHS | config.probe_paths | {status, status + ".js", status + ".css"}
                rate_limit.setdefault("skip_paths", skip)
                options["rate_limit"] = rate_limit
            if "redis" in (config.rate_limit_store, config.cache_store):
                options["redis_store"] = self._open_redis(config)
            return default_stack(config, **options)
        return self._middleware_list()

    def _open_redis(self, config: Config) -> RedisStore:
        """The shared store of this process (after the fork), wired to the lifecycle.

        While Redis is unavailable the runtime is DEGRADED; when it answers again, READY.
        Failed calls count in ``nessen_store_errors_total``. Failing closed, ``/ready``
        also depends on a ``PING`` (a readiness check named ``redis``).
        """
        try:
            from nessen.stores.redis import RedisStore
        except ImportError as exc:  # the optional extra is missing: a usage error, exit 2
            raise ConfigError(
                [f"redis stores need redis-py: pip install 'nessen-runtime[redis]' ({exc})"]
            ) from exc

        store = self._redis = RedisStore.from_config(config)
        lifecycle = self.app.lifecycle

        def changed(available: bool, reason: str) -> None:
            if not available:
                self.set_degraded(f"redis unavailable: {reason}")
            elif lifecycle.state == State.DEGRADED and lifecycle.reason.startswith("redis "):
                self.set_ready()

        def failed(operation: str) -> None:
            if self._prometheus is not None:
                self._prometheus.store_error("redis", operation)
            if self._sinks.sinks:
                tags = {"store": "redis", "operation": operation}
                self._sinks.increment_counter("nessen_store_errors_total", 1, tags)

        store.on_change(changed)
        store.on_error(failed)
        if config.rate_limit_store == "redis" and config.rate_limit_fail == "closed":

            async def redis_answers() -> bool:
                return self._redis is not None and await self._redis.ping()

            with contextlib.suppress(ValueError):  # registered by an earlier start()
                self.readiness_check("redis", redis_answers, timeout=config.redis_timeout + 0.1)
        return store

    def _worker_tick_hook(self, link: WorkerLink) -> Callable[[], None]:
        """A worker's tick: heartbeat, request-quota check, status snapshot.

        The snapshot (once a second) is what the other workers' ``/api/health`` shows of
        this one.
        """
        config = self.config
        quota = 0
        if config.max_requests_per_worker:
            quota = config.max_requests_per_worker + random.randint(0, config.max_requests_jitter)
        stats = self.stats
        asked = False
        snapshots = self.worker_snapshots

        def tick() -> None:
            nonlocal asked
            link.beat()
            if snapshots is not None and snapshots.due(time.monotonic()):
                snapshots.write(worker_snapshot(self, link.slot))
            if link.orphaned and self.state not in (State.DRAINING, State.STOPPING):
                logger.error("the supervisor is gone: draining")
                self.request_stop()
            if quota and not asked and stats.total >= quota:
                asked = True
                logger.info(
                    "served %d requests (max_requests_per_worker): asking to be replaced",
                    stats.total,
                )
                link.recycle()

        return tick

    async def stop(self, grace_period: float | None = None) -> DrainResult:
        """Drain and close; also the teardown after :meth:`prepare`.

        Readiness turns 503, serving goes on for ``shutdown_delay``, in-flight requests
        finish, shutdown hooks run, the state becomes STOPPING and the server closes. After
        :meth:`prepare` without :meth:`start` there is no server: DRAINING, the shutdown
        hooks, STOPPING, and what the runtime opened (the shared store, the process
        sampler) is closed; the caller has let its own requests finish first.

        Args:
            grace_period: Seconds for the drain and hooks together;
                ``config.shutdown_timeout`` when ``None``.

        Returns:
            What the drain had to cut.
        """
        config = self.config
        lifecycle = self.app.lifecycle
        budget = config.shutdown_timeout if grace_period is None else grace_period
        deadline = time.monotonic() + budget
        lifecycle.transition(State.DRAINING, "shutdown requested")
        server = self._server
        admin = self._admin
        result = DrainResult(0, 0)
        if server is not None:
            server.announce_shutdown()
            if admin is not None:
                admin.announce_shutdown()
            if config.shutdown_delay > 0 and not self._force_stop:
                logger.info("draining: still serving for shutdown_delay %gs", config.shutdown_delay)
                await self._sleep_unless_forced(config.shutdown_delay)
            remaining = 0.0 if self._force_stop else max(0.0, deadline - time.monotonic())
            if admin is None:
                result = await self._drain(server, remaining)
            else:  # both stop accepting at once, and share the deadline
                main, side = await asyncio.gather(
                    self._drain(server, remaining), self._drain(admin, remaining)
                )
                result = DrainResult(
                    main.cut + side.cut,
                    main.connections + side.connections,
                    main.served + side.served,
                    main.upgraded + side.upgraded,
                    main.websockets + side.websockets,
                )
            if result.clean:
                logger.info(
                    "drained: every in-flight request completed (%d response(s) during the "
                    "drain; %d WebSocket(s) closed with 1001; %d other upgraded "
                    "connection(s) closed)",
                    result.served,
                    result.websockets,
                    result.upgraded,
                    extra={
                        "served": result.served,
                        "cut": 0,
                        "connections_closed": 0,
                        "websockets_closed": result.websockets,
                        "upgraded_closed": result.upgraded,
                    },
                )
            else:
                logger.error(
                    "drain deadline passed: cut %d in-flight request(s) (503 with Retry-After "
                    "where the response had not begun), aborted %d connection(s); %d "
                    "response(s) completed during the drain",
                    result.cut,
                    result.connections,
                    result.served,
                    extra={
                        "served": result.served,
                        "cut": result.cut,
                        "connections_closed": result.connections,
                        "websockets_closed": result.websockets,
                        "upgraded_closed": result.upgraded,
                    },
                )
        await self._run_shutdown_hooks(deadline)
        lifecycle.transition(State.STOPPING, "drained" if result.clean else "drain cut short")
        if server is not None:
            await server.close()
        if admin is not None:
            await admin.close()
            self._admin = None
        if self._redis is not None:
            await self._redis.aclose()
        self.process.stop()
        if self._prometheus is not None:
            self._prometheus.flush()
        self._serving = False
        return result

    async def _run_shutdown_hooks(self, deadline: float) -> None:
        """Run the shutdown hooks in order, each cut at ``deadline`` (``time.monotonic()``)."""
        for hook in self.app.shutdown_hooks:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                async with asyncio.timeout(remaining):
                    await hook()
            except TimeoutError:
                logger.error("shutdown hook %s overran the shutdown timeout", _name(hook))
            except Exception:
                logger.exception("shutdown hook %s failed", _name(hook))

    async def _drain(self, server: Server, grace_period: float) -> DrainResult:
        """``server.drain(grace_period)``, cut short at once by a second stop request."""
        stop = self._stop
        if stop is None or grace_period <= 0:
            return await server.drain(grace_period)
        stop.clear()
        drain = asyncio.ensure_future(server.drain(grace_period))
        forced = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
            if drain.done():
                return drain.result()
        finally:
            forced.cancel()
            drain.cancel()  # a no-op once it is done
        await asyncio.wait({drain})
        return await server.drain(0.0)  # cancels what is left and aborts the connections

    async def _sleep_unless_forced(self, seconds: float) -> None:
        stop = self._stop
        if stop is None:
            await asyncio.sleep(seconds)
            return
        stop.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def request_stop(self) -> None:
        """Ask a running :meth:`serve` to drain and return (thread-unsafe: call on its loop)."""
        if self._stop is not None:
            if self._stop.is_set() or self.state == State.DRAINING:
                self._force_stop = True
            self._stop.set()

    async def serve(
        self,
        *,
        sock: Any = None,
        handle_signals: bool = True,
        link: WorkerLink | None = None,
        admin_sock: Any = None,
    ) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`), then drain.

        A second signal during the drain cuts it short. ``sock``, ``link`` and
        ``admin_sock``: see :meth:`start`.

        Returns:
            The process exit status: 0 drained cleanly, 1 the drain deadline cut requests,
            3 startup failed.
        """
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        installed: list[int] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, int(sig))
                    installed.append(int(sig))
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not main thread
                    pass
            if link is None and self.config.ssl_certfile is not None:
                # One process: SIGHUP takes up a renewed certificate (under a supervisor,
                # SIGHUP replaces the workers, and each new one reads the files).
                try:
                    loop.add_signal_handler(signal.SIGHUP, self._reload_tls)
                    installed.append(int(signal.SIGHUP))
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not main thread
                    pass
            if installed:  # a forked worker starts with them blocked (see supervisor.py)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, installed)
        try:
            try:
                await self.start(sock, link, admin_sock)
            except StartupError as exc:  # logged by start()
                if link is not None:
                    link.failed(str(exc))
                return EXIT_STARTUP_FAILED
            except ConfigError as exc:
                message = "invalid configuration: " + "; ".join(exc.problems)
                logger.error("%s", message)
                if link is not None:
                    link.failed(message)
                return EXIT_USAGE
            await self._stop.wait()
            result = await self.stop()
            return EXIT_OK if result.clean else EXIT_DRAIN_TIMEOUT
        finally:
            if self.worker_snapshots is not None:  # its figures leave with it
                self.worker_snapshots.remove()
            if link is not None and installed:  # a worker on its way out: a late SIGTERM
                signal.pthread_sigmask(signal.SIG_BLOCK, installed)  # must not kill it
            for signum in installed:
                loop.remove_signal_handler(signum)

    def _reload_tls(self) -> None:
        """SIGHUP with TLS on: read the certificate files again for new connections.

        Connections already open keep theirs. A file that cannot be loaded is logged and
        the certificate in use stays.
        """
        server = self._server
        if server is None or server.tls is None:
            return
        try:
            context = server_context(server.config)
        except ConfigError as exc:
            logger.error(
                "SIGHUP: TLS certificate not reloaded, the one in use stays: %s",
                "; ".join(exc.problems),
            )
            return
        assert context is not None
        server.reload_tls(context)
        logger.info("SIGHUP: TLS certificate reloaded from %s", server.config.ssl_certfile)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.state in (State.DRAINING, State.STOPPING):
            logger.warning("%s again: cutting the drain short", name)
        else:
            logger.info("%s received: draining", name)
        self.request_stop()

    def listen(self, port: int | None = None, host: str | None = None) -> int:
        """Serve in this thread until SIGTERM/SIGINT, with logging set up; blocking.

        Uses uvloop when installed.

        Args:
            port: Overrides ``config.port``.
            host: Overrides ``config.host``.

        Returns:
            The exit status (see :meth:`serve`).
        """
        changes: dict[str, Any] = {}
        if port is not None:
            changes["port"] = port
        if host is not None:
            changes["host"] = host
        if changes:
            self._config = self.config.replace(**changes)
        config = self.config
        try:
            undo = configure_logging_for(config)
        except ConfigError as exc:
            return exc.report()
        try:
            raise_open_file_limit(config)
            return run(self.serve())
        finally:
            undo()

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Server]:
        """Serve on ``host:port`` in the current event loop for the ``async with`` body.

        For tests: ``async with runtime.running() as server: ... server.address``.
        """
        self._config = self.config.replace(host=host, port=port)
        server = await self.start()
        try:
            yield server
        finally:
            if self._serving:
                await self.stop(grace_period=5.0)


def run(main: Awaitable[int]) -> int:
    """Run ``main`` on a new event loop (uvloop when installed) and return its result."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(main)  # type: ignore[arg-type]
    return int(uvloop.run(main))  # type: ignore[arg-type]


def _where(config: Config) -> str:
    """Where ``config`` says to listen, for an error: ``HOST:PORT``, ``unix:PATH``, ``fd N``."""
    if config.unix_socket is not None:
        return f"unix:{config.unix_socket}"
    if config.listen_fd is not None:
        return f"the inherited socket (LISTEN_FD={config.listen_fd})"
    return f"{config.host}:{config.port}"


def _client_ip(request: Request) -> str:
    """The client address as the request resolves it (``TRUST_PROXY``)."""
    return request.client_ip


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__name__", repr(hook))


_websocket_access = logging.getLogger("nessen.access")


def log_websocket(websocket: Any, code: int, closed_by: str) -> None:
    """Write the ``nessen.access`` line of a WebSocket that ended.

    Fields: request id, path, route, client address, duration, messages and payload bytes
    each way, close code and reason, who closed, and ``outcome`` when the server cut it.
    Info, or warning for 1011 (the app failed) and a cut.
    """
    request = websocket.request
    level = logging.WARNING if code == 1011 or websocket.cut_reason else logging.INFO
    if not _websocket_access.isEnabledFor(level):
        return
    extra = {
        "request_id": request.id,
        "method": "WEBSOCKET",
        "path": request.path,
        "route": request.route,
        "client_ip": request.client_ip,
        "duration_ms": round(websocket.duration * 1000.0, 3),
        "messages_in": websocket.messages_in,
        "messages_out": websocket.messages_out,
        "bytes_in": websocket.bytes_in,
        "bytes_out": websocket.bytes_out,
        "close_code": code,
        "close_reason": websocket.close_reason or None,
        "closed_by": closed_by,
    }
    if websocket.cut_reason:
        extra["outcome"] = websocket.cut_reason
    _websocket_access.log(
        level, "WEBSOCKET %s closed %d by %s", request.path, code, closed_by, extra=extra
    )


class _RuntimeEvents(ServerEvents):
    """Feeds the statistics, metrics, sinks and logs from the server's reports."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stats = runtime.stats
        self._prometheus = runtime.prometheus
        self._sinks = runtime._sinks
        self._allowed_methods = runtime.config.allowed_methods
        # The outermost CORS policy among the middleware, for the server's own answers.
        policies = [p for m in runtime.app.middleware if (p := cors_error_fields(m)) is not None]
        self._cors = policies[0] if policies else None

    def _tags(self, request: Request | None, status: int) -> dict[str, str]:
        """The bounded tags of a response for the sinks, as labelled in ``/metrics``."""
        method = request.method if request is not None else ""
        route = request.route if request is not None else None
        return {
            "method": method if method in self._allowed_methods else OTHER_METHOD,
            "route": route if route is not None else UNMATCHED,
            "status": str(status),
        }

    def request_finished(
        self, request: Request, status: int, content_bytes: int, duration: float
    ) -> None:
        self._stats.record(duration, content_bytes, status)
        prometheus = self._prometheus
        if prometheus is not None:
            prometheus.request_finished(
                request._method, request.route, status, duration, content_bytes
            )
        if self._sinks.sinks:
            tags = self._tags(request, status)
            self._sinks.increment_counter("http_requests_total", 1, tags)
            self._sinks.record_timing("http_request_duration_seconds", duration, tags)

    def request_rejected(
        self,
        reason: str,
        status: int,
        detail: str,
        client: tuple[str, int] | None,
        request: Request | None,
    ) -> None:
        self._stats.reject(reason, answered=status != 0, status=status)
        if self._prometheus is not None:
            self._prometheus.request_rejected(
                reason,
                status,
                request.method if request is not None else None,
                request.route if request is not None else None,
            )
        if self._sinks.sinks:
            self._sinks.increment_counter("nessen_rejected_requests_total", 1, {"reason": reason})
            if status:
                self._sinks.increment_counter("http_requests_total", 1, self._tags(request, status))
        extra: dict[str, Any] = {
            "reason": reason,
            "status": status or None,
            "client_ip": client[0] if client else None,
        }
        if request is not None:
            extra["client_ip"] = request.client_ip  # through trusted proxies, as everywhere
            if request._id is None:  # refused before the request-id middleware ran
                incoming = request.header("x-request-id")
                if incoming is not None and valid_request_id(incoming):
                    request._id = incoming  # the client's or the proxy's, as it would be
            extra.update(request_id=request.id, method=request.method, path=request.path)
        level = logging.INFO if status == 0 else logging.WARNING
        reject_logger.log(level, "rejected %s: %s", reason, detail, extra=extra)

    def websocket_opened(self, websocket: Any) -> None:
        self._stats.websockets_open += 1

    def websocket_traffic(
        self, messages_in: int, bytes_in: int, messages_out: int, bytes_out: int
    ) -> None:
        stats = self._stats
        stats.websocket_messages_in += messages_in
        stats.websocket_messages_out += messages_out
        if self._prometheus is not None:
            self._prometheus.websocket_traffic(messages_in, bytes_in, messages_out, bytes_out)

    def websocket_closed(self, websocket: Any) -> None:
        stats = self._stats
        stats.websockets_open -= 1
        stats.websockets_closed += 1
        code = websocket.close_code or 1005
        closed_by = websocket.closed_by or "server"
        if self._prometheus is not None:
            self._prometheus.websocket_closed(code, closed_by)
        if self._runtime.access_log:
            log_websocket(websocket, code, closed_by)

    def error_fields(self, raw_headers: list[tuple[bytes, bytes]]) -> str:
        cors = self._cors
        return cors(raw_headers) if cors is not None else ""

    def handler_error(self, request: Request, exc: BaseException) -> Response:
        return self._runtime.app.error_response(request, exc)

    def accept_failed(self, error: str) -> None:
        if self._prometheus is not None:
            self._prometheus.accept_failed(error)
        if self._sinks.sinks:
            self._sinks.increment_counter("nessen_accept_errors_total", 1, {"error": error})
