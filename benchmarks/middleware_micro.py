"""Microseconds per request that each built-in middleware adds, measured in-process.

Runs a request through ``compose(handler, [middleware])`` many times, without sockets,
then calls its ``on_finished`` hook as the server does once the response is written (the
access line is written there), and subtracts the same loop with no middleware. Logging
goes through the real formatter and handler (``configure_logging``) into /dev/null.

    .venv/bin/python benchmarks/middleware_micro.py [--format console|json] [--n 50000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nessen import Config, Request, Response
from nessen.app.pipeline import compose
from nessen.middleware import default_stack
from nessen.observability.logs import configure_logging

DOCUMENT = [
    {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 2 == 0}
    for i in range(28)
]
CONFIG = Config(rate_limit_max=1_000_000_000)
HEADERS = [
    (b"host", b"127.0.0.1:3201"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
]
BROWSER = [*HEADERS, (b"accept-encoding", b"gzip, deflate, br, zstd")]


async def health(ctx: Request) -> Response:
    return Response.text("OK")


async def json_route(ctx: Request) -> Response:
    return Response.json(DOCUMENT)


def drive(coroutine: Coroutine[Any, Any, Response]) -> Response:
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise RuntimeError("suspended")


def per_request(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
    stack: list[Any],
    headers: list[tuple[bytes, bytes]],
    n: int,
) -> float:
    pipeline = compose(handler, stack)
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        for _ in range(n):
            request = Request("GET", b"/json", "/json", b"", list(headers), client=("127.0.0.1", 5))
            response = drive(pipeline(request))  # type: ignore[arg-type]
            hook = getattr(request, "on_finished", None)
            if hook is not None:  # what the server does once the response is written
                request.on_finished = None
                hook(request, response, response.status, len(response.body), None, 0.0001)
        best = min(best, (time.thread_time() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", default="console", choices=["console", "json"])
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    undo = configure_logging("info", args.format, stream=devnull)
    off = dict.fromkeys(
        ("request_id", "access_log", "security_headers", "rate_limit", "compression"), False
    )
    stacks = {"none": [], "full": default_stack(CONFIG)}
    for name in off:
        stacks[name] = default_stack(CONFIG, **{**off, name: True})
    cases = [
        ("/health", health, HEADERS),
        ("/json", json_route, HEADERS),
        ("/json + Accept-Encoding", json_route, BROWSER),
    ]
    print(f"{'middleware':<18}" + "".join(f"{label:>26}" for label, _, _ in cases))
    base = {label: per_request(h, [], hd, args.n) for label, h, hd in cases}
    for name, stack in stacks.items():
        cells = []
        for label, handler, headers in cases:
            took = per_request(handler, stack, headers, args.n)
            cells.append(f"{took:8.2f} (+{took - base[label]:6.2f}) us")
        print(f"{name:<18}" + "".join(f"{c:>26}" for c in cells))
    undo()


if __name__ == "__main__":
    main()
