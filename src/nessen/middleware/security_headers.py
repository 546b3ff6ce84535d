"""Security header fields on every response, never replacing one the handler set.

Defaults are the original runtime's (its ``securityHeaders`` middleware and deployment
guide), with ``Strict-Transport-Security`` over HTTPS only (RFC 6797 §7.2; the scheme is
``ctx.scheme``, so a TLS-terminating proxy in ``TRUST_PROXY`` counts), and
``X-XSS-Protection: 0`` instead of ``1; mode=block``: current OWASP advice
(Secure Headers Project, HTTP Headers Cheat Sheet) is to disable the legacy XSS auditor,
which modern browsers removed and which, where it still exists, could be abused to
selectively block scripts on a page and leak information (XS-Leaks); protection comes
from the Content-Security-Policy instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from nessen.app.pipeline import Middleware, Next
from nessen.http import Headers, Request, Response
from nessen.http.headers import FIELD_NAME, SERVER_FIELDS

Setting = str | bool
"""A field's value: a string to send, ``True`` for the default, ``False`` to send none."""

DEFAULTS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), geolocation=(), microphone=()",
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-XSS-Protection": "0",
}
"""Field name -> default value, in the order they are added."""


def security_headers_middleware(
    *,
    content_type_options: Setting = True,
    frame_options: Setting = True,
    strict_transport_security: Setting = True,
    referrer_policy: Setting = True,
    permissions_policy: Setting = True,
    content_security_policy: Setting = True,
    xss_protection: Setting = True,
    extra: Mapping[str, str] | None = None,
) -> Middleware:
    """Build the security-headers middleware.

    Each argument sets one field: ``True`` sends the default from :data:`DEFAULTS`, a
    string sends that value, ``False`` sends nothing. A field the handler (or an inner
    middleware) already set is left as it is, so a route can loosen or tighten its own
    policy, e.g. a page with inline styles setting its own ``Content-Security-Policy``.

    Args:
        content_type_options: ``X-Content-Type-Options`` (default ``nosniff``).
        frame_options: ``X-Frame-Options`` (default ``DENY``; RFC 7034).
        strict_transport_security: ``Strict-Transport-Security`` (default one year with
            subdomains; RFC 6797), sent only when ``ctx.scheme`` is ``https``: RFC 6797
            §7.2 says a server must not send it over plain HTTP. Behind a TLS-terminating
            proxy in ``TRUST_PROXY``, its ``X-Forwarded-Proto: https`` makes it go out.
        referrer_policy: ``Referrer-Policy`` (default ``strict-origin-when-cross-origin``).
        permissions_policy: ``Permissions-Policy`` (default: no camera, geolocation,
            microphone).
        content_security_policy: ``Content-Security-Policy`` (default
            ``default-src 'self'; object-src 'none'; frame-ancestors 'none'``). It blocks
            inline ``<style>`` and ``<script>``: HTML pages that use them need their own.
        xss_protection: ``X-XSS-Protection`` (default ``0``: see the module docstring).
        extra: More fields to add the same way, e.g. ``{"Cross-Origin-Opener-Policy":
            "same-origin"}``; an entry named like a default (any case) replaces it, and
            ``False`` removes it.

    Returns:
        The middleware.

    Raises:
        ValueError: A value holds CR, LF or NUL or is not latin-1; a name is not a token
            or is a field the server owns (Content-Length, Connection, Date...).
    """
    chosen: dict[str, Setting] = {
        "X-Content-Type-Options": content_type_options,
        "X-Frame-Options": frame_options,
        "Strict-Transport-Security": strict_transport_security,
        "Referrer-Policy": referrer_policy,
        "Permissions-Policy": permissions_policy,
        "Content-Security-Policy": content_security_policy,
        "X-XSS-Protection": xss_protection,
    }
    fields = Headers()
    for name, setting in [*chosen.items(), *(extra or {}).items()]:
        if setting is False:
            fields.pop(name, None)
            continue
        value = DEFAULTS[name] if setting is True else setting
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"{name}={value!r}: must be a string without CR, LF or NUL")
        if not FIELD_NAME.fullmatch(name) or name.lower() in SERVER_FIELDS:
            raise ValueError(f"{name!r}: must be a field name the server does not own")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{name}={value!r}: must be latin-1 text (RFC 9110 §5.5)") from None
        fields[name] = value  # case-insensitive: an ``extra`` entry replaces a default

    plain = Headers()  # what goes out over plain HTTP: the same, less HSTS (RFC 6797 §7.2)
    for name, value in fields.multi_items():
        if name.lower() != "strict-transport-security":
            plain.add(name, value)
    # (fields, keys, names, block) for https, then for http: built once, picked per request.
    choices = [
        (
            chosen_fields,
            tuple(chosen_fields._keys),
            frozenset(chosen_fields._keys),
            "".join(f"{name}: {value}\r\n" for name, value in chosen_fields.multi_items()),
        )
        for chosen_fields in (fields, plain)
    ]
    secure, insecure = choices

    async def security_headers(request: Request, next: Next) -> Response:
        response = await next()
        wanted, keys, names, block = secure if request.scheme == "https" else insecure
        headers = response._headers
        if (headers is None or names.isdisjoint(headers._keys)) and names.isdisjoint(
            response._encoded_keys
        ):
            response.add_encoded_fields(block, keys)
        else:
            response.headers.setdefaults(wanted)  # keep the handler's own values
        return response

    return security_headers
