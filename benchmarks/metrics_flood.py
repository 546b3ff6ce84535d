"""A client hammering ``/metrics``: what each scrape costs and what it does to ``/health``.

By hand, not part of ``make test``. For each checkout (e.g. the commit before a change and
this one), in interleaved rounds: ``nessen serve`` (the demo app, production defaults, the
access log to /dev/null) pinned to CPU 0; first ``/health`` probed alone, then ``wrk`` on
``/metrics`` (pinned to CPU 1, ``Accept-Encoding: gzip`` as Prometheus sends) while the same
probe runs. The probe opens a new connection for each ``GET /health``, every 100 ms, as a
kubelet does. Printed per run: ``/metrics`` req/s, the server's CPU time (utime + stime from
``/proc``) per ``/metrics`` request, and the probe's p50 / p99 / max latency idle and under
the flood; then the medians per checkout. About 80 probes per run, so p99 is nearly the max.

    python3 benchmarks/metrics_flood.py [--rounds 3] [--seconds 10] [--workers 1]
        [--accept-encoding gzip] [--path /metrics] CHECKOUT...
    e.g. git archive HEAD~1 src | tar -x -C /tmp/before
         python3 benchmarks/metrics_flood.py /tmp/before .

Every checkout runs with this checkout's ``.venv``, its own ``src/`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PYTHON = HERE / ".venv" / "bin" / "python"
TICKS = os.sysconf("SC_CLK_TCK")
PORT = 3311
PROBE_INTERVAL = 0.1


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def server_pids(root: int) -> list[int]:
    """The server and its workers (children of the supervisor)."""
    found = [root]
    for line in subprocess.run(
        ["pgrep", "-P", str(root)], capture_output=True, text=True, check=False
    ).stdout.split():
        found.append(int(line))
    return found


def probe_once(port: int) -> float:
    """Seconds for one GET /health on a new connection (its answer must be 200)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    elapsed = time.perf_counter() - started
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/health answered {data[:40]!r}")
    return elapsed


def probe(port: int, seconds: float) -> list[float]:
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(probe_once(port))
        time.sleep(PROBE_INTERVAL)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def run(
    checkout: Path, seconds: float, workers: int, encoding: str, path: str = "/metrics"
) -> dict[str, float]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(checkout / "src"),
        "HOST": "127.0.0.1",
        "PORT": str(PORT),
        "WORKERS": str(workers),
        "RATE_LIMIT_MAX": "1000000000",
    }
    with tempfile.TemporaryDirectory() as metrics_dir:
        if workers > 1:
            env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        server = subprocess.Popen(
            ["taskset", "-c", "0", str(PYTHON), "-m", "nessen", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    probe_once(PORT)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            time.sleep(1.0)  # every worker up
            idle = probe(PORT, seconds / 2)
            pids = server_pids(server.pid)
            before = cpu_seconds(pids)
            samples: list[float] = []
            prober = threading.Thread(target=lambda: samples.extend(probe(PORT, seconds)))
            prober.start()
            report = subprocess.run(
                [
                    *("taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{int(seconds)}s"),
                    *("-H", f"Accept-Encoding: {encoding}", f"http://127.0.0.1:{PORT}{path}"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            after = cpu_seconds(pids)
            prober.join()
        finally:
            server.terminate()
            server.wait(30)
    requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in report or "Socket errors" in report:
        raise RuntimeError(report)
    idle_p50, idle_p99, _ = summary(idle)
    p50, p99, worst = summary(samples)
    return {
        "metrics req/s": rate,
        "CPU us per /metrics": (after - before) / requests * 1e6,
        "idle /health p50 ms": idle_p50,
        "idle /health p99 ms": idle_p99,
        "flood /health p50 ms": p50,
        "flood /health p99 ms": p99,
        "flood /health max ms": worst,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accept-encoding", default="gzip", help="wrk's Accept-Encoding")
    parser.add_argument("--path", default="/metrics", help="what wrk floods (/health: a reference)")
    parser.add_argument("checkouts", nargs="+", type=Path)
    args = parser.parse_args()
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in args.checkouts}
    for round_number in range(1, args.rounds + 1):
        for checkout in args.checkouts:
            figures = run(
                checkout.resolve(), args.seconds, args.workers, args.accept_encoding, args.path
            )
            results[checkout].append(figures)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            print(f"round {round_number} {checkout}: {shown}", flush=True)
    for checkout, runs in results.items():
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        shown = ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
        print(f"median {checkout}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
