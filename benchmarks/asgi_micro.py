"""CPU cost per request of an ASGI app hosted the way ``nessen serve module:app`` hosts it.

One request at a time through ``HttpProtocol`` (parser, limits, the request's task) and the
:class:`~nessen.asgi.ASGIHost` an ASGI app is served through (scope, ``receive``/``send``,
request id, the access log as shipped: JSON lines to /dev/null through the buffered
handler), with a transport that discards what is written: no sockets, so a busy machine
disturbs it less than a wrk run. It prints the best of 5 rounds of ``--n`` requests, in
process CPU time (the log writer thread included).

For A/B comparisons of code changes count instructions instead, which repeat to a few per
mille on a noisy machine: ``--instructions`` runs this script twice under valgrind's
callgrind, for 300 and 1300 requests (one round each), and prints the difference over the
1000 requests between them, which leaves out the interpreter's start and the imports
(about two minutes; ``apt-get install valgrind``). It runs the children with
``PYTHONHASHSEED=0``: with a random seed, the start alone varies by ~10 %. By hand:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/asgi_micro.py --rounds 1 --n 300
    (the same with --n 1300)  ->  (I(1300) - I(300)) / 1000 instructions per request

``--app fastapi`` serves ``benchmarks/apps/fastapi_app.py`` instead of the raw app
(``benchmarks/apps/asgi_raw.py``); ``--path /api/data`` asks for another endpoint;
``--post 4096`` sends a ``POST /echo`` with that much content; ``--no-access-log`` is
``nessen serve --no-access-log``. ``--server uvicorn`` measures the same app on uvicorn's
connection instead (``uvicorn --loop uvloop --http httptools``, its access log to
/dev/null unless ``--no-access-log``), for the ratio between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks.apps

from benchmarks.request_micro import NullTransport  # noqa: E402

from nessen import Config  # noqa: E402
from nessen.asgi import ASGIHost  # noqa: E402
from nessen.observability.logs import configure_logging  # noqa: E402
from nessen.server.protocol import HttpProtocol  # noqa: E402

APPS = {
    "raw": "benchmarks.apps.asgi_raw",
    "fastapi": "benchmarks.apps.fastapi_app",
}


def build_request(path: str, post: int) -> bytes:
    """The request sent, as wrk sends it (plus a User-Agent and Accept, as clients do)."""
    if not post:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:3311\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:3311\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {post}\r\n\r\n"
    )
    return head.encode() + b"x" * post


class SocketlessTransport(NullTransport):
    """The null transport, with the addresses uvicorn asks for."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return ("127.0.0.1", 3311)
        return super().get_extra_info(name, default)


async def measure(args: argparse.Namespace) -> float:
    module = __import__(APPS[args.app], fromlist=["app"])
    request = build_request(args.path, args.post)
    loop = asyncio.get_running_loop()
    transport = SocketlessTransport()
    host: ASGIHost | None = None
    protocol: asyncio.Protocol
    if args.server == "uvicorn":
        protocol = uvicorn_protocol(module.app, access_log=not args.no_access_log)
    else:
        host = ASGIHost(module.app, Config(host="127.0.0.1", port=0))
        host.runtime.access_log = not args.no_access_log
        server = await host.start()
        protocol = HttpProtocol(server.state)
    try:
        protocol.connection_made(transport)  # type: ignore[arg-type]

        async def one() -> None:
            transport.written = loop.create_future()
            protocol.data_received(request)
            await transport.written
            await asyncio.sleep(0)  # let the request's task finish its bookkeeping

        for _ in range(200):  # warm-up: caches, first-time logging, lazy imports
            await one()
        best = float("inf")
        for _ in range(args.rounds):
            start = time.process_time()
            for _ in range(args.n):
                await one()
            best = min(best, (time.process_time() - start) / args.n)
        return best * 1e6
    finally:
        protocol.connection_lost(None)
        if host is not None:
            await host.stop(grace_period=1.0)


def uvicorn_protocol(app: Any, *, access_log: bool) -> asyncio.Protocol:
    """uvicorn's connection as ``uvicorn --loop uvloop --http httptools`` builds it.

    Its access log (on unless ``--no-access-log``) writes to stdout, here /dev/null.
    """
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115 - the log's stream
    try:
        config = uvicorn.Config(
            app, loop="uvloop", http="httptools", lifespan="off", access_log=access_log
        )
    finally:
        sys.stdout = stdout
    config.load()
    state = ServerState()
    # What uvicorn's server sets (and refreshes every second): its Date and Server fields.
    state.default_headers = [(b"date", formatdate(usegmt=True).encode()), *config.encoded_headers]
    return HttpToolsProtocol(config=config, server_state=state, app_state={})


def count_instructions(argv: list[str], small: int = 300, large: int = 1300) -> None:
    """Print instructions per request: callgrind's totals for two runs, differenced."""
    totals = []
    for n in (small, large):
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            *argv,
            "--rounds",
            "1",
            "--n",
            str(n),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
        totals.append(int(found.group(1)))
        print(done.stdout.strip(), f"\t{n} requests: {totals[-1]:,} instructions", flush=True)
    print(f"{(totals[1] - totals[0]) / (large - small):,.0f} instructions per request")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", default="raw", choices=sorted(APPS))
    parser.add_argument("--path", default="/health", help="the request target")
    parser.add_argument("--post", type=int, default=0, help="POST this many content bytes")
    parser.add_argument("--format", default="json", choices=["console", "json"])
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument(
        "--server", default="nessen", choices=["nessen", "uvicorn"], help="the host to measure"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under callgrind (see the module docstring)",
    )
    args = parser.parse_args()
    if args.instructions:
        count_instructions([a for a in sys.argv[1:] if a != "--instructions"])
        return
    if args.post and args.path == "/health":
        args.path = "/echo"
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    if args.server == "nessen":
        undo = configure_logging("info", args.format, stream=devnull)
    else:
        undo = devnull.close  # uvicorn configures its own loggers
    try:
        import uvloop

        took = uvloop.run(measure(args))
    finally:
        undo()
    import nessen

    where = os.path.dirname(nessen.__file__)
    print(f"{args.server} {args.app} {args.path}\t{where}\t{took:.2f} us/request")


if __name__ == "__main__":
    main()
