"""Response cache and conditional GET: stored 200s, ETags and ``304 Not Modified``.

A shared cache in the sense of RFC 9111, bounded by entries and bytes (LRU), for GET
and HEAD (HEAD is answered from GET's entry). The key is the request's origin (scheme and
host, :func:`request_origin`), the path, the query with its parameters sorted, and the
values of the request fields the response names in ``Vary`` (RFC 9111 §2, §4.1), so a
page built from one client's ``Host`` is never served to a client that named another host;
``Vary: *`` is never stored, and a request in absolute-form (``GET http://host/ HTTP/1.1``,
whose authority is not the Host field) is neither served from nor stored in the cache. It
honours ``no-store``, ``no-cache`` and ``max-age`` in the request, and ``no-store``,
``no-cache``, ``private``, ``max-age`` and ``s-maxage`` in the response (RFC 9111 §5.2);
responses with ``Set-Cookie`` and requests with ``Authorization`` are never stored (§3.5),
nor by default requests with ``Cookie``.
A 2xx/3xx answer to an unsafe method invalidates the entry for its target (§4.4).

Independently of storage, every buffered ``200`` to GET or HEAD gets a strong ``ETag``
(a hash of the content) unless it has one, and a matching ``If-None-Match`` is answered
``304`` with no content (RFC 9110 §13.1.2, §15.4.5).

Entries live in a :class:`~nessen.stores.Store`: a bounded per-process
:class:`~nessen.stores.MemoryStore` by default, or a shared
:class:`~nessen.stores.redis.RedisStore` (``CACHE_STORE=redis``, ``docs/STORES.md``), so that
a page one replica cached is a hit on every replica. A store that fails is logged at most
every 10 s and the request is served uncached.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import orjson

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.middleware.fields import cache_directives, seconds_directive, vary_names
from nessen.middleware.rate_limit import PROBE_PATHS
from nessen.stores import MemoryStore, Store, StoreError

if TYPE_CHECKING:
    import hashlib

logger = logging.getLogger("nessen.middleware.cache")

KEEP_ON_304 = frozenset(
    {"etag", "cache-control", "content-location", "date", "expires", "vary", "last-modified"}
)
"""Fields a 304 keeps from the 200 it stands for (RFC 9110 §15.4.5)."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods whose success invalidates the cached entry for their target (RFC 9111 §4.4)."""

_ENTITY_TAG = re.compile(r'(?:W/)?"[^"]*"')
_RESPONSE = b"R"  # entry: a stored response
_VARIANTS = b"V"  # entry: the Vary names under which the responses for this target live
_ABSENT = "\x01"  # a Vary field the request did not send (differs from an empty value)
_WARNING_INTERVAL = 10.0


def request_origin(request: Request) -> str:
    """The origin a request was addressed to, as the cache keys it: ``https://example.com``.

    The one place the cache reads the scheme and host: the request's resolved ones
    (``ctx.scheme`` and ``ctx.host``, through trusted proxies only, see
    :mod:`nessen.http.forwarded`). The host is lower-cased (RFC 9110 §4.2.3: host names are
    case-insensitive), without the scheme's default port (``:80``, ``:443``) or an empty
    port; ``""`` when the request names none (HTTP/1.0). Every request naming another host
    gets another key, so a page built from a forged ``Host`` can only ever be served to
    requests that forge the same one.

    Args:
        request: The request.

    Returns:
        ``scheme://host[:port]``.
    """
    scheme = request.scheme
    host = request.host.lower()
    default_port = ":443" if scheme == "https" else ":80"
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    elif host.endswith(":"):
        host = host[:-1]
    return scheme + "://" + host


def make_etag(body: bytes) -> str:
    """Return a strong entity tag for ``body``: 128 bits of BLAKE2b, quoted (RFC 9110 §8.8.3)."""
    return '"' + _blake2b()(body, digest_size=16).hexdigest() + '"'


@functools.cache
def _blake2b() -> type[hashlib.blake2b]:
    """``hashlib.blake2b``; hashlib (which sets up OpenSSL's digests) loads on first use."""
    import hashlib

    return hashlib.blake2b


def none_match(if_none_match: str, etag: str | None) -> bool:
    """Evaluate ``If-None-Match`` for a current representation (RFC 9110 §13.1.2).

    Args:
        if_none_match: The field value: ``*`` or a list of entity tags.
        etag: The representation's ``ETag``, ``None`` when it has none.

    Returns:
        ``True`` when the condition is false, i.e. the client's copy is current and a
        GET or HEAD is answered 304: ``*`` (a representation exists), or any listed tag
        equal to ``etag`` under weak comparison (``W/"a"`` matches ``"a"``).
    """
    if if_none_match.strip() == "*":
        return True
    if etag is None:
        return False
    opaque = etag[2:] if etag.startswith("W/") else etag
    for tag in _ENTITY_TAG.findall(if_none_match):
        if (tag[2:] if tag.startswith("W/") else tag) == opaque:
            return True
    return False


def not_modified(response: Response) -> Response:
    """Build the 304 that stands for ``response``: no content, the fields of §15.4.5 only."""
    kept = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() in KEEP_ON_304 or name.lower() == "x-cache" or name.lower() == "age"
    ]
    return Response(304, headers=kept)


def cache_middleware(
    ttl: float = 60.0,
    *,
    max_entries: int = 1000,
    max_bytes: int = 32 * 1024 * 1024,
    max_entry_bytes: int = 1024 * 1024,
    store: Store | None = None,
    etag: bool = True,
    skip: Callable[[Request], bool] | None = None,
    skip_paths: Iterable[str] = PROBE_PATHS,
    bypass_cookies: bool = True,
    key_prefix: str = "cache:",
    clock: Callable[[], float] | None = None,
) -> Middleware:
    """Build the response cache.

    Place it inside the rate limiter and outside compression: hits are still limited,
    and compressed bodies are stored once per Accept-Encoding value rather than
    compressed again on every hit.

    Args:
        ttl: Seconds an entry lives at most (> 0); a response's ``s-maxage`` or
            ``max-age`` can only shorten it.
        max_entries: Entries kept by the default store (LRU past it); a response with
            ``Vary`` takes one entry per variant plus one.
        max_bytes: Bytes kept by the default store, keys and serialised entries.
        max_entry_bytes: Largest serialised entry stored; bigger responses pass through.
        store: Where entries live; a new :class:`~nessen.stores.MemoryStore` with the
            bounds above when ``None`` (the bounds are then the store's business).
        etag: Add a strong ``ETag`` to buffered 200s without one, and answer a matching
            ``If-None-Match`` with 304.
        skip: ``(request) -> bool``; ``True`` bypasses the cache (no lookup, no store,
            no ``X-Cache``), e.g. for per-user routes. ETags and 304s still apply.
        skip_paths: Exact paths bypassed the same way; by default the probe and metrics
            paths, whose answers must always be current.
        bypass_cookies: Requests carrying ``Cookie`` are neither served from nor stored in
            the cache (Varnish's default): a handler that personalises by cookie without
            ``Vary: Cookie`` or ``Cache-Control: private`` would otherwise hand one user's
            page to another. ``False`` caches them, trusting the handlers' fields.
        key_prefix: Prepended to every key, so a store can be shared. A key is
            ``<key_prefix><scheme>://<host><path>?<sorted query>`` (see
            :func:`request_origin`), then a NUL and the Vary values for a variant.
        clock: Wall-clock seconds for ``Age``, and the default store's TTL clock;
            ``time.time`` and ``time.monotonic`` when ``None``.

    Returns:
        The middleware. Every GET or HEAD it handles gets ``X-Cache: HIT`` (served from
        the cache, with ``Age``) or ``X-Cache: MISS``.

    Raises:
        ValueError: ``ttl <= 0`` or a bound below 1.
    """
    if not ttl > 0:
        raise ValueError(f"ttl={ttl!r}: must be > 0 seconds")
    if store is None:
        store = MemoryStore(
            max_entries,
            max_bytes,
            max_entry_bytes=max_entry_bytes,
            **({"clock": clock} if clock is not None else {}),
        )
    entries: Store = store
    skipped = frozenset(skip_paths)
    now = clock if clock is not None else time.time
    last_warning = [-math.inf]

    def warn(action: str, exc: Exception) -> None:
        moment = time.monotonic()
        if moment - last_warning[0] >= _WARNING_INTERVAL:
            last_warning[0] = moment
            known = isinstance(exc, StoreError)  # a store's own report: no traceback
            logger.warning(
                "cache store failed to %s; serving uncached",
                action,
                exc_info=not known,
                extra={"error": str(exc)} if known else None,
            )

    def target_key(request: Request) -> str:
        query = request.query_string
        if b"&" in query:
            query = b"&".join(sorted(query.split(b"&")))
        return f"{key_prefix}{request_origin(request)}{request.path}?{query.decode('latin-1')}"

    def variant_key(base: str, names: list[str] | tuple[str, ...], request: Request) -> str:
        headers = request.headers
        values = [headers.get(name, _ABSENT) for name in names]
        return base + "\x00" + "\x00".join(values)

    async def lookup(base: str, request: Request) -> Response | None:
        raw = await entries.get(base)
        if raw is not None and raw[:1] == _VARIANTS:
            names = raw[1:].decode("latin-1").split(",")
            raw = await entries.get(variant_key(base, names, request))
        if raw is None or raw[:1] != _RESPONSE:
            return None
        meta, _, body = raw[1:].partition(b"\n")
        status, stored_at, content_type, fields, *rest = orjson.loads(meta)
        if rest and request.route is None:
            # The route that built it: the access line and the per-route metrics count
            # a hit under its route, as they counted the miss (entries stored before
            # the route was kept have none).
            request.route = rest[0]
        response = Response(status, body, headers=fields, content_type=content_type)
        response.headers.add("Age", str(max(0, int(now() - stored_at))))
        response.headers.add("X-Cache", "HIT")
        return response

    def lifetime(response: Response) -> float:
        """Seconds the response may be stored; 0 when it must not be (RFC 9111 §3)."""
        if response.status != 200 or response.stream is not None:
            return 0.0
        headers = response.headers
        if "set-cookie" in headers:
            return 0.0
        directives = cache_directives(headers.get("cache-control"))
        if "no-store" in directives or "private" in directives or "no-cache" in directives:
            return 0.0
        limit = ttl
        for name in ("s-maxage", "max-age"):
            if name in directives:
                seconds = seconds_directive(directives, name)
                if seconds is None:
                    return 0.0  # malformed: treat as stale (RFC 9111 §4.2.1)
                limit = min(limit, float(seconds))
                break
        return limit

    async def save(base: str, request: Request, response: Response, seconds: float) -> None:
        names = vary_names(response.headers)
        if names is None:  # Vary: * never matches a later request (RFC 9111 §4.1)
            return
        meta = orjson.dumps(
            [
                response.status,
                now(),
                response.content_type,
                response.headers.multi_items(),
                request.route,
            ]
        )
        entry = _RESPONSE + meta + b"\n" + response.body
        if names:
            marker = _VARIANTS + ",".join(names).encode("latin-1")
            await entries.set(base, marker, seconds)
            await entries.set(variant_key(base, names, request), entry, seconds)
        else:
            await entries.set(base, entry, seconds)

    def finish(request: Request, response: Response) -> Response:
        """Add the ETag and answer ``If-None-Match`` for a buffered 200."""
        if not etag or response.status != 200 or response.stream is not None:
            return response
        headers = response.headers
        tag = headers.get("etag")
        if tag is None:
            tag = make_etag(response.body)
            headers.add("ETag", tag)
        condition = request.headers.get("if-none-match")
        if condition is not None and none_match(condition, tag):
            return not_modified(response)
        return response

    async def cache(request: Request, next: Next) -> Response:
        method = request.method
        if method != "GET" and method != "HEAD":
            response = await next()
            if method in UNSAFE_METHODS and 200 <= response.status < 400:
                try:
                    await entries.delete(target_key(request))
                except Exception as exc:
                    warn("invalidate", exc)
            return response
        if request.path in skipped or (skip is not None and skip(request)):
            return finish(request, await next())
        headers = request.headers
        directives = cache_directives(headers.get("cache-control"))
        bypass = (
            "no-store" in directives
            or "authorization" in headers
            or (bypass_cookies and "cookie" in headers)
            or request.target[:1] != b"/"  # absolute-form: its authority is not Host's
        )
        fresh_only = (
            "no-cache" in directives
            or directives.get("max-age") == "0"
            or (not directives and "no-cache" in headers.get("pragma", "").lower())
        )
        base = target_key(request)
        if not bypass and not fresh_only:
            try:
                hit = await lookup(base, request)
            except Exception as exc:
                warn("read", exc)
                hit = None
            if hit is not None:
                return finish(request, hit)
        response = await next()
        if not bypass and method == "GET":
            seconds = lifetime(response)
            if seconds > 0:
                if etag and "etag" not in response.headers:
                    response.headers.add("ETag", make_etag(response.body))
                try:
                    await save(base, request, response, seconds)
                except Exception as exc:
                    warn("write", exc)
        response.headers.add("X-Cache", "MISS")
        return finish(request, response)

    return cache
