"""CPU microseconds per request through the server's protocol and the default stack.

One ``GET /health`` at a time through ``HttpProtocol`` (parser, limits, handler task,
serialisation, the runtime's statistics and metrics) and ``Runtime()``'s middleware (request
id, access log written to /dev/null through the buffered handler, security headers, rate
limit, compression), with a transport that discards what is written: no sockets, so a busy
machine disturbs it less than a wrk run. Best of 5 rounds of ``--n`` requests, in thread
CPU time. Run it from two checkouts to compare them:

    .venv/bin/python benchmarks/request_micro.py
    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/request_micro.py

``--app bare --path /json`` sends ``GET /json`` to ``benchmarks.middleware_apps.bare``
(no middleware) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from nessen import Config, Response, Runtime
from nessen.observability.logs import configure_logging
from nessen.server.protocol import HttpProtocol

REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


class NullTransport:
    """Enough of an asyncio transport for HttpProtocol; ``written`` wakes the driver."""

    def __init__(self) -> None:
        self.written: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def writelines(self, parts: Any) -> None:
        self.write(b"")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def measure(n: int, app: str, path: str) -> float:
    if app == "full":
        runtime = Runtime(Config(host="127.0.0.1", port=0, rate_limit_max=1_000_000_000))

        @runtime.route.get("/bench")
        async def bench(ctx: Any) -> Response:
            return Response.text("OK")
    else:  # a runtime of benchmarks/middleware_apps.py ("bare": no middleware at all)
        import middleware_apps  # this script's folder is on sys.path

        runtime = getattr(middleware_apps, app)
        runtime.configure(Config(host="127.0.0.1", port=0))
    request = REQUEST.replace(b"/health", path.encode())

    server = await runtime.start()
    loop = asyncio.get_running_loop()
    try:
        protocol = HttpProtocol(server.state)
        transport = NullTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        best = float("inf")
        for _ in range(5):
            start = time.thread_time()
            for _ in range(n):
                transport.written = loop.create_future()
                protocol.data_received(request)
                await transport.written
                await asyncio.sleep(0)  # let the handler's task finish its bookkeeping
            best = min(best, (time.thread_time() - start) / n)
        return best * 1e6
    finally:
        await runtime.stop(grace_period=1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--format", default="console", choices=["console", "json"])
    parser.add_argument("--app", default="full", help="full, or a runtime of middleware_apps")
    parser.add_argument("--path", default="/health", help="the request target")
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    undo = configure_logging("info", args.format, stream=devnull)
    try:
        import uvloop

        took = uvloop.run(measure(args.n, args.app, args.path))
    finally:
        undo()
    import nessen

    print(f"{os.path.dirname(nessen.__file__)}\t{took:.2f} us/request")


if __name__ == "__main__":
    main()
