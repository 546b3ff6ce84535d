"""CORS: cross-origin resource sharing as the Fetch standard defines it.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
here, before the inner middleware and the router, so it is neither rate limited nor
authenticated; an allowed one gets ``204`` with the allowed methods, headers and max-age,
a refused one ``403`` with no CORS fields (the browser then blocks the real request). On
other requests an allowed ``Origin`` gets ``Access-Control-Allow-Origin`` (plus credentials
and exposed headers as configured); a refused one gets no CORS fields at all. ``*`` is
never sent together with credentials: the origin is echoed instead, and every response
whose CORS fields depend on ``Origin`` carries ``Vary: Origin`` (RFC 9110 §12.5.5), so a
shared cache never hands one origin's answer to another; a preflight answer varies on
``Origin``, ``Access-Control-Request-Method`` and ``Access-Control-Request-Headers``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

import orjson

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.middleware.fields import add_vary

SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
"""CORS-safelisted methods: always allowed by browsers, so always allowed in preflights."""
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
"""CORS-safelisted request headers (Fetch §2.2.2); allowed in preflights without listing."""
DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
"""``Vary`` of every preflight answer, 204 or 403: each of the three request fields can
change it (an origin, method or header not allowed turns the 204 into a 403, and the
request's own method and headers are echoed with ``*``), so a cache that stores preflights
(a CDN) must key on all three (RFC 9110 §12.5.5; Fetch, "CORS protocol and HTTP caches")."""


def cors_middleware(
    allow_origins: Iterable[str] = (),
    *,
    allow_methods: Iterable[str] = DEFAULT_METHODS,
    allow_headers: Iterable[str] = (),
    expose_headers: Iterable[str] = (),
    allow_credentials: bool = False,
    max_age: int = 600,
) -> Middleware:
    """Build the CORS middleware; place it outside rate limiting and authentication.

    Args:
        allow_origins: Origins allowed, as browsers send them (``"https://app.example"``,
            scheme, host and port, no path), or ``"*"`` for any. Empty allows none.
        allow_methods: Methods a preflight may ask for; ``"*"`` allows any (the requested
            one is echoed). GET, HEAD and POST are always allowed (CORS-safelisted).
        allow_headers: Request header names a preflight may ask for, case-insensitive;
            ``"*"`` allows any (the requested ones are echoed, which also covers
            ``Authorization``, which a literal ``*`` would not).
        expose_headers: Response header names scripts may read
            (``Access-Control-Expose-Headers``), e.g. ``["X-Request-ID"]``.
        allow_credentials: Send ``Access-Control-Allow-Credentials: true`` (cookies,
            HTTP authentication). With ``"*"`` origins this echoes any origin but
            ``null``: every site can then make credentialed requests, so list origins.
        max_age: Seconds a browser may cache a preflight answer (>= 0).

    Returns:
        The middleware.

    Raises:
        ValueError: An origin with a path or trailing slash, or a negative ``max_age``.
    """
    origins: set[str] = set()
    any_origin = False
    for origin in allow_origins:
        if origin == "*":
            any_origin = True
            continue
        lowered = origin.strip().lower()
        scheme, sep, rest = lowered.partition("://")
        if lowered != "null" and (not sep or not scheme or not rest or "/" in rest):
            raise ValueError(
                f"allow_origins: {origin!r} is not an origin; write scheme://host[:port] "
                "with no path or trailing slash"
            )
        origins.add(lowered)
    if max_age < 0:
        raise ValueError(f"max_age={max_age!r}: must be >= 0 seconds")
    methods = tuple(dict.fromkeys(m.strip().upper() for m in allow_methods))
    any_method = "*" in methods
    allowed_methods = frozenset(methods) | SAFELISTED_METHODS
    headers_list = tuple(dict.fromkeys(h.strip().lower() for h in allow_headers))
    any_header = "*" in headers_list
    allowed_headers = frozenset(headers_list) | SAFELISTED_HEADERS
    methods_value = ", ".join(m for m in methods if m != "*")
    headers_value = ", ".join(h for h in headers_list if h != "*")
    expose_value = ", ".join(dict.fromkeys(h.strip() for h in expose_headers))
    max_age_value = str(max_age)
    # With a wildcard and no credentials the answer is the same for every origin.
    wildcard = any_origin and not allow_credentials
    vary_origin = not wildcard

    def allowed_origin(origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for ``origin``, or ``None`` if refused."""
        if wildcard:
            return "*"
        if origin.lower() in origins:
            return origin
        if any_origin and origin != "null":
            return origin
        return None

    def refuse(reason: str) -> Response:
        body = orjson.dumps({"error": "CORS preflight refused", "reason": reason})
        response = Response(403, body, content_type="application/json")
        response.headers.add("Vary", PREFLIGHT_VARY)
        return response

    def preflight(origin: str, method: str, requested: str | None) -> Response:
        value = allowed_origin(origin)
        if value is None:
            return refuse("origin not allowed")
        if not any_method and method not in allowed_methods:
            return refuse(f"method {method} not allowed")
        names = [h.strip().lower() for h in requested.split(",")] if requested else []
        names = [name for name in names if name]
        if not any_header:
            for name in names:
                if name not in allowed_headers:
                    return refuse(f"header {name} not allowed")
        response = Response(204)
        fields = response.headers
        fields.add("Access-Control-Allow-Origin", value)
        if allow_credentials:
            fields.add("Access-Control-Allow-Credentials", "true")
        fields.add("Access-Control-Allow-Methods", method if any_method else methods_value)
        # Every name asked for is listed, safelisted ones too: Content-Type is safelisted
        # only for three media types, so a browser sending JSON asks for it and fails
        # the preflight unless the answer names it (Fetch, CORS-preflight fetch step 7).
        allow = ", ".join(names) if any_header else _union(headers_value, names)
        if allow:
            fields.add("Access-Control-Allow-Headers", allow)
        fields.add("Access-Control-Max-Age", max_age_value)
        fields.add("Vary", PREFLIGHT_VARY)
        return response

    def error_fields(raw_headers: list[tuple[bytes, bytes]]) -> str:
        """The CORS field lines for a server-made answer (413, 408, 503...) to a request.

        Those answers never pass through this middleware; without these fields a browser
        reports a CORS error instead of the real status.
        """
        origin = None
        for name, raw in raw_headers:
            if len(name) == 6 and name.lower() == b"origin":
                origin = raw.decode("latin-1").strip()
                break
        allowed = allowed_origin(origin) if origin else None
        if allowed is None:
            return "Vary: Origin\r\n" if origin and vary_origin else ""
        return error_template.replace("{origin}", allowed)

    lines = "Access-Control-Allow-Origin: {origin}\r\n"
    if allow_credentials:
        lines += "Access-Control-Allow-Credentials: true\r\n"
    if expose_value:
        lines += f"Access-Control-Expose-Headers: {expose_value}\r\n"
    if vary_origin:
        lines += "Vary: Origin\r\n"
    error_template = lines

    async def cors(request: Request, next: Next) -> Response:
        headers = request.headers
        origin = headers.get("origin")
        if origin is not None and request.method == "OPTIONS":
            method = headers.get("access-control-request-method")
            if method is not None:
                return preflight(
                    origin, method.strip(), headers.get("access-control-request-headers")
                )
        response = await next()
        fields = response.headers
        if origin is not None and "access-control-allow-origin" not in fields:
            value = allowed_origin(origin)
            if value is not None:
                fields.add("Access-Control-Allow-Origin", value)
                if allow_credentials:
                    fields.add("Access-Control-Allow-Credentials", "true")
                if expose_value:
                    fields.add("Access-Control-Expose-Headers", expose_value)
        if vary_origin:
            add_vary(fields, "Origin")
        return response

    _ERROR_FIELDS[cors] = error_fields
    return cors


ErrorFields = Callable[[list[tuple[bytes, bytes]]], str]
"""``(raw request fields) -> "Name: value\r\n" lines`` for a server-made answer."""
_ERROR_FIELDS: weakref.WeakKeyDictionary[Middleware, ErrorFields] = weakref.WeakKeyDictionary()


def cors_error_fields(middleware: Middleware) -> ErrorFields | None:
    """The CORS policy of a middleware built by :func:`cors_middleware`, else ``None``.

    The runtime gives it to the server, which adds its fields to the answers it makes on
    its own (413, 408, 431, 503...) for a request from an allowed origin: the access-control
    fields the middleware would have added, and ``Vary: Origin``.

    Returns:
        ``(raw request fields) -> field lines`` (``""`` when ``Origin`` is absent).
    """
    return _ERROR_FIELDS.get(middleware)


def _union(configured: str, requested: list[str]) -> str:
    """``configured`` (a field value) with the ``requested`` names it lacks appended."""
    if not requested:
        return configured
    listed = [name for name in configured.split(", ") if name]
    return ", ".join(dict.fromkeys([*listed, *requested]))
