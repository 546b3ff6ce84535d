"""Run a Runtime on a real socket in a background thread, for tests that speak raw bytes.

``LiveServer`` starts the runtime on ``127.0.0.1`` and a free port in its own thread and
event loop, so blocking clients (``socket``, ``httpx.Client``) can talk to it::

    with LiveServer(runtime) as server:
        response = httpx.get(server.url + "/health")

For tests written with ``async def``, ``async with runtime.running() as server`` serves in
the test's own event loop instead.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from nessen.runtime import Servable
from nessen.server import DrainResult

START_TIMEOUT = 10.0
"""Seconds to wait for the server to bind before giving up."""


def _new_loop() -> asyncio.AbstractEventLoop:
    """The loop production uses: uvloop when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class LiveServer:
    """A runtime serving in a daemon thread; a context manager.

    Args:
        runtime: The runtime to serve, or an ASGI host (single use: a stopped runtime
            does not restart).
        **config: ``Config`` fields to override, e.g. ``max_body_bytes=1024``. The host is
            ``127.0.0.1`` and the port a free one unless given.

    Attributes:
        host: The bound address.
        port: The bound port.
        result: How the drain ended, once stopped.
    """

    def __init__(self, runtime: Servable, **config: Any) -> None:
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        runtime.configure(runtime.config.replace(**config))
        self.runtime = runtime
        self.host = ""
        self.port = 0
        self.result: DrainResult | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nessen-live-server", daemon=True)
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the running server."""
        return self.host, self.port

    def start(self) -> LiveServer:
        """Start serving; returns once the socket accepts.

        Raises:
            RuntimeError: The server did not start (the cause is chained).
        """
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise RuntimeError("live server did not start in time")
        if self._error is not None:
            raise RuntimeError("live server failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = _new_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            server = await self.runtime.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self.host, self.port = server.address
        self._started.set()
        await self._stopped.wait()
        self.result = await self.runtime.stop(self._grace)

    _grace = 5.0

    def stop(self, grace_period: float = 5.0) -> DrainResult | None:
        """Drain (up to ``grace_period`` seconds) and wait for the thread to end."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            self._grace = grace_period
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(grace_period + 5.0)
        return self.result

    def call(self, func: Any, *args: Any) -> None:
        """Run ``func(*args)`` on the server's event loop thread (e.g. a state change)."""
        assert self._loop is not None
        done = threading.Event()

        def wrapper() -> None:
            try:
                func(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(wrapper)
        done.wait(5.0)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
