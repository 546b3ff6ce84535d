from __future__ import annotations

import pytest

from nessen.http import Request, Response
from nessen.middleware.security_headers import DEFAULTS, security_headers_middleware
from tests.unit.middleware.helpers import make_request, responding, run


async def test_the_defaults() -> None:
    response = await run(security_headers_middleware(), make_request(scheme="https"))
    assert [(n, response.headers[n]) for n in DEFAULTS] == [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("Permissions-Policy", "camera=(), geolocation=(), microphone=()"),
        (
            "Content-Security-Policy",
            "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
        ),
        ("X-XSS-Protection", "0"),
    ]


async def test_hsts_is_never_sent_over_plain_http() -> None:
    response = await run(security_headers_middleware(), make_request(scheme="http"))
    assert "strict-transport-security" not in response.headers
    assert list(response.headers) == [
        n.lower() for n in DEFAULTS if n != "Strict-Transport-Security"
    ]

    async def handler(ctx: Request) -> Response:  # the setdefaults path
        return Response(200, headers={"X-Frame-Options": "SAMEORIGIN"})

    response = await run(security_headers_middleware(), make_request(), handler)
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-frame-options"] == "SAMEORIGIN"


async def test_each_can_be_overridden_or_disabled() -> None:
    middleware = security_headers_middleware(
        frame_options="SAMEORIGIN",
        strict_transport_security=False,
        content_security_policy="default-src 'none'",
        xss_protection=False,
        extra={"Cross-Origin-Opener-Policy": "same-origin"},
    )
    response = await run(middleware, make_request())
    headers = response.headers
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["content-security-policy"] == "default-src 'none'"
    assert "strict-transport-security" not in headers
    assert "x-xss-protection" not in headers
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-content-type-options"] == "nosniff"


async def test_a_field_the_handler_set_is_neither_replaced_nor_duplicated() -> None:
    async def handler(ctx: Request) -> Response:
        return Response.html(
            "<style>p{}</style>",
            headers=[
                ("content-security-policy", "style-src 'unsafe-inline'"),
                ("X-Frame-Options", "SAMEORIGIN"),
            ],
        )

    response = await run(security_headers_middleware(), make_request(), handler)
    assert response.headers.getall("content-security-policy") == ["style-src 'unsafe-inline'"]
    assert response.headers.getall("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers.getall("x-content-type-options") == ["nosniff"]


async def test_error_responses_get_them_too() -> None:
    async def handler(ctx: Request) -> Response:
        return Response.json({"error": "Not Found"}, 404)

    response = await run(security_headers_middleware(), make_request(), handler)
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="Referrer-Policy"):
        security_headers_middleware(referrer_policy="no-referrer\r\nX-Evil: 1")


async def test_extra_entries_replace_defaults_whatever_their_case() -> None:
    middleware = security_headers_middleware(
        extra={"x-frame-options": "SAMEORIGIN", "referrer-policy": False}  # type: ignore[dict-item]
    )
    response = await run(middleware, make_request())
    assert response.headers.getall("x-frame-options") == ["SAMEORIGIN"]
    assert "referrer-policy" not in response.headers


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"X Bad": "1"}, "field name"),
        ({"Content-Length": "5"}, "field name"),
        ({"Connection": "close"}, "field name"),
        ({"X-Snow": "\u2603"}, "latin-1"),
    ],
)
def test_fields_that_cannot_be_sent_are_refused_when_built(
    extra: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        security_headers_middleware(extra=extra)


async def test_a_handler_s_own_value_is_kept_and_the_rest_added() -> None:
    response = await run(
        security_headers_middleware(),
        make_request(),
        responding(lambda: Response.text("x", headers={"X-Frame-Options": "SAMEORIGIN"})),
    )
    assert response.headers.getall("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers["x-content-type-options"] == "nosniff"
