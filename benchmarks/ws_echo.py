#!/usr/bin/env python3
"""WebSocket echo: Nessen against uvicorn and granian, side by side in one run.

    python3 benchmarks/ws_echo.py                  # everything: ~13 minutes on 2 cores
    python3 benchmarks/ws_echo.py --rounds 1 --duration 3 --idle-websockets 2000   # a look

What it measures, per server, for 32 B text and 64 KiB binary messages:

- **messages/s**: 64 WebSockets, each sending one message and waiting for its echo before
  the next (closed loop), for ``--duration`` seconds after 1 s of warm-up; echoes completed
  in that window / its length.
- **p50 / p99 latency**: every message's round trip (send to the echo's last byte).
- **server CPU µs per message**: user + system time of the server's processes over the
  window (from /proc) / messages; steadier than messages/s on a shared machine.
- **server and client core %**: CPU seconds / window of each side. A client near 100 %
  while the server is not means the client is the bottleneck (the report says so).
- **memory**: RSS of the server with ``--idle-websockets`` (10 000) open WebSockets, after
  the handshake and no traffic, minus its RSS just before them (after a short warm-up).

Servers, each pinned to CPU 0 (``taskset -c 0``), one worker/process, access logs off,
permessage-deflate off (and never offered by the client), an echo at ``/ws`` from
:mod:`benchmarks.apps.ws_echo`:

- ``nessen-native``: ``nessen serve benchmarks.apps.ws_echo:runtime`` (``Runtime()`` with a
  websocket route), ``--no-access-log``, ``WS_COMPRESSION=false``, ``RATE_LIMIT_MAX=1e9``.
- ``nessen-asgi``: ``nessen serve benchmarks.apps.ws_echo:app`` (a raw ASGI echo app).
- ``uvicorn-sansio``: the same app on uvicorn ``--ws websockets-sansio``, uvloop,
  httptools; ``uvicorn-wsproto`` the same with ``--ws wsproto``.
- ``granian``: the same app on granian ``--interface asgi`` (one worker, one runtime thread,
  uvloop; granian has no permessage-deflate setting and its 101 offers none).

The client is this file's ``--client`` mode, pinned to CPU 1: plain asyncio protocols on
uvloop writing pre-built masked frames and parsing only frame headers (no WebSocket
library), so it costs a few µs per message. Servers are interleaved across rounds (round 1:
every server, round 2: every server...) and the medians printed; spread is (max - min) /
median of messages/s. It uses ``.venv-bench`` from ``benchmarks/run.py`` (created when
missing, wsproto added) and that file's helpers; raw figures go to
``artifacts/ws-echo-<time>.json`` and the table to ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run import (  # noqa: E402
    ARTIFACTS,
    BIN,
    NESSEN_ENV,
    PORT,
    UVICORN,
    BenchError,
    Running,
    ServerSpec,
    _children,
    compile_checkout,
    cpu_seconds,
    ensure_venv,
    raise_fd_limit,
    rss_mb,
    versions,
)

BASELINE = "uvicorn-sansio"
SIZES = {"32B-text": (32, True), "64KiB-binary": (64 * 1024, False)}
WS_NESSEN_ENV = {
    **NESSEN_ENV,
    "WS_COMPRESSION": "false",
    "MAX_CONNECTIONS": "20000",  # 10 000 idle WebSockets + the probes
}
WS_UVICORN = (
    *UVICORN,
    "--no-access-log",
    "--log-level",
    "warning",
    "--ws-per-message-deflate",
    "false",
    "--ws-max-size",
    str(1024 * 1024),
)
GRANIAN = (
    "granian",
    "--interface",
    "asgi",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--workers",
    "1",
    "--runtime-threads",
    "1",
    "--loop",
    "uvloop",
    "--log-level",
    "warning",
    "--no-access-log",
    "--backlog",
    "2048",
    "--backpressure",
    "20000",  # its default (backlog / workers) would hold 1 024 WebSockets at most
)
APP = "benchmarks.apps.ws_echo:app"
SERVERS = [
    ServerSpec(
        "nessen-native",
        ("nessen", "serve", "--no-access-log", "benchmarks.apps.ws_echo:runtime"),
        WS_NESSEN_ENV,
    ),
    ServerSpec("nessen-asgi", ("nessen", "serve", "--no-access-log", APP), WS_NESSEN_ENV),
    ServerSpec("uvicorn-sansio", (*WS_UVICORN, "--ws", "websockets-sansio", APP)),
    ServerSpec("uvicorn-wsproto", (*WS_UVICORN, "--ws", "wsproto", APP)),
    ServerSpec("granian", (*GRANIAN, APP)),
]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` and its descendants were runnable but not running.

    From ``/proc/<pid>/task/<tid>/schedstat`` (its second field, ns): time on a run queue
    waiting for the CPU, i.e. taken by other jobs on the machine.
    """
    total = 0
    for member in _children(pid):
        try:
            tasks = list(Path(f"/proc/{member}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


# ---------------------------------------------------------------------------------------
# the client (runs in its own process, pinned to CPU 1)


def masked_frame(payload: bytes, opcode: int, key: bytes) -> bytes:
    """One final client frame (RFC 6455 §5.2) of ``opcode``, masked with ``key``."""
    head = bytearray([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head.append(0x80 | size)
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    stream = (key * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
    return bytes(head) + key + body


class Shared:
    """What every connection of one client run shares: the frame, the clock, the counts."""

    def __init__(self, frame: bytes, payload: bytes) -> None:
        self.frame = frame
        self.payload = payload
        self.sending = True
        self.recording = False
        self.window_end = 0.0
        self.latencies: list[int] = []
        self.messages = 0
        self.errors: list[str] = []


class EchoClient(asyncio.Protocol):
    """One WebSocket: handshake, then send, wait for the echo, send again."""

    def __init__(self, shared: Shared, host: str) -> None:
        self.shared = shared
        self.key = base64.b64encode(os.urandom(16))
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.buf = bytearray()
        self.skip = 0  # payload bytes of the current data frame still to come
        self.checked = False  # the first echo is compared byte for byte
        self.sent_at = 0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(  # type: ignore[union-attr]
            b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.host.encode(), self.key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"connection lost in the handshake: {exc}"))
        elif self.busy and self.shared.sending:
            self.shared.errors.append(f"connection lost mid-message: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).lower()
            if not head.startswith(b"http/1.1 101") or accept not in head:
                self.opened.set_exception(BenchError(f"handshake refused: {head[:200]!r}"))
                return
            if b"sec-websocket-extensions" in head:
                self.opened.set_exception(BenchError("the server negotiated an extension"))
                return
            self.opened.set_result(None)
            if not data:
                return
        if self.skip:
            if len(data) < self.skip:
                self.skip -= len(data)
                return
            data = data[self.skip :]
            self.skip = 0
            self._echoed()
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            first, second = buf[0], buf[1] & 0x7F
            start = 2
            if second == 126:
                if len(buf) < 4:
                    return
                second, start = int.from_bytes(buf[2:4], "big"), 4
            elif second == 127:
                if len(buf) < 10:
                    return
                second, start = int.from_bytes(buf[2:10], "big"), 10
            opcode = first & 0x0F
            have = len(buf) - start
            if opcode in (0, 1, 2):
                if not self.checked:
                    if have < second:
                        return
                    if first & 0x80 and bytes(buf[start : start + second]) != self.shared.payload:
                        self.shared.errors.append("the echo differs from the message sent")
                    self.checked = True
                if have >= second:
                    del buf[: start + second]
                    if first & 0x80:
                        self._echoed()
                    continue
                self.skip = second - have
                buf.clear()
                return
            if have < second:
                return
            body = bytes(buf[start : start + second])
            del buf[: start + second]
            if opcode == 9:  # ping: a masked pong with the same payload
                self.transport.write(masked_frame(body, 0xA, os.urandom(4)))  # type: ignore[union-attr]
            elif opcode == 8:
                if self.shared.sending:
                    self.shared.errors.append(f"the server closed: {body[:2].hex()}")
                self.transport.close()  # type: ignore[union-attr]
                return

    def send_next(self) -> None:
        self.busy = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.shared.frame)  # type: ignore[union-attr]

    def _echoed(self) -> None:
        shared = self.shared
        now = time.perf_counter_ns()
        self.busy = False
        if shared.recording and now <= shared.window_end:
            shared.latencies.append(now - self.sent_at)
            shared.messages += 1
        if shared.sending:
            self.busy = True
            self.sent_at = now
            self.transport.write(shared.frame)  # type: ignore[union-attr]


async def _open(count: int, port: int, shared: Shared, concurrency: int = 200) -> list[EchoClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    host = f"127.0.0.1:{port}"

    async def one() -> EchoClient:
        async with gate:
            _, client = await loop.create_connection(
                lambda: EchoClient(shared, host), "127.0.0.1", port
            )
            await asyncio.wait_for(client.opened, 30)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _close_all(clients: list[EchoClient]) -> None:
    close = masked_frame((1000).to_bytes(2, "big"), 0x8, os.urandom(4))
    for client in clients:
        if client.transport is not None and not client.transport.is_closing():
            client.transport.write(close)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), 5)
    for client in clients:
        if client.transport is not None:
            client.transport.close()


async def client_echo(args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop echo on ``args.connections`` WebSockets; figures for the window."""
    size, text = SIZES[args.size]
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    shared = Shared(masked_frame(payload, 0x1 if text else 0x2, os.urandom(4)), payload)
    clients = await _open(args.connections, args.port, shared)
    for client in clients:
        client.send_next()
    await asyncio.sleep(args.warmup)
    server_cpu = cpu_seconds(args.server_pid)
    server_wait = wait_seconds(args.server_pid)
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter_ns()
    shared.window_end = started + int(args.duration * 1e9)
    shared.recording = True
    await asyncio.sleep(args.duration)
    ended = time.perf_counter_ns()
    server_cpu = cpu_seconds(args.server_pid) - server_cpu
    server_wait = wait_seconds(args.server_pid) - server_wait
    after = resource.getrusage(resource.RUSAGE_SELF)
    shared.sending = False
    window = (min(ended, shared.window_end) - started) / 1e9
    client_cpu = (after.ru_utime + after.ru_stime) - (own.ru_utime + own.ru_stime)
    await asyncio.sleep(0.2)  # the messages in flight come back
    await _close_all(clients)
    lat = sorted(shared.latencies)
    if not lat:
        raise BenchError("no echo came back")
    if shared.errors:
        raise BenchError("; ".join(sorted(set(shared.errors))[:3]))
    return {
        "messages": shared.messages,
        "seconds": window,
        "mps": shared.messages / window,
        "p50_ms": lat[len(lat) // 2] / 1e6,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6,
        "max_ms": lat[-1] / 1e6,
        "server_cpu_us": server_cpu / shared.messages * 1e6,
        "server_core": server_cpu / window,
        "server_waiting": server_wait / window,
        "client_core": client_cpu / window,
        "client_cpu_us": client_cpu / shared.messages * 1e6,
    }


async def client_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Open ``args.count`` WebSockets, leave them idle, read the server's RSS."""
    shared = Shared(b"", b"")
    before = rss_mb(args.server_pid)
    started = time.monotonic()
    clients = await _open(args.count, args.port, shared)
    opened_in = time.monotonic() - started
    await asyncio.sleep(2.0)  # let the server settle (a pause, not an event to wait for)
    alive = sum(1 for c in clients if not c.closed.done())
    held = rss_mb(args.server_pid)
    await _close_all(clients)
    if alive != args.count:
        raise BenchError(f"only {alive} of {args.count} idle WebSockets stayed open")
    return {
        "websockets": args.count,
        "rss_before_mb": before,
        "rss_held_mb": held,
        "opened_in_s": opened_in,
    }


def client_main(args: argparse.Namespace) -> int:
    """The ``--client`` mode: one measurement, its JSON on stdout."""
    raise_fd_limit(args.count + 1024)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    work = client_echo if args.client == "echo" else client_idle
    try:
        print(json.dumps(runner(work(args))))
    except (BenchError, OSError, TimeoutError) as error:
        print(json.dumps({"error": str(error) or type(error).__name__}))
        return 1
    return 0


# ---------------------------------------------------------------------------------------
# the runner


def run_client(mode: str, running: Running, pinned: bool, **options: Any) -> dict[str, Any]:
    """Start this file's client mode (CPU 1) against ``running``; its JSON result."""
    argv = [str(BIN / "python"), str(Path(__file__).resolve()), "--client", mode]
    argv += ["--port", str(PORT), "--server-pid", str(running.pid)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    if pinned:
        argv = ["taskset", "-c", "1", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise BenchError(f"client failed: {out.stderr[-800:]}") from error
    if "error" in result:
        raise BenchError(f"{running.spec.name}: {result['error']}")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round, server and message size; then memory. Returns the raw results."""
    pinned = len(os.sched_getaffinity(0)) >= 2
    if not pinned:
        print("only 1 CPU available: running unpinned (figures are less comparable)")
    servers = [s for s in SERVERS if not args.servers or s.name in args.servers]
    sizes = [s for s in SIZES if not args.sizes or s in args.sizes]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in servers}
    for number in range(1, args.rounds + 1):
        for spec in servers:
            print(f"round {number}/{args.rounds}: {spec.name}", flush=True)
            running = Running(spec, pinned, {})
            try:
                running.wait_ready()
                for size in sizes:
                    sample = run_client(
                        "echo",
                        running,
                        pinned,
                        size=size,
                        connections=args.connections,
                        duration=args.duration,
                        warmup=args.warmup,
                    )
                    samples[spec.name].setdefault(size, []).append(sample)
                    print(
                        f"  {size:13s} {sample['mps']:9.0f} msg/s  p50 {sample['p50_ms']:6.2f}"
                        f" ms  p99 {sample['p99_ms']:6.2f} ms  server"
                        f" {sample['server_cpu_us']:6.1f} us/msg"
                        f" ({sample['server_core']:.0%} of a core, waiting"
                        f" {sample['server_waiting']:.0%}), client {sample['client_cpu_us']:.1f}"
                        f" us/msg ({sample['client_core']:.0%})",
                        flush=True,
                    )
            finally:
                running.stop()
    memory: dict[str, dict[str, Any]] = {}
    if args.idle_websockets:
        for spec in servers:
            print(f"memory: {spec.name}", flush=True)
            running = Running(spec, pinned, {})
            try:
                running.wait_ready()
                started = rss_mb(running.pid)
                run_client(
                    "echo", running, pinned, size="32B-text", connections=8, duration=1, warmup=0.5
                )
                held = run_client("idle", running, pinned, count=args.idle_websockets)
                memory[spec.name] = {"rss_started_mb": started, **held}
                print(f"  {memory[spec.name]}", flush=True)
            finally:
                running.stop()
    return {"samples": samples, "memory": memory, "pinned": pinned}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(results: dict[str, Any]) -> str:
    """The Markdown report: one table per message size, then memory, then the client check."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = results["samples"]
    lines: list[str] = []
    notes: list[str] = []
    for size in SIZES:
        base = samples.get(BASELINE, {}).get(size)
        base_mps = _median(base, "mps") if base else None
        base_cpu = _median(base, "server_cpu_us") if base else None
        rows = [(name, by_size[size]) for name, by_size in samples.items() if size in by_size]
        if not rows:
            continue
        lines += [
            f"\n**{size}** (64 connections, closed loop)\n",
            "| server | msg/s (median) | p50 ms | p99 ms | spread | server CPU µs/msg"
            " | server core: busy, waiting | client CPU µs/msg | client core"
            f" | x {BASELINE} msg/s | x {BASELINE} CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, runs in rows:
            mps = [r["mps"] for r in runs]
            median = statistics.median(mps)
            spread = (max(mps) - min(mps)) / median * 100 if median else 0.0
            ratio = f"{median / base_mps:.2f}" if base_mps else "-"
            cpu = _median(runs, "server_cpu_us")
            cpu_ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "-"
            server_core = _median(runs, "server_core")
            waiting = _median(runs, "server_waiting")
            client_core = _median(runs, "client_core")
            lines.append(
                f"| {name} | {median:,.0f} | {_median(runs, 'p50_ms'):.2f}"
                f" | {_median(runs, 'p99_ms'):.2f} | {spread:.0f}%"
                f" | {cpu:.1f} | {server_core:.0%}, {waiting:.0%}"
                f" | {_median(runs, 'client_cpu_us'):.1f} | {client_core:.0%}"
                f" | {ratio} | {cpu_ratio} |"
            )
            if client_core > 0.9 and server_core < 0.9:
                notes.append(
                    f"{name} {size}: the client used {client_core:.0%} of its core and the"
                    f" server {server_core:.0%}: the client is the bottleneck"
                )
    if results["memory"]:
        lines += [
            "\n**memory** (MiB)\n",
            "| server | RSS at start | RSS before the idle WebSockets | RSS with them"
            " | growth | KiB per WebSocket |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in results["memory"].items():
            growth = m["rss_held_mb"] - m["rss_before_mb"]
            lines.append(
                f"| {name} | {m['rss_started_mb']:.1f} | {m['rss_before_mb']:.1f}"
                f" | {m['rss_held_mb']:.1f} ({m['websockets']:,}) | {growth:+.1f}"
                f" | {growth * 1024 / m['websockets']:.1f} |"
            )
    lines.append(
        "\nclient check: "
        + ("; ".join(notes) if notes else "no row had the client busier than 90 % of its core")
    )
    return "\n".join(lines)


def main() -> int:
    """Parse arguments; run the client mode, or set up, run, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", nargs="*", help=f"subset of {[s.name for s in SERVERS]}")
    parser.add_argument("--sizes", nargs="*", help=f"subset of {list(SIZES)}")
    parser.add_argument("--idle-websockets", type=int, default=10_000, help="0: no memory phase")
    parser.add_argument("--install", action="store_true", help="reinstall .venv-bench")
    # the client mode (started by the runner)
    parser.add_argument("--client", choices=["echo", "idle"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=PORT, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="32B-text", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    try:
        ensure_venv(args.install)
        compile_checkout()
        if subprocess.run([str(BIN / "python"), "-c", "import wsproto"]).returncode:
            pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "wsproto"]
            subprocess.run(pip, check=True)
        raise_fd_limit(args.idle_websockets * 2 + 1024)
        started = datetime.datetime.now(datetime.UTC)
        found = versions()
        code = (
            "import importlib.metadata as m; print(m.version('websockets'), m.version('wsproto'))"
        )
        out = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True)
        found["websockets"], found["wsproto"] = [*out.stdout.split(), "?", "?"][:2]
        found.pop("wrk", None)
        results = run(args)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    report = table(results)
    command = "python3 benchmarks/ws_echo.py " + " ".join(sys.argv[1:])
    header = (
        f"{command.strip()}  ({started:%Y-%m-%d %H:%M} UTC, "
        f"{'pinned: servers CPU 0, client CPU 1' if results['pinned'] else 'unpinned'}, "
        f"{args.connections} connections, {args.duration:g} s per run, {args.rounds} rounds)\n"
        + ", ".join(f"{k} {v}" for k, v in found.items())
    )
    print("\n" + header + "\n" + report)
    ARTIFACTS.mkdir(exist_ok=True)
    out_path = ARTIFACTS / f"ws-echo-{started:%Y%m%dT%H%M%S}"
    out_path.with_suffix(".md").write_text(header + "\n" + report + "\n")
    raw = {**results, "versions": found, "command": command}
    out_path.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"\nsaved {out_path}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
