"""Who may read the operational endpoints, and on which listener (``ADMIN_ALLOW``, ``ADMIN_PORT``).

``/metrics``, ``/api/health`` and the status page describe the service from the inside
(request rates per route, latency, memory, state and its reason), so they need not be
readable from the internet. The probes ``/health`` and ``/ready`` say only alive or ready,
and an orchestrator must reach them from wherever it probes: they are never restricted.

- ``ADMIN_ALLOW`` (CIDRs): a client outside these networks gets ``403 Forbidden``, on
  whichever listener the endpoints are. 403 rather than 404: the ``Server`` field already
  names the runtime, so hiding that ``/metrics`` exists gains nothing, while a scraper
  that gets 404 after a network change looks misconfigured (a wrong path) and one that gets
  403 points its operator at the allowlist; it is what nginx's ``deny`` answers. The client
  is the one the runtime resolves (``TRUST_PROXY``), so a load balancer's address does not
  let everyone behind it in. Refusals are logged at most every 10 s (the access log has
  each one).
- ``ADMIN_PORT`` (with ``ADMIN_HOST``): the runtime serves these endpoints, and the probes,
  on a second listener, and the main port answers them ``404`` as paths it does not serve
  (an ASGI app gets them instead). Off the main port, because a separate port is only worth
  having if the public port stops exposing them; the probes stay on the main port, where
  Kubernetes, Docker's ``HEALTHCHECK`` and load balancers already look.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from nessen.http import Request, Response

logger = logging.getLogger("nessen.admin")

OpsGuard = Callable[[Request], Response | None]
"""``(request) -> refusal``: the response that refuses the request, or ``None`` to serve it."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RouteHandler = Callable[[Request], Awaitable[Any]]

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two "refused" warnings; each refusal still has its access line."""
_NO_STORE = {"Cache-Control": "no-store"}


def guarded(handler: RouteHandler, guard: OpsGuard | None) -> RouteHandler:
    """``handler``, answering ``guard``'s refusal instead when it gives one.

    Args:
        handler: A route handler.
        guard: Decides per request; ``None`` returns ``handler`` itself.

    Returns:
        The route handler to register.
    """
    if guard is None:
        return handler

    async def checked(request: Request) -> Any:
        refusal = guard(request)
        if refusal is not None:
            return refusal
        return await handler(request)

    return checked


def not_served(request: Request) -> Response:
    """The main port's answer for an endpoint moved to the admin listener: 404.

    The body is the router's own 404, and the request counts as unrouted (``route``
    ``None``, ``unmatched`` in the metrics), since this port does not serve the path.
    """
    request.route = None
    return Response.json({"error": "Not Found", "request_id": request.id}, 404)


def allowlist_guard(
    networks: Iterable[Network], client: Callable[[Request], str]
) -> OpsGuard | None:
    """Build the guard that lets only clients in ``networks`` through.

    Args:
        networks: The allowed client networks (``Config.admin_networks``).
        client: ``(request) -> address``: the client address, e.g. ``ctx.client_ip``
            (resolved through trusted proxies only).

    Returns:
        ``None`` when ``networks`` is empty (every client may read), else a guard that
        answers ``403`` (JSON with the request id, ``Cache-Control: no-store``) to a client
        outside them or whose address is unknown. An IPv4-mapped IPv6 address
        (``::ffff:10.0.0.1``) is judged as the IPv4 one.
    """
    allowed_networks = tuple(networks)
    if not allowed_networks:
        return None
    last_warning = [-math.inf]

    @functools.lru_cache(maxsize=4096)
    def allows(address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return any(parsed in network for network in allowed_networks)

    def guard(request: Request) -> Response | None:
        address = client(request)
        if allows(address):
            return None
        now = time.monotonic()
        if now - last_warning[0] >= REFUSAL_LOG_INTERVAL:
            last_warning[0] = now
            logger.warning(
                "refused %s to %s: not in ADMIN_ALLOW (further refusals are in the access "
                "log only, for %g s)",
                request.path,
                address or "an unknown client",
                REFUSAL_LOG_INTERVAL,
                extra={
                    "client_ip": address or None,
                    "path": request.path,
                    "request_id": request.id,
                    "reason": "admin_not_allowed",
                },
            )
        return Response.json(
            {"error": "Forbidden", "request_id": request.id}, 403, headers=_NO_STORE
        )

    return guard
