"""Memory a server holds for connections whose header section never ends (issue 14 item 2).

Starts ``nessen serve`` (the demo app, ``HEADERS_TIMEOUT`` of ten minutes so no deadline
ends the test), opens ``--connections`` connections that each send a request line, a Host
field and one field line of ``--size`` bytes that never ends, then reads the server's
resident memory (``VmRSS``) once it has settled, and counts the connections that got
their 431. Run it once per checkout (``--src``) and per size::

    .venv/bin/python benchmarks/open_headers.py --size 16000 --size 65536 --size 245760
    .venv/bin/python benchmarks/open_headers.py --src /tmp/before/src --size 245760

Prints, per size: connections refused (431), connections still held open, RSS growth in
MiB, and the growth per held connection in KiB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid: int, deadline: float = 20.0) -> None:
    """Return once the server's RSS has not moved for three samples 0.2 s apart."""
    end = time.monotonic() + deadline
    last, steady = rss_kib(pid), 0
    while steady < 3 and time.monotonic() < end:
        time.sleep(0.2)
        now = rss_kib(pid)
        steady = steady + 1 if now == last else 0
        last = now


def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def run(src: Path, size: int, connections: int) -> tuple[int, int, float]:
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        PORT=str(port),
        HOST="127.0.0.1",
        HEADERS_TIMEOUT="600000",
        MAX_CONNECTIONS=str(connections + 100),
        LOG_LEVEL="error",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "nessen", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socks: list[socket.socket] = []
    try:
        wait_listening(port, time.monotonic() + 20)
        before = rss_kib(server.pid)
        line = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * size
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(line)  # what the kernel takes now; the rest stays unsent
            socks.append(sock)
        settle(server.pid)  # the server has read what it will
        refused = 0
        for sock in socks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 431"):
                    refused += 1
        after = rss_kib(server.pid)
        held = connections - refused
        return refused, held, (after - before) / 1024
    finally:
        for sock in socks:
            sock.close()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--size", type=int, action="append")
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    for size in args.size or [16000, 65536, 245760]:
        refused, held, grown = run(args.src, size, args.connections)
        per = grown * 1024 / held if held else 0.0
        print(
            f"size {size:>7} B: refused {refused:>5}, held {held:>5}, "
            f"RSS +{grown:7.1f} MiB, {per:7.1f} KiB per held connection"
        )


if __name__ == "__main__":
    main()
