"""Hold N slowloris connections against `nessen serve` and measure what a normal client sees.

Run by hand (not part of `make test`):

    .venv/bin/python benchmarks/slowloris.py --connections 1000 --headers-timeout 10

It starts `nessen serve` on a free port (pinned to CPU 0 when there are 2+ cores), opens
N connections that each send a partial header section and then one more header byte every
`--drip` seconds, and meanwhile sends `GET /health` on a fresh keep-alive connection in a
loop. It prints the /health latency percentiles, the server's RSS and open file
descriptors during the attack, and the fd count once HEADERS_TIMEOUT has passed (it should
be back at its baseline: the server cut every slow connection).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NESSEN = ROOT / ".venv" / "bin" / "nessen"


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def start_server(headers_timeout_ms: int) -> tuple[subprocess.Popen[str], int]:
    env = dict(
        os.environ,
        PORT="0",
        HOST="127.0.0.1",
        LOG_LEVEL="warning",
        HEADERS_TIMEOUT=str(headers_timeout_ms),
        MAX_CONNECTIONS="20000",
    )
    command = [str(NESSEN), "serve", "--log-level", "info"]
    if (os.cpu_count() or 1) >= 2:
        command = ["taskset", "-c", "0", *command]
    process = subprocess.Popen(
        command,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: raise_fd_limit(65536),
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"Nessen running on http://[^:]+:(\d+)", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
            return process, int(found.group(1))
    process.kill()
    raise SystemExit("server did not start")


def process_stats(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def slowloris(port: int, count: int, drip: float, stop: threading.Event) -> list[socket.socket]:
    sockets = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /?{index} HTTP/1.1\r\nHost: x\r\nX-a: ".encode())
        sockets.append(sock)

    def drip_loop() -> None:
        while not stop.wait(drip):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    threading.Thread(target=drip_loop, daemon=True).start()
    return sockets


def health_latencies(port: int, seconds: float) -> tuple[list[float], int]:
    latencies, failures = [], 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            sock.sendall(request)
            data = b""
            while not data.endswith(b"OK"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            latencies.append((time.perf_counter() - started) * 1000)
        except OSError:
            failures += 1
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        time.sleep(0.005)
    sock.close()
    return latencies, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--headers-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--drip", type=float, default=1.0, help="seconds between bytes")
    args = parser.parse_args()
    raise_fd_limit(args.connections * 2 + 100)
    process, port = start_server(int(args.headers_timeout * 1000))
    try:
        time.sleep(0.5)
        base_rss, base_fds = process_stats(process.pid)
        stop = threading.Event()
        opened = time.monotonic()
        sockets = slowloris(port, args.connections, args.drip, stop)
        time.sleep(0.5)
        attack_rss, attack_fds = process_stats(process.pid)
        window = max(1.0, args.headers_timeout - (time.monotonic() - opened) - 1.0)
        latencies, failures = health_latencies(port, window)
        peak_rss, _ = process_stats(process.pid)
        # 408s go out at HEADERS_TIMEOUT; each connection then lingers up to 2 s half-closed.
        time.sleep(max(0.0, opened + args.headers_timeout + 3.5 - time.monotonic()))
        after_rss, after_fds = process_stats(process.pid)
        closed = 0
        for sock in sockets:
            sock.settimeout(0.01)
            try:
                data = sock.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except OSError:
                pass
        stop.set()
        for sock in sockets:
            sock.close()
        quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [0.0] * 99
        mb = 1024 * 1024
        print(f"slow connections held: {args.connections}, drip every {args.drip:g} s")
        print(f"/health during the attack: {len(latencies)} requests, {failures} failed")
        print(
            f"  latency ms: p50 {quantiles[49]:.2f}  p99 {quantiles[98]:.2f}  "
            f"max {max(latencies, default=0):.2f}"
        )
        print(
            f"server RSS MB: baseline {base_rss / mb:.1f}, attack {attack_rss / mb:.1f}, "
            f"peak {peak_rss / mb:.1f}, after {after_rss / mb:.1f}"
        )
        print(f"server open fds: baseline {base_fds}, attack {attack_fds}, after {after_fds}")
        print(f"slow connections answered 408 or closed after HEADERS_TIMEOUT: {closed}")
        ok = after_fds <= base_fds + 1 and failures == 0
        print("RESULT:", "stayed available, fds back to baseline" if ok else "PROBLEM")
        return 0 if ok else 1
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    sys.exit(main())
