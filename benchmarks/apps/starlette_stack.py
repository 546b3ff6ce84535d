"""Starlette with the features of Nessen's default stack, built from the libraries its users pick.

The five endpoints are :mod:`benchmarks.apps.starlette_app`'s own functions; around them,
outermost first (each package's version as written, ``benchmarks/run.py`` reports the
installed ones):

- Prometheus metrics: ``starlette-exporter`` 0.24.0 (``PrometheusMiddleware``, its
  defaults: request counter, duration histogram and in-progress gauge, paths grouped by
  route template; ``GET /metrics`` is ``handle_metrics``), on ``prometheus-client``.
- Request id: ``asgi-correlation-id`` 5.0.1 (``CorrelationIdMiddleware``: takes a valid
  ``X-Request-ID`` or makes a uuid4, and sends it back).
- JSON access log: one record per request on the ``access`` logger through stdlib logging
  to stderr, formatted by ``python-json-logger`` 4.2.0 (``JsonFormatter``), with
  asgi-correlation-id's ``CorrelationIdFilter`` adding the request id. No library ships
  this middleware, so :class:`AccessLogMiddleware` is the small pure-ASGI one users write,
  with Nessen's access fields (method, path, route, status, duration_ms, bytes, client_ip).
  uvicorn's own access log is turned off (``--no-access-log``) because this one replaces
  it; ``benchmarks/run.py`` sends stderr to /dev/null as it does for nessen-full.
- Security headers: ``secure`` 2.0.1 (``SecureASGIMiddleware``) set to the seven fields and
  values of Nessen's ``security_headers_middleware`` (Nessen sends
  ``Strict-Transport-Security`` over HTTPS only; ``secure`` always sends it).
- CORS: Starlette's ``CORSMiddleware`` for one allowed origin (Nessen's default stack has
  CORS off; for a request without ``Origin``, as in the benchmark, it only reads headers).
- Rate limit: ``slowapi`` 0.1.10 (``SlowAPIASGIMiddleware``, in-memory ``limits`` 5.8.0
  storage, fixed window) with a limit of 1 000 000 000 a minute, so every request pays for
  its counter and none is refused, and ``X-RateLimit-*`` headers on; ``/health`` and
  ``/metrics`` are exempt, as Nessen skips its probe and metrics paths.
- Compression: Starlette's ``GZipMiddleware`` at Nessen's gzip settings (level 6,
  threshold 1024 bytes; Starlette's default level is 9). The benchmark asks only for gzip;
  ``brotli-asgi`` would add brotli but fixes its gzip fallback at level 9.

Served by uvicorn as shipped (``--loop uvloop --http httptools``) with ``--no-access-log``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from asgi_correlation_id import CorrelationIdFilter, CorrelationIdMiddleware
from benchmarks.apps import starlette_app
from pythonjsonlogger.json import JsonFormatter
from secure import (
    ContentSecurityPolicy,
    CustomHeader,
    PermissionsPolicy,
    ReferrerPolicy,
    Secure,
    StrictTransportSecurity,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware
from slowapi import Limiter
from slowapi.middleware import SlowAPIASGIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route
from starlette_exporter import PrometheusMiddleware, handle_metrics

ALLOWED_ORIGIN = "https://app.example.com"

access_logger = logging.getLogger("access")


def _configure_access_log() -> None:
    """One JSON line per record on stderr, with the request id (as the libraries' docs do)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(
        JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s")
    )
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


class AccessLogMiddleware:
    """Log one record per HTTP request when its response has been sent (or failed)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on, noting the status and content bytes sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def send_noting(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        finally:
            route = scope.get("route")
            client = scope.get("client")
            access_logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": getattr(route, "path", None),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "bytes": sent,
                    "client_ip": client[0] if client else None,
                },
            )


SECURITY_HEADERS = Secure(
    xcto=XContentTypeOptions(),
    xfo=XFrameOptions().deny(),
    hsts=StrictTransportSecurity().max_age(31536000).include_subdomains(),
    referrer=ReferrerPolicy().strict_origin_when_cross_origin(),
    permissions=PermissionsPolicy().camera().geolocation().microphone(),
    csp=ContentSecurityPolicy()
    .default_src("'self'")
    .object_src("'none'")
    .frame_ancestors("'none'"),
    custom=[CustomHeader("X-XSS-Protection", "0")],
)

limiter = Limiter(
    key_func=get_remote_address,
    default_limits=["1000000000/minute"],
    headers_enabled=True,
    storage_uri="memory://",
)
limiter.exempt(starlette_app.health)
limiter.exempt(handle_metrics)

_configure_access_log()
app = Starlette(
    routes=[
        *starlette_app.app.routes,
        Route("/metrics", handle_metrics),
    ],
    middleware=[
        Middleware(PrometheusMiddleware),
        Middleware(CorrelationIdMiddleware, header_name="X-Request-ID"),
        Middleware(AccessLogMiddleware),
        Middleware(SecureASGIMiddleware, secure=SECURITY_HEADERS),
        Middleware(
            CORSMiddleware,
            allow_origins=[ALLOWED_ORIGIN],
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        ),
        Middleware(SlowAPIASGIMiddleware),
        Middleware(GZipMiddleware, minimum_size=1024, compresslevel=6),
    ],
)
app.state.limiter = limiter
