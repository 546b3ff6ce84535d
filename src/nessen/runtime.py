"""Runtime: the user's object.

It wires the App (routes, middleware, lifecycle) to the Server, feeds the access log and the
request statistics, and handles signals and the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nessen._version import __version__
from nessen.app import App, Middleware, Router, State
from nessen.app.application import Hook
from nessen.app.lifecycle import Lifecycle, Readiness, ReadinessFn
from nessen.config import Config
from nessen.http import Request, Response
from nessen.observability import RequestStats, configure_logging, install_health_routes
from nessen.server import DrainResult, Server, ServerEvents

logger = logging.getLogger("nessen.runtime")
access_logger = logging.getLogger("nessen.access")
reject_logger = logging.getLogger("nessen.server")

EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = 1
EXIT_STARTUP_FAILED = 3


class StartupError(Exception):
    """A startup hook failed or the address could not be bound; the runtime never got READY."""


class Runtime:
    """A Nessen service: routes, middleware, health endpoints, lifecycle, and its server.

    Args:
        config: Settings; when ``None`` they are read with ``Config.from_env()`` the first
            time they are needed (not at construction, so a module can create its Runtime
            at import without reading the environment).
        health_endpoints: Serve ``/health``, ``/ready`` and ``/api/health``.
        access_log: Write one ``nessen.access`` log line per request.

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
        access_log: bool = True,
    ) -> None:
        self._config = config
        self.app = App()
        self.stats = RequestStats()
        self.version = __version__
        self.access_log = access_log
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._force_stop = False
        self._serving = False
        if health_endpoints:
            install_health_routes(self.app.router, self)

    # --- configuration and registration ---------------------------------------------------

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

    def metrics(self) -> dict[str, float]:
        """Request metrics, as the original's ``getMetrics()``.

        Returns:
            ``{"total_requests", "active_requests", "p50", "p95", "p99"}``; the
            percentiles are milliseconds over the most recent requests.
        """
        p50, p95, p99 = self.stats.percentiles_ms(0.5, 0.95, 0.99)
        return {
            "total_requests": self.stats.total,
            "active_requests": self.active_requests,
            "p50": p50,
            "p95": p95,
            "p99": p99,
        }

    # --- serving --------------------------------------------------------------------------

    async def start(self, sock: Any = None) -> Server:
        """Run startup hooks, bind, start accepting, enter READY.

        Raises:
            StartupError: A startup hook raised, or the address could not be bound.
        """
        if self._serving:
            raise RuntimeError("this runtime is already serving")
        config = self.config
        self._serving = True
        self.app.expose_errors = not config.production
        for hook in self.app.startup_hooks:
            try:
                await hook()
            except Exception as exc:
                logger.exception("startup hook %s failed", getattr(hook, "__name__", hook))
                self.app.lifecycle.transition(State.STOPPING, "startup failed")
                raise StartupError(f"startup hook failed: {exc!r}") from exc
        server = Server(self.app.handler, config, _RuntimeEvents(self))
        try:
            await server.start(sock)
        except OSError as exc:
            self.app.lifecycle.transition(State.STOPPING, "bind failed")
            raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        self._server = server
        host, port = server.address
        shown = f"[{host}]" if ":" in host else host
        logger.info(
            "nessen %s listening on http://%s:%d (pid %d, env %s, workers 1; limits: target "
            "%d B, header section %d B / %d fields, body %d B; timeouts: headers %gs, "
            "body %gs, request %gs, idle %gs, send %gs)",
            self.version,
            shown,
            port,
            os.getpid(),
            config.env,
            config.max_target_bytes,
            config.max_header_bytes,
            config.max_header_count,
            config.max_body_bytes,
            config.headers_timeout,
            config.body_timeout,
            config.request_timeout,
            config.idle_timeout,
            config.send_timeout,
            extra={"address": f"http://{shown}:{port}"},
        )
        self.app.lifecycle.transition(State.READY)
        return server

    async def stop(self, grace_period: float | None = None) -> DrainResult:
        """Drain and close.

        Readiness turns 503, serving goes on for ``shutdown_delay``, in-flight requests
        finish, shutdown hooks run, the state becomes STOPPING and the server closes.

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
        result = DrainResult(0, 0)
        if server is not None:
            if config.shutdown_delay > 0 and not self._force_stop:
                logger.info("draining: still serving for shutdown_delay %gs", config.shutdown_delay)
                await self._sleep_unless_forced(config.shutdown_delay)
            remaining = 0.0 if self._force_stop else max(0.0, deadline - time.monotonic())
            result = await self._drain(server, remaining)
            if result.clean:
                logger.info("drained: every in-flight request completed")
            else:
                logger.error(
                    "drain deadline passed: cut %d in-flight request(s), aborted %d connection(s)",
                    result.cut,
                    result.connections,
                )
        for hook in self.app.shutdown_hooks:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                async with asyncio.timeout(remaining):
                    await hook()
            except TimeoutError:
                logger.error("shutdown hook %s overran the shutdown timeout", _name(hook))
            except Exception:
                logger.exception("shutdown hook %s failed", _name(hook))
        lifecycle.transition(State.STOPPING, "drained" if result.clean else "drain cut short")
        if server is not None:
            await server.close()
        self._serving = False
        return result

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

    async def serve(self, *, sock: Any = None, handle_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`), then drain.

        A second signal during the drain cuts it short.

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
        try:
            try:
                await self.start(sock)
            except StartupError as exc:
                logger.error("%s", exc)
                return EXIT_STARTUP_FAILED
            await self._stop.wait()
            result = await self.stop()
            return EXIT_OK if result.clean else EXIT_DRAIN_TIMEOUT
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

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
        undo = configure_logging(config.log_level, config.effective_log_format)
        try:
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


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__name__", repr(hook))


class _RuntimeEvents(ServerEvents):
    """Feeds the statistics and logs from the server's reports."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stats = runtime.stats
        self._access = runtime.access_log

    def request_finished(
        self, request: Request, status: int, content_bytes: int, duration: float
    ) -> None:
        self._stats.record(duration, content_bytes)
        if not self._access:
            return
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        if access_logger.isEnabledFor(level):
            access_logger.log(
                level,
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={
                    "request_id": request.id,
                    "method": request.method,
                    "path": request.path,
                    "route": request.route,
                    "status": status,
                    "duration_ms": round(duration * 1000.0, 3),
                    "bytes": content_bytes,
                    "client_ip": request.client_ip,
                },
            )

    def request_rejected(
        self,
        reason: str,
        status: int,
        detail: str,
        client: tuple[str, int] | None,
        request: Request | None,
    ) -> None:
        self._stats.reject(reason)
        if status:
            self._stats.record(0.0, 0)
        extra: dict[str, Any] = {
            "reason": reason,
            "status": status or None,
            "client_ip": client[0] if client else None,
        }
        if request is not None:
            extra.update(request_id=request.id, method=request.method, path=request.path)
        level = logging.INFO if status == 0 else logging.WARNING
        reject_logger.log(level, "rejected %s: %s", reason, detail, extra=extra)

    def handler_error(self, request: Request, exc: BaseException) -> Response:
        return self._runtime.app.error_response(request, exc)
