"""Request ids: reuse a well-formed incoming ``X-Request-ID`` or generate one; echo it.

The id is what correlates a client's report, the access log line and every other log
line written while the request is handled: it is echoed on the response and set in
:data:`nessen.observability.logs.current_request_id`, which both log formatters read.
"""

from __future__ import annotations

import re

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.http.headers import FIELD_NAME
from nessen.observability.logs import current_request_id

MAX_REQUEST_ID_CHARS = 128
"""Longest incoming request id reused; longer ones are replaced by a generated id.

128 holds every common id with room to spare (a UUID is 36 characters, a W3C
``traceparent`` 55, nginx's ``$request_id`` 32) while bounding what a client can put in
every log line of its request."""
REQUEST_ID_CHARACTERS = "A-Z a-z 0-9 - _ . :"
"""What an incoming request id may hold (letters, digits, ``-_.:``)."""
_VALID_ID = re.compile(rf"[A-Za-z0-9_.:\-]{{1,{MAX_REQUEST_ID_CHARS}}}")


def valid_request_id(value: str) -> bool:
    """Whether ``value`` may be reused as a request id: 1-128 letters, digits, ``-_.:``.

    The one check of both the request-id middleware and the ASGI host. Nothing else is
    accepted, so an id can never break a log line, a header field, a JSON or HTML
    context, or a shell pasting it (no quotes, ``<``, ``;``, ``%``, spaces or control
    characters). A repeated header field arrives joined with ``", "`` and so fails.
    """
    return _VALID_ID.fullmatch(value) is not None


def request_id_middleware(
    header: str = "X-Request-ID", *, trust_incoming: bool = True
) -> Middleware:
    """Build the request-id middleware; it belongs outermost, before the access log.

    Args:
        header: The field carrying the id, in requests and responses.
        trust_incoming: Reuse a valid incoming id (set by a proxy or the client, see
            :func:`valid_request_id`), so one id follows the request across services; an
            invalid one is replaced by a generated id, never echoed. ``False`` always
            generates.

    Raises:
        ValueError: ``header`` is not a field name.

    Returns:
        The middleware. It sets ``request.id`` (a generated id is
        :func:`nessen.http.request.new_request_id`: 48 random bits then a counter), sets
        ``current_request_id`` for the duration of the inner pipeline, and sets ``header``
        on every response it returns, replacing any value the handler set, so the echoed
        id is always the logged one. A response built by the server for an exception that
        escaped a middleware does not pass through here and carries the id only in its
        JSON body.
    """
    lower = header.lower()
    keys = (lower,)
    if not FIELD_NAME.fullmatch(header):
        raise ValueError(f"header={header!r}: must be a field name (a token, RFC 9110 §5.1)")
    set_context = current_request_id.set
    reset_context = current_request_id.reset

    async def request_id(request: Request, next: Next) -> Response:
        if trust_incoming:
            incoming = request.header(lower)
            if incoming is not None and valid_request_id(incoming):
                request._id = incoming
        rid = request.id
        token = set_context(rid)
        try:
            response = await next()
        finally:
            reset_context(token)
        if response.has_field(lower):
            response.headers[header] = rid  # replaces the handler's value
        else:  # the id is a visible-ASCII string: safe on the wire as it is
            response.add_encoded_fields(f"{header}: {rid}\r\n", keys)
        return response

    return request_id
