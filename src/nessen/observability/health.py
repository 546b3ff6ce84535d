"""The probe endpoints: ``/health`` (liveness), ``/ready`` (readiness), ``/api/health`` (JSON).

``/health`` answers 200 ``OK`` until the STOPPING state; it checks nothing else, so a slow
dependency never gets a live process restarted. ``/ready`` answers 200 only when the state
allows traffic and every readiness check passes. Neither looks at the Host field, so a
kubelet probe addressed to the pod IP gets the real answer.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Protocol

from nessen.app.lifecycle import Lifecycle, Readiness
from nessen.app.routing import Router
from nessen.http import Request, Response
from nessen.observability.stats import RequestStats

HEALTH_PATHS = frozenset({"/health", "/ready", "/api/health"})
"""Paths of the probe endpoints (rate limiting and access-log sampling may skip them)."""


class HealthSource(Protocol):
    """What the probe endpoints read (the Runtime provides it)."""

    stats: RequestStats
    version: str

    @property
    def lifecycle(self) -> Lifecycle:
        """The state machine."""

    @property
    def readiness(self) -> Readiness:
        """The readiness checks."""

    @property
    def ready_when_degraded(self) -> bool:
        """Whether DEGRADED still counts as ready."""

    @property
    def active_requests(self) -> int:
        """Requests in handlers now."""


def rss_bytes() -> int:
    """Resident set size of this process in bytes (peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def install_health_routes(router: Router, source: HealthSource) -> None:
    """Register ``GET /health``, ``GET /ready`` and ``GET /api/health`` on ``router``."""

    async def health(request: Request) -> Response:
        if source.lifecycle.live:
            return Response.text("OK")
        return Response.text("STOPPING", 503)

    async def ready(request: Request) -> Response:
        lifecycle = source.lifecycle
        accepting = lifecycle.accepting(source.ready_when_degraded)
        results = await source.readiness.run() if accepting else {}
        ok = accepting and all(result.ok for result in results.values())
        body = {
            "ready": ok,
            "state": str(lifecycle.state),
            "checks": {
                name: {"ok": r.ok, "duration_ms": r.duration_ms, "error": r.error}
                for name, r in results.items()
            },
        }
        if lifecycle.reason:
            body["reason"] = lifecycle.reason
        return Response.json(body, 200 if ok else 503)

    async def api_health(request: Request) -> Response:
        lifecycle = source.lifecycle
        stats = source.stats
        ok = lifecycle.accepting(source.ready_when_degraded)
        p50, p95, p99 = stats.percentiles_ms(0.5, 0.95, 0.99)
        body = {
            "ok": ok,
            "state": str(lifecycle.state),
            "uptime_ms": int(lifecycle.uptime * 1000),
            "requests": {
                "total": stats.total,
                "active": source.active_requests,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "avg_response_bytes": round(stats.average_bytes, 1),
                "rejected": dict(stats.rejected),
            },
            "memory": {"rss_bytes": rss_bytes()},
            "pid": os.getpid(),
            "version": source.version,
        }
        return Response.json(body, 200 if ok else 503)

    router.get("/health", health)
    router.get("/ready", ready)
    router.get("/api/health", api_health)
