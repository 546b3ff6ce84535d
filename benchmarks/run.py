#!/usr/bin/env python3
"""The side-by-side benchmark suite: Nessen against uvicorn, Starlette, FastAPI and granian.

    python3 benchmarks/run.py                 # everything: ~30 minutes on 2 cores
    python3 benchmarks/run.py --rounds 1 --duration 3 --skip-memory   # a quick look

What it does, in order:

1. Installs what it needs: ``wrk`` from Debian (``apt-get``) when missing, and a separate
   virtualenv ``.venv-bench`` holding this checkout of Nessen plus uvicorn (httptools,
   uvloop), Starlette, FastAPI, granian and the libraries of the ``starlette-stack`` row
   (:data:`BENCH_PACKAGES`), so the project's own ``.venv`` stays as tested; packages
   added to the list later are installed into an existing ``.venv-bench``.
2. Starts each server in turn pinned to CPU 0 (``taskset -c 0``) and drives it with
   ``wrk -t1 -c64 -d8s --latency`` pinned to CPU 1, for each endpoint of
   :mod:`benchmarks.apps`; servers are interleaved across rounds (round 1: every server,
   round 2: every server...), so a slow minute of the machine hits all rows alike. Any
   non-2xx answer or socket error fails the run.
3. Memory (Nessen rows and uvicorn): idle RSS; RSS holding 10 000 idle keep-alive
   connections; RSS before and after 1 000 000 requests (leak check).
4. Prints a Markdown table of median req/s, p50 and p99 latency (ms), spread
   ((max - min) / median over rounds), server CPU microseconds per request (user + system
   time of the server's processes over the run / requests: steadier than req/s on a shared
   machine), RSS, and the ratio of each row to uvicorn's raw ASGI app on the same endpoint
   in the same run. Then issue 17's goals (:data:`GOALS`), each with its measured ratio
   and met / not met ("not run" when a row it needs was left out). The report goes to
   ``artifacts/bench-<time>.md``, raw figures to ``artifacts/bench-<time>.json``; the exit
   status is 1 when a row could not be measured.

The servers listen on port 3301 (``BENCH_PORT`` to change; a run whose port is taken
stops rather than measure another process). On a machine with fewer than 2 CPUs it says so
and runs unpinned. Needs Linux (/proc,
taskset) and root or passwordless apt-get only if wrk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench"
BIN = VENV / "bin"
ARTIFACTS = ROOT / "artifacts"
PORT = int(os.environ.get("BENCH_PORT", "3301"))
"""The servers' port; BENCH_PORT moves it, so that two runs on one machine stay apart."""
BENCH_PACKAGES = [
    "uvicorn",
    "httptools",
    "uvloop",
    "starlette",
    "fastapi",
    "granian",
    "orjson",
    # starlette-stack (benchmarks/apps/starlette_stack.py)
    "asgi-correlation-id",
    "python-json-logger",
    "secure",
    "slowapi",
    "starlette-exporter",
]
"""What ``.venv-bench`` holds besides this checkout: distribution names, unpinned
(:func:`versions` records what was installed); a name missing from an existing
``.venv-bench`` is installed at the next run."""
REPORTED = ["nessen-runtime", *BENCH_PACKAGES, "prometheus-client", "limits"]
"""Distributions whose versions the report names (limits: slowapi's storage)."""
BASELINE = "uvicorn-raw"
POST_BODY_BYTES = 4096


@dataclass(frozen=True)
class ServerSpec:
    """How to start one row's server; ``{port}`` in ``argv`` is replaced."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False  # stderr to /dev/null (the Nessen access log: a line per request)
    memory: bool = False  # take part in the memory phase
    idle_env: dict[str, str] = field(default_factory=dict)  # extra env for 10k idle conns


NESSEN_ENV = {
    "HOST": "127.0.0.1",
    "PORT": "{port}",
    "RATE_LIMIT_MAX": "1000000000",  # every request pays for a bucket update, none refused
    "SHUTDOWN_DELAY": "0",
}
NESSEN_IDLE = {"MAX_CONNECTIONS": "20000", "IDLE_TIMEOUT": "120000"}
UVICORN = (
    "uvicorn",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--timeout-keep-alive",
    "120",
)
"""uvicorn as shipped: its access log is on (to stdout, which the runner sends to /dev/null);
the ``-nolog`` row turns it off."""

SERVERS = [
    ServerSpec(
        "nessen-bare",
        ("nessen", "serve", "benchmarks.apps.nessen_app:bare"),
        NESSEN_ENV,
        memory=True,
        idle_env=NESSEN_IDLE,
    ),
    ServerSpec(
        "nessen-full",
        ("nessen", "serve", "benchmarks.apps.nessen_app:full"),
        NESSEN_ENV,
        quiet=True,
        memory=True,
        idle_env=NESSEN_IDLE,
    ),
    ServerSpec(
        "nessen-full-console",
        ("nessen", "serve", "benchmarks.apps.nessen_app:full"),
        {**NESSEN_ENV, "LOG_FORMAT": "console"},
        quiet=True,  # nessen-full (JSON lines, production's default) with console lines
    ),
    ServerSpec("uvicorn-raw", (*UVICORN, "benchmarks.apps.asgi_raw:app"), quiet=True, memory=True),
    ServerSpec(
        "uvicorn-raw-nolog",
        (*UVICORN, "--no-access-log", "benchmarks.apps.asgi_raw:app"),
    ),
    ServerSpec(
        "nessen-asgi-raw",
        ("nessen", "serve", "benchmarks.apps.asgi_raw:app"),
        NESSEN_ENV,
        quiet=True,  # as shipped: its access log on
    ),
    ServerSpec(
        "nessen-asgi-raw-nolog",
        ("nessen", "serve", "--no-access-log", "benchmarks.apps.asgi_raw:app"),
        NESSEN_ENV,
    ),
    ServerSpec("starlette", (*UVICORN, "benchmarks.apps.starlette_app:app"), quiet=True),
    ServerSpec(
        "starlette-stack",
        (*UVICORN, "--no-access-log", "benchmarks.apps.starlette_stack:app"),
        quiet=True,  # its own JSON access log replaces uvicorn's, a line per request on stderr
    ),
    ServerSpec("fastapi", (*UVICORN, "benchmarks.apps.fastapi_app:app"), quiet=True),
    ServerSpec(
        "fastapi-nessen",
        ("nessen", "serve", "benchmarks.apps.fastapi_app:app"),
        NESSEN_ENV,
        quiet=True,  # as shipped: its access log on, like uvicorn's
    ),
    ServerSpec(
        "granian-rsgi",
        (
            "granian",
            "--interface",
            "rsgi",
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
            "benchmarks.apps.granian_rsgi:app",
        ),
    ),
]


@dataclass(frozen=True)
class Endpoint:
    """One wrk target."""

    name: str
    path: str
    headers: tuple[str, ...] = ()
    post: bool = False


ENDPOINTS = [
    Endpoint("health", "/health"),
    Endpoint("api-data", "/api/data"),
    Endpoint("users-id", "/users/42"),
    Endpoint("json16k-gzip", "/json16k", ("Accept-Encoding: gzip",)),
    Endpoint("post-echo-4k", "/echo", ("Content-Type: application/octet-stream",), post=True),
]


@dataclass
class Sample:
    """One wrk run's figures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us: float
    rss_mb: float


# ---------------------------------------------------------------------------------------
# the goals of issue 17, checked against each run

GoalRow = tuple[str, ...]


@dataclass(frozen=True)
class RatioGoal:
    """``ours`` at least ``at_least`` times as fast as ``other`` on each of ``endpoints``.

    "x as fast" is ``other``'s median server CPU µs per request over ``ours`` (steadier
    than req/s on a shared machine), from the same run; the req/s ratio is shown beside it
    and the verdict is the CPU one.
    """

    number: str
    ours: str
    other: str
    at_least: float
    endpoints: tuple[str, ...]

    columns: ClassVar[tuple[str, ...]] = (
        "goal",
        "comparison",
        "endpoint",
        "x by CPU",
        "CPU µs/req (ours vs other)",
        "x by req/s",
        "met?",
    )

    def rows(self, results: dict[str, Any]) -> list[GoalRow]:
        """One row per endpoint: measured ratios and verdict, or "not run"."""
        samples: dict[str, dict[str, list[Sample]]] = results["samples"]
        rows: list[GoalRow] = []
        for endpoint in self.endpoints:
            label = (self.number, f"{self.ours} ≥ {self.at_least:g}x {self.other}", endpoint)
            mine = samples.get(self.ours, {}).get(endpoint)
            theirs = samples.get(self.other, {}).get(endpoint)
            if not mine or not theirs:
                rows.append((*label, "-", "-", "-", "not run"))
                continue
            cpu_mine = statistics.median(s.cpu_us for s in mine)
            cpu_theirs = statistics.median(s.cpu_us for s in theirs)
            by_cpu = cpu_theirs / cpu_mine
            by_rps = statistics.median(s.rps for s in mine) / statistics.median(
                s.rps for s in theirs
            )
            rows.append(
                (
                    *label,
                    f"{by_cpu:.2f}",
                    f"{cpu_mine:.1f} vs {cpu_theirs:.1f}",
                    f"{by_rps:.2f}",
                    "met" if by_cpu >= self.at_least else "not met",
                )
            )
        return rows


@dataclass(frozen=True)
class MemoryGoal:
    """A memory figure of each of ``servers`` (from the memory phase) within ``limit_mb``.

    ``scale`` is (memory field, least value, what it counts): a run with fewer idle
    connections or requests than the goal names is "not comparable" rather than met.
    """

    number: str
    what: str
    measure: Callable[[dict[str, float]], float]
    limit_mb: float
    below: bool = False  # the figure must be < limit_mb (else <=)
    scale: tuple[str, int, str] | None = None
    servers: tuple[str, ...] = ("nessen-bare", "nessen-full")

    columns: ClassVar[tuple[str, ...]] = ("goal", "figure", "server", "MiB", "target", "met?")

    def rows(self, results: dict[str, Any]) -> list[GoalRow]:
        """One row per server: the figure and verdict, or "not run"."""
        target = f"{'<' if self.below else '≤'} {self.limit_mb:g} MiB"
        rows: list[GoalRow] = []
        for server in self.servers:
            figures = results["memory"].get(server)
            if figures is None:
                rows.append((self.number, self.what, server, "-", target, "not run"))
                continue
            value = self.measure(figures)
            within = value < self.limit_mb if self.below else value <= self.limit_mb
            verdict = "met" if within else "not met"
            if self.scale is not None and figures[self.scale[0]] < self.scale[1]:
                verdict = f"not comparable ({figures[self.scale[0]]:,.0f} {self.scale[2]})"
            rows.append((self.number, self.what, server, f"{value:.1f}", target, verdict))
        return rows


_ALL = tuple(e.name for e in ENDPOINTS)
_HEALTH_AND_DATA = ("health", "api-data")
GOALS: tuple[RatioGoal | MemoryGoal, ...] = (
    RatioGoal("1", "nessen-bare", "granian-rsgi", 1.0, _HEALTH_AND_DATA),
    RatioGoal("2", "nessen-full", "nessen-bare", 0.7, _HEALTH_AND_DATA),
    RatioGoal("2", "nessen-full-console", "nessen-bare", 0.7, _HEALTH_AND_DATA),
    RatioGoal("3", "nessen-full", "starlette-stack", 3.0, _ALL),
    RatioGoal("4", "nessen-asgi-raw", "uvicorn-raw-nolog", 1.2, _ALL),
    RatioGoal("4", "fastapi-nessen", "fastapi", 1.15, _ALL),
    MemoryGoal("5", "idle RSS", lambda m: m["idle_rss_mb"], 30.0),
    MemoryGoal(
        "5",
        "RSS, 10 000 idle keep-alive connections",
        lambda m: m["rss_with_idle_connections_mb"],
        60.0,
        scale=("idle_connections", 10_000, "connections"),
    ),
    MemoryGoal(
        "5",
        "RSS growth over 1 000 000 requests",
        lambda m: m["rss_after_mb"] - m["rss_before_mb"],
        1.0,
        below=True,
        scale=("requests", 1_000_000, "requests"),
    ),
)
"""Issue 17's goals 1-5 (6, WebSockets, is ``benchmarks/ws_echo.py``'s), in its order."""


def goal_tables(results: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The goals as Markdown (one table per kind of goal) and as records for the JSON."""
    lines = ["\n**issue 17 goals** (x = other's CPU µs/req / ours; the verdict is by CPU)"]
    records: list[dict[str, str]] = []
    shown: type | None = None
    for goal in GOALS:
        if type(goal) is not shown:
            shown = type(goal)
            lines += [
                "",
                "| " + " | ".join(goal.columns) + " |",
                "|" + "---|" * len(goal.columns),
            ]
        for row in goal.rows(results):
            lines.append("| " + " | ".join(row) + " |")
            records.append(dict(zip(goal.columns, row, strict=True)))
    return "\n".join(lines), records


class BenchError(Exception):
    """The run cannot be trusted: a server did not start, or answered non-2xx."""


# ---------------------------------------------------------------------------------------
# set-up


def ensure_wrk() -> str:
    """Path of wrk, installing Debian's package when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed and apt-get could not install it")
    return found


def ensure_venv(install: bool) -> None:
    """Create ``.venv-bench`` with Nessen (this checkout) and :data:`BENCH_PACKAGES`.

    An existing one is completed: packages added to :data:`BENCH_PACKAGES` since it was
    made are installed. ``install`` reinstalls (and upgrades) everything.
    """
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet"]
    if (BIN / "python").exists() and not install:
        installed = _installed()
        missing = [n for n in ("nessen-runtime", *BENCH_PACKAGES) if installed[n] is None]
        if missing:
            print(f"installing into {VENV}: {' '.join(missing)} ...", flush=True)
            wanted = [name for name in missing if name != "nessen-runtime"]
            editable = ["-e", str(ROOT)] if "nessen-runtime" in missing else []
            subprocess.run([*pip, *editable, *wanted], check=True)
        return
    print(f"preparing {VENV} ...", flush=True)
    if not (BIN / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", str(ROOT), *BENCH_PACKAGES], check=True)


def compile_checkout() -> None:
    """Write the byte code of this checkout's sources (``src/``, ``benchmarks/apps/``).

    pip compiles what it installs from a wheel, so the other servers' code is read from
    ``.pyc`` files; this checkout is installed editable and, under
    ``PYTHONDONTWRITEBYTECODE=1``, would be compiled from source at every start, which
    costs a server ~1.5 MiB more RSS (the code objects and the compiler's garbage) than it
    has when deployed from a wheel.
    """
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "compileall",
            "-q",
            str(ROOT / "src"),
            str(ROOT / "benchmarks" / "apps"),
        ],
        check=True,
    )


def _installed() -> dict[str, str | None]:
    """Version of each :data:`REPORTED` distribution in ``.venv-bench`` (``None``: missing)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        found[name] = None\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run(
        [str(BIN / "python"), "-c", code, *REPORTED], capture_output=True, text=True, check=True
    )
    installed: dict[str, str | None] = json.loads(out.stdout)
    return installed


def versions() -> dict[str, str]:
    """Versions of Python and every package that shapes the figures."""
    out = subprocess.run(
        [str(BIN / "python"), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    )
    found = {"python": out.stdout.strip() or "?"}
    found.update({name: version or "missing" for name, version in _installed().items()})
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    found["wrk"] = (wrk.stdout + wrk.stderr).split()[1] if wrk.stdout + wrk.stderr else "?"
    found["kernel"] = platform.release()
    found["cpu"] = _cpu_model()
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE for this process and the servers it starts; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        target = min(target, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------
# processes


def _children(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants."""
    ticks = 0
    for member in _children(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` and its descendants, in MiB."""
    total = 0
    for member in _children(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total / 1024


class Running:
    """A started server: its process, port and log file."""

    def __init__(self, spec: ServerSpec, pinned: bool, extra_env: dict[str, str]) -> None:
        self.spec = spec
        if not _wait_port_free():  # else wrk would measure whatever holds the port
            raise BenchError(f"port {PORT} is in use by another process (BENCH_PORT=...)")
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",  # this checkout, whatever is installed
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for key, value in {**spec.env, **extra_env}.items():
            env[key] = value.replace("{port}", str(PORT))
        argv = [part.replace("{port}", str(PORT)) for part in spec.argv]
        argv[0] = str(BIN / argv[0])
        if pinned:
            argv = ["taskset", "-c", "0", *argv]
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"bench-{spec.name}.log"
        stderr = subprocess.DEVNULL if spec.quiet else self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=stderr, stderr=stderr, start_new_session=True
        )
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/health`` until 200; raises :class:`BenchError` on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.spec.name} exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"{self.spec.name} did not answer /health within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        _wait_port_free()


def _wait_port_free(timeout: float = 10.0) -> bool:
    """Wait until the port can be bound; whether it could before ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", PORT))
                return True
            except OSError:
                time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------
# wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    endpoint: Endpoint,
    seconds: float,
    connections: int,
    pinned: bool,
    post_script: Path,
    latency: bool = True,
) -> tuple[float, float, float, int]:
    """Run wrk; returns (req/s, p50 ms, p99 ms, requests). Any non-2xx or error raises."""
    # --timeout: a slow reply is measured (its latency shows in p99), not counted as an
    # error; wrk's default of 2 s cut starlette-stack's slowest /json16k replies.
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    if latency:
        argv.append("--latency")
    for header in endpoint.headers:
        argv += ["-H", header]
    if endpoint.post:
        argv += ["-s", str(post_script)]
    argv.append(f"http://127.0.0.1:{PORT}{endpoint.path}")
    if pinned:
        argv = ["taskset", "-c", "1", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        seen = "; ".join(
            line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket" in line
        )
        raise BenchError(f"wrk saw errors on {endpoint.path}: {seen}\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = p99 = float("nan")
    if latency:
        p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, requests


def post_script(directory: Path) -> Path:
    """A wrk Lua script POSTing ``POST_BODY_BYTES`` bytes."""
    path = directory / "post.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {POST_BODY_BYTES})\n')
    return path


# ---------------------------------------------------------------------------------------
# memory


async def _hold_connections(count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` keep-alive connections, one request each, left open and idle."""
    request = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(200)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise BenchError(f"idle connection got {head[:40]!r}")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return writers


def idle_connections_rss(running: Running, count: int) -> float:
    """RSS (MiB) of the server while ``count`` idle keep-alive connections are open."""

    async def measure() -> float:
        writers = await _hold_connections(count)
        await asyncio.sleep(1.0)  # let the server settle (not an event to wait for: a pause)
        alive = sum(1 for w in writers if not w.transport.is_closing())
        if alive != count:
            raise BenchError(f"only {alive} of {count} idle connections stayed open")
        value = rss_mb(running.pid)
        for writer in writers:
            writer.close()
        return value

    return asyncio.run(measure())


def leak_check(
    running: Running, total: int, pinned: bool, script: Path
) -> tuple[float, float, int]:
    """(RSS MiB before, after, requests) around ``total`` requests to /api/data and /users."""
    warm = Endpoint("api-data", "/api/data")
    wrk(warm, 3, 64, pinned, script, latency=False)
    before = rss_mb(running.pid)
    done = 0
    targets = [warm, Endpoint("users-id", "/users/7")]
    turn = 0
    while done < total:
        done += wrk(targets[turn % 2], 10, 64, pinned, script, latency=False)[3]
        turn += 1
    return before, rss_mb(running.pid), done


# ---------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round, server and endpoint; then memory. Returns the raw results."""
    cpus = len(os.sched_getaffinity(0))
    pinned = cpus >= 2
    if not pinned:
        print(f"only {cpus} CPU available: running unpinned (figures are less comparable)")
    servers = [s for s in SERVERS if not args.servers or s.name in args.servers]
    endpoints = [e for e in ENDPOINTS if not args.endpoints or e.name in args.endpoints]
    samples: dict[str, dict[str, list[Sample]]] = {s.name: {} for s in servers}
    failed: dict[str, str] = {}
    idle: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="nessen-bench-"))
    script = post_script(workdir)
    for round_number in range(1, args.rounds + 1):
        for spec in servers:
            if spec.name in failed:
                continue
            print(f"round {round_number}/{args.rounds}: {spec.name}", flush=True)
            running = Running(spec, pinned, {})
            try:
                running.wait_ready()
                idle.setdefault(spec.name, rss_mb(running.pid))
                wrk(ENDPOINTS[0], 1, args.connections, pinned, script, latency=False)  # warm
                for endpoint in endpoints:
                    cpu_before = cpu_seconds(running.pid)
                    rps, p50, p99, requests = wrk(
                        endpoint, args.duration, args.connections, pinned, script
                    )
                    cpu = cpu_seconds(running.pid) - cpu_before
                    sample = Sample(
                        rps, p50, p99, requests, cpu / requests * 1e6, rss_mb(running.pid)
                    )
                    samples[spec.name].setdefault(endpoint.name, []).append(sample)
                    print(
                        f"  {endpoint.name:14s} {rps:9.0f} req/s  p50 {p50:6.2f} ms  "
                        f"p99 {p99:6.2f} ms  cpu {sample.cpu_us:6.1f} us/req",
                        flush=True,
                    )
            except (BenchError, subprocess.CalledProcessError) as error:
                failed[spec.name] = str(error).splitlines()[0]
                print(f"  {spec.name} failed: {failed[spec.name]} (log: {running.log_path})")
                if spec.name.startswith("nessen-") or spec.name == BASELINE:
                    running.stop()
                    raise
            finally:
                running.stop()
    memory: dict[str, dict[str, float]] = {}
    if not args.skip_memory:
        for spec in servers:
            if not spec.memory or spec.name in failed:
                continue
            print(f"memory: {spec.name}", flush=True)
            running = Running(spec, pinned, spec.idle_env)
            try:
                running.wait_ready()
                started = rss_mb(running.pid)
                held = idle_connections_rss(running, args.idle_connections)
                before, after, done = leak_check(running, args.requests, pinned, script)
                memory[spec.name] = {
                    "idle_rss_mb": started,
                    "idle_connections": args.idle_connections,
                    "rss_with_idle_connections_mb": held,
                    "rss_before_mb": before,
                    "rss_after_mb": after,
                    "requests": done,
                }
                print(f"  {memory[spec.name]}", flush=True)
            finally:
                running.stop()
    return {
        "samples": samples,
        "failed": failed,
        "idle_rss_mb": idle,
        "memory": memory,
        "pinned": pinned,
    }


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown report: one table per endpoint, then memory."""
    samples: dict[str, dict[str, list[Sample]]] = results["samples"]
    lines = []
    endpoints = [e.name for e in ENDPOINTS if any(e.name in rows for rows in samples.values())]
    for endpoint in endpoints:
        base = samples.get(BASELINE, {}).get(endpoint)
        base_rps = statistics.median(s.rps for s in base) if base else None
        lines += [
            f"\n**{endpoint}**\n",
            "| server | req/s (median) | p50 ms | p99 ms | spread | CPU µs/req | RSS MiB"
            f" | x {BASELINE} |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in samples.items():
            runs = rows.get(endpoint)
            if not runs:
                continue
            rps = [s.rps for s in runs]
            median = statistics.median(rps)
            spread = (max(rps) - min(rps)) / median * 100 if median else 0.0
            ratio = f"{median / base_rps:.2f}" if base_rps else "-"
            lines.append(
                f"| {name} | {median:,.0f} | {statistics.median(s.p50_ms for s in runs):.2f}"
                f" | {statistics.median(s.p99_ms for s in runs):.2f} | {spread:.0f}%"
                f" | {statistics.median(s.cpu_us for s in runs):.1f}"
                f" | {max(s.rss_mb for s in runs):.1f} | {ratio} |"
            )
    if results["memory"]:
        lines += [
            "\n**memory** (MiB)\n",
            "| server | idle RSS | RSS, idle keep-alive connections | RSS before"
            " | RSS after | requests between | growth |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in results["memory"].items():
            lines.append(
                f"| {name} | {m['idle_rss_mb']:.1f} | {m['rss_with_idle_connections_mb']:.1f}"
                f" ({m['idle_connections']:,}) | {m['rss_before_mb']:.1f}"
                f" | {m['rss_after_mb']:.1f} | {m['requests']:,}"
                f" | {m['rss_after_mb'] - m['rss_before_mb']:+.1f} |"
            )
    for name, reason in results["failed"].items():
        lines.append(f"\n{name}: not measured ({reason})")
    return "\n".join(lines)


def main() -> int:
    """Parse arguments, set up, run, print and save; exit 1 when the run cannot be trusted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", nargs="*", help=f"subset of {[s.name for s in SERVERS]}")
    parser.add_argument("--endpoints", nargs="*", help=f"subset of {[e.name for e in ENDPOINTS]}")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000_000, help="for the leak check")
    parser.add_argument("--install", action="store_true", help="reinstall .venv-bench")
    args = parser.parse_args()
    try:
        ensure_wrk()
        ensure_venv(args.install)
        compile_checkout()
        raise_fd_limit(args.idle_connections * 2 + 1024)
        started = datetime.datetime.now(datetime.UTC)
        found = versions()
        results = run(args)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    goals, goal_records = goal_tables(results)
    report = table(results, args) + "\n" + goals
    command = "python3 benchmarks/run.py " + " ".join(sys.argv[1:])
    header = (
        f"{command.strip()}  ({started:%Y-%m-%d %H:%M} UTC, "
        f"{'pinned: servers CPU 0, wrk CPU 1' if results['pinned'] else 'unpinned'}, "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds)\n"
        + ", ".join(f"{k} {v}" for k, v in found.items())
    )
    print("\n" + header + "\n" + report)
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"bench-{started:%Y%m%dT%H%M%S}"
    out.with_suffix(".md").write_text(header + "\n" + report + "\n")
    raw = {
        **results,
        "samples": {
            name: {ep: [s.__dict__ for s in runs] for ep, runs in rows.items()}
            for name, rows in results["samples"].items()
        },
        "versions": found,
        "command": command,
        "goals": goal_records,
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"\nsaved {out}.md and .json")
    if results["failed"]:
        print(f"benchmark failed: {', '.join(results['failed'])} not measured", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
