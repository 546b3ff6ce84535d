"""Rate limiting: a token bucket per client key, bounded, with honest ``Retry-After``.

Each key (by default the client address) owns a bucket of ``limit`` tokens that refills at
``limit / window`` tokens per second. A request takes a token or gets ``429`` with
``Retry-After`` = whole seconds until the next token (RFC 9110 §10.2.3, RFC 6585 §4), not
the window length. Every response of a limited route carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the bucket is full again;
on a 429, seconds until the next token, the same value as ``Retry-After``, so a client
reading either waits the same time); a 429 also carries
``RateLimit-Policy: <limit>;w=<window seconds>``
(draft-ietf-httpapi-ratelimit-headers-07). Each response field costs the server about
1.5 us per request (``docs/BENCHMARKS.md``), so the policy, which never changes, is only
sent when the client needs it. Buckets live in a :class:`~nessen.stores.Store`;
the default :class:`~nessen.stores.MemoryStore` keeps at most ``max_keys`` of them and
evicts the least recently used one, with no timer per key;
:class:`~nessen.stores.redis.RedisStore` shares them across workers and replicas
(``docs/STORES.md``), and when it fails the limiter fails open or closed (``fail_open``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import orjson

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.middleware.client_ip import Network, client_address_resolver
from nessen.stores import MemoryStore, Store, StoreError, TakeResult

logger = logging.getLogger("nessen.middleware.rate_limit")

PROBE_PATHS = frozenset({"/health", "/ready", "/api/health", "/metrics"})
"""Health, readiness and metrics endpoints: never rate limited by default, so an
orchestrator's probes and the metrics scraper keep working under load."""

_ROUNDING = 1e-9  # float noise below this is not a whole extra second
_STORE_WARNING_INTERVAL = 10.0  # seconds between "store failed" warnings


def whole_seconds(seconds: float) -> int:
    """Round a delay up to whole seconds, as ``Retry-After`` needs (RFC 9110 §10.2.3).

    ``20.000000000000004`` (float noise) gives 20, ``0.2`` gives 1, ``0`` gives 0.
    """
    return max(0, math.ceil(seconds - _ROUNDING))


_FIELD_KEYS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def rate_limit_middleware(
    limit: int = 100,
    window: float = 60.0,
    *,
    key: Callable[[Request], str | None] | None = None,
    skip: Callable[[Request], bool] | None = None,
    skip_paths: Iterable[str] = PROBE_PATHS,
    max_keys: int = 10_000,
    store: Store | None = None,
    trusted_networks: Iterable[Network] | None = None,
    headers: bool = True,
    fail_open: bool = True,
    key_prefix: str = "rl:",
    clock: Callable[[], float] = time.monotonic,
) -> Middleware:
    """Build a token-bucket rate limiter.

    Args:
        limit: Bucket capacity: the burst a key may send at once, and the requests per
            ``window`` in the long run (``RATE_LIMIT_MAX``), >= 1.
        window: Seconds in which an empty bucket refills completely
            (``RATE_LIMIT_WINDOW``), > 0. The refill rate is ``limit / window`` tokens
            per second.
        key: ``(request) -> str | None`` naming the bucket (a user id, an API key);
            ``None`` from it lets the request through unlimited. Default: the client
            address, ``ctx.client_ip`` (forwarded by a ``TRUST_PROXY`` proxy, else the
            socket peer; see :mod:`nessen.http.forwarded`).
        skip: ``(request) -> bool``; ``True`` lets the request through unlimited and
            without RateLimit fields.
        skip_paths: Exact paths never limited; by default the probe and metrics paths.
        max_keys: Buckets kept by the default store (``RATE_LIMIT_MAX_KEYS``); the least
            recently used is evicted past it. Ignored when ``store`` is given.
        store: Where buckets live; a new :class:`~nessen.stores.MemoryStore` when
            ``None``. A shared store makes the limit hold across workers and replicas.
        trusted_networks: ``None`` (default): the default key is ``ctx.client_ip``. A
            list: proxies whose ``X-Forwarded-For`` this limiter believes instead, from
            the socket peer (see
            :func:`~nessen.middleware.client_ip.client_address_resolver`).
        headers: Add ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` to responses that
            were let through.
        fail_open: When the store raises (a shared store down or slower than its
            timeout), let requests through (``RATE_LIMIT_FAIL=open``); ``False`` answers
            ``503`` with ``Retry-After: 1`` instead (``RATE_LIMIT_FAIL=closed``). Either
            way a warning is logged at most every 10 s, not per request.
        key_prefix: Prepended to every key in the store, so stores can be shared.
        clock: Monotonic seconds; tests pass a fake clock.

    Returns:
        The middleware. A refused request gets ``429`` with the JSON body
        ``{"error": "Too Many Requests", "retry_after": N, "request_id": ...}`` and
        ``Retry-After: N``, where N is the whole seconds until a token is available.
        Failing closed, a request the store could not decide gets ``503`` with
        ``{"error": "Service Unavailable", "retry_after": 1, "request_id": ...}``.

    Raises:
        ValueError: ``limit < 1`` or ``window <= 0``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r}: must be an integer >= 1 (requests per window)")
    if not window > 0:
        raise ValueError(f"window={window!r}: must be > 0 seconds")
    buckets: Store = store if store is not None else MemoryStore(max_entries=max_keys)
    key_of = key if key is not None else client_address_resolver(trusted_networks)
    skipped = frozenset(skip_paths)
    capacity = float(limit)
    rate = limit / window
    limit_text = str(limit)
    policy = f"{limit};w={whole_seconds(window) or 1}"
    last_warning = [-math.inf]

    take = buckets.take
    # The memory store never waits: called directly, it costs no coroutine per request.
    take_now = buckets.take_now if type(buckets) is MemoryStore else None
    ceil = math.ceil

    async def rate_limit(request: Request, next: Next) -> Response:
        if request.path in skipped or (skip is not None and skip(request)):
            return await next()
        name = key_of(request)
        if name is None:
            return await next()
        now = clock()
        try:
            if take_now is not None:
                result = take_now(key_prefix + name, capacity, rate, now)
            else:
                result = await take(key_prefix + name, capacity, rate, now)
        except Exception as exc:
            if now - last_warning[0] >= _STORE_WARNING_INTERVAL:
                last_warning[0] = now
                known = isinstance(exc, StoreError)  # a store's own report: no traceback
                logger.warning(
                    "rate limit store failed; %s",
                    "letting requests through" if fail_open else "answering 503",
                    exc_info=not known,
                    extra={"error": str(exc)} if known else None,
                )
            if fail_open:
                return await next()
            return unavailable(request)
        if not result.allowed:
            return too_many(request, result)
        response = await next()
        if headers and not response.has_field("ratelimit-limit"):  # an inner limiter wins
            response.add_encoded_fields(
                f"RateLimit-Limit: {limit_text}\r\nRateLimit-Remaining: {result.remaining}\r\n"
                f"RateLimit-Reset: {max(0, ceil(result.reset_after - _ROUNDING))}\r\n",
                _FIELD_KEYS,
            )
        return response

    def unavailable(request: Request) -> Response:
        body = orjson.dumps(
            {"error": "Service Unavailable", "retry_after": 1, "request_id": request.id}
        )
        return Response(503, body, headers=[("Retry-After", "1")], content_type="application/json")

    def too_many(request: Request, result: TakeResult) -> Response:
        seconds = max(1, whole_seconds(result.retry_after))
        retry_after = str(seconds)
        body = orjson.dumps(
            {"error": "Too Many Requests", "retry_after": seconds, "request_id": request.id}
        )
        return Response(
            429,
            body,
            headers=[
                ("Retry-After", retry_after),
                ("RateLimit-Limit", limit_text),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", retry_after),  # the quota of one request: Retry-After
                ("RateLimit-Policy", policy),
            ],
            content_type="application/json",
        )

    return rate_limit
