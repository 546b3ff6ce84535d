#!/usr/bin/env python3
"""User-space instructions per request of a real server, counted by valgrind (callgrind).

    python3 benchmarks/server_instructions.py --app benchmarks.apps.nessen_app:bare --path /health
    python3 benchmarks/server_instructions.py --checkout /tmp/before --checkout . \\
        --app benchmarks.apps.nessen_app:full --path /api/data

CPU time per request (what ``benchmarks/run.py`` reports) moves by 20-40 % between runs on
a shared 2-core machine; instruction counts do not: callgrind counts what the process
executes, whatever else the machine does. This starts ``nessen serve APP`` under callgrind
twice per checkout, with the same environment: once left idle for ``--seconds``, once
driven for as long by ``wrk -t1 -c8`` (one request in flight per connection, no
pipelining). The instructions of the idle run (start-up, timers, shutdown) are taken from
those of the loaded run, and the rest divided by the requests wrk completed. Every thread
of the server counts (the log writer's included); the kernel's work (system calls) does
not, so this measures our code and the libraries it calls, not the sockets.

Under valgrind the server runs ~50x slower, so a run of 15 s serves a few thousand
requests: enough for a figure repeatable to about 1 %. Needs valgrind and wrk (Debian
packages ``valgrind``, ``wrk``); uses ``.venv-bench`` (made by ``benchmarks/run.py``) or
``--python``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer /health within {timeout:.0f} s")


def one_run(
    python: str, checkout: Path, app: str, path: str, seconds: float, load: bool
) -> tuple[int, int]:
    """Serve ``app`` from ``checkout`` under callgrind; return (requests, instructions)."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{checkout / 'src'}:{ROOT}",
        "PYTHONHASHSEED": "0",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RATE_LIMIT_MAX": "1000000000",  # every request pays for its bucket, none refused
        "SHUTDOWN_DELAY": "0",
    }
    env.setdefault("LOG_FORMAT", "json")  # what production gets (stderr is not a terminal)
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as report:
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                f"--log-file={report.name}",
                python,
                "-m",
                "nessen",
                "serve",
                app,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(port, process)
            requests = 0
            if load:
                out = subprocess.run(
                    ["wrk", "-t1", "-c8", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if "Non-2xx" in out or "Socket errors" in out:
                    raise SystemExit(f"wrk saw errors on {path}:\n{out}")
                requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            else:
                time.sleep(seconds)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        text = Path(report.name).read_text()
    counts = [int(n) for n in re.findall(r"Collected : (\d+)", text)]
    if not counts:
        raise SystemExit(f"no callgrind total in the valgrind log:\n{text[-2000:]}")
    return requests, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="benchmarks.apps.nessen_app:bare")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--checkout", action="append", type=Path, help="a checkout of this repository (repeat)"
    )
    parser.add_argument("--python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    args = parser.parse_args()
    checkouts = [c.resolve() for c in (args.checkout or [ROOT])]
    if not Path(args.python).exists():
        sys.exit(f"{args.python} not found: run benchmarks/run.py once, or pass --python")
    print("app\tpath\tcheckout\trequests\tinstructions/request", flush=True)
    for checkout in checkouts:
        _, idle = one_run(args.python, checkout, args.app, args.path, args.seconds, load=False)
        requests, loaded = one_run(
            args.python, checkout, args.app, args.path, args.seconds, load=True
        )
        per_request = (loaded - idle) / max(requests, 1)
        print(f"{args.app}\t{args.path}\t{checkout}\t{requests}\t{per_request:,.0f}", flush=True)


if __name__ == "__main__":
    main()
