"""Count failed requests through a rolling restart (SIGHUP) and a kill -9 of a worker.

Run by hand (not part of `make test`):

    .venv/bin/python benchmarks/restarts.py [--workers 2] [--seconds 12]

It serves the demo app with WORKERS=N, drives it two ways at once for `--seconds` seconds,
sends SIGHUP to the supervisor at 1/4 of the run and SIGKILL to one worker at 2/3 (not with
`--no-kill`), and prints
how many requests each client sent and how many failed:

- a client opening a new connection per request (`Connection: close`), in 4 threads;
- wrk with 32 keep-alive connections (when wrk is installed): its socket errors and non-2xx
  responses.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def request(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument(
        "--no-kill", action="store_true", help="skip the kill -9: the rolling restart alone"
    )
    args = parser.parse_args()
    env = dict(os.environ, WORKERS=str(args.workers), PORT="0", HOST="127.0.0.1")
    env["LOG_LEVEL"] = "info"
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "nessen"), "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    lines: list[str] = []
    port = 0
    while not port:
        line = server.stderr.readline()
        lines.append(line)
        found = re.search(r"Nessen running on http://[^:]+:(\d+)", line)
        if found:
            port = int(found.group(1))
    threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()  # type: ignore[arg-type]
    time.sleep(1.0)

    stop = threading.Event()
    counts = {"sent": 0, "failed": 0}
    phase = ["before"]
    failed_in: dict[str, int] = {"before": 0, "rolling restart": 0, "kill -9": 0}
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            ok = request(port)
            with lock:
                counts["sent"] += 1
                counts["failed"] += not ok
                failed_in[phase[0]] += not ok

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    wrk = None
    if shutil.which("wrk"):
        wrk = subprocess.Popen(
            [
                "wrk",
                "-t2",
                "-c32",
                f"-d{int(args.seconds)}s",
                f"http://127.0.0.1:{port}/health",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
    time.sleep(args.seconds / 4)
    phase[0] = "rolling restart"
    server.send_signal(signal.SIGHUP)
    print(f"{time.strftime('%X')} SIGHUP sent to the supervisor (rolling restart)")
    time.sleep(args.seconds * 2 / 3 - args.seconds / 4)
    if not args.no_kill:
        pids = [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", "".join(lines))]
        victim = pids[-1]
        phase[0] = "kill -9"
        os.kill(victim, signal.SIGKILL)
        print(f"{time.strftime('%X')} SIGKILL sent to worker pid {victim}")
    time.sleep(args.seconds / 3)
    stop.set()
    for thread in threads:
        thread.join(15)
    print(f"new connection per request: {counts['sent']} sent, {counts['failed']} failed")
    print("  failed by phase: " + ", ".join(f"{k} {v}" for k, v in failed_in.items()))
    if wrk is not None:
        output, _ = wrk.communicate(timeout=60)
        total = re.search(r"(\d+) requests in", output)
        errors = re.search(r"Socket errors: (.*)", output)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        print(
            f"wrk keep-alive: {total.group(1) if total else '?'} requests, "
            f"socket errors: {errors.group(1) if errors else 'none'}, "
            f"non-2xx: {non2xx.group(1) if non2xx else 0}"
        )
    server.send_signal(signal.SIGTERM)
    status = server.wait(60)
    print(f"supervisor exit status after SIGTERM: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
